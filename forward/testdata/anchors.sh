#!/bin/bash
# anchors.sh BERTH [SECONDS] [RUNS]: iperf3 through berth, slirp4netns and pasta, in one run.
#
# For each MTU (1500, 65520) three namespaces are made, each served by one forwarder as its
# own process (berth attach, slirp4netns --configure, pasta --netns), and iperf3 in a
# namespace runs against a server on the host's loopback reached through the gateway
# 10.0.2.2: "ns->host" is iperf3 -c, "host->ns" is iperf3 -c -R (the host sends). The
# forwarders take turns run by run (berth, slirp4netns, pasta, berth, ...), so that a
# change in the shared machine's load between minutes falls on all three alike instead of
# on whichever ran then; the two that are not measured are stopped (SIGSTOP) meanwhile,
# so that their idle work (pasta scans /proc for ports every second) costs the measured
# one nothing. Each case runs RUNS times (default 3); the line gives the median
# receiver rate and the forwarder process's CPU use during the median run (100% = one
# core), then every run's rate. Needs root, iperf3, slirp4netns, pasta (Debian: iperf3
# slirp4netns passt). Touches only loopback and the namespaces it makes.
set -u
BERTH=${1:?usage: anchors.sh BERTH [SECONDS] [RUNS]}
T=${2:-5}
RUNS=${3:-3}
PORT=5299
NS=berth-anchors-$$
HZ=$(getconf CLK_TCK)
TOOLS="berth slirp4netns pasta"

rate() { # the receiver line's rate in Mbit/s
	awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec/) print $(i-1) }' | tail -1
}
ticks() { # utime+stime of a process and its threads, in clock ticks
	awk '{ print $14 + $15 }' /proc/"$1"/stat
}
median() { sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }

# once TOOL DIR: one iperf3 run through TOOL's namespace; prints "RATE CPU".
once() {
	local tool=$1 dir=$2 r="" t0 t1 out srv pid=${PID[$1]}
	[ "$dir" = host-ns ] && r=-R
	kill -CONT "$pid"
	iperf3 -s -1 -B 127.0.0.1 -p $PORT >/dev/null 2>&1 &
	srv=$!
	sleep 0.3
	t0=$(ticks "$pid")
	out=$(ip netns exec "$NS-$tool" iperf3 -c 10.0.2.2 -p $PORT -t "$T" -f m $r 2>&1)
	t1=$(ticks "$pid")
	wait $srv
	kill -STOP "$pid"
	echo "$(echo "$out" | rate | sed 's/^$/0/') $(((t1 - t0) * 100 / HZ / T))"
}

declare -A PID LINES
cleanup() {
	local tool
	for tool in $TOOLS; do
		[ -n "${PID[$tool]:-}" ] && kill "${PID[$tool]}" 2>/dev/null && kill -CONT "${PID[$tool]}" 2>/dev/null
		ip netns del "$NS-$tool" 2>/dev/null
	done
	PID=()
}
trap cleanup EXIT

for mtu in 1500 65520; do
	for tool in $TOOLS; do
		ip netns add "$NS-$tool"
	done
	"$BERTH" attach --netns "/run/netns/$NS-berth" --mtu $mtu --control none >/dev/null 2>&1 &
	PID[berth]=$!
	slirp4netns --configure --mtu=$((mtu > 65521 ? 65521 : mtu)) --netns-type=path "/run/netns/$NS-slirp4netns" tap0 >/dev/null 2>&1 &
	PID[slirp4netns]=$!
	pasta -q --runas 0:0 -P /tmp/$NS.pid -I pasta0 -a 10.0.2.100 -n 24 -g 10.0.2.2 -m $mtu -4 --netns "$NS-pasta" >/dev/null 2>&1
	PID[pasta]=$(cat /tmp/$NS.pid)
	rm -f /tmp/$NS.pid
	ip -n "$NS-pasta" link set pasta0 up mtu $mtu
	ip -n "$NS-pasta" addr add 10.0.2.100/24 dev pasta0 2>/dev/null
	ip -n "$NS-pasta" route add default via 10.0.2.2 2>/dev/null
	for _ in $(seq 50); do ip -n "$NS-berth" addr show berth0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
	sleep 1 # slirp4netns configures tap0 on its own
	for tool in $TOOLS; do
		kill -STOP "${PID[$tool]}"
	done
	for dir in ns-host host-ns; do
		LINES=()
		for i in $(seq "$RUNS"); do
			for tool in $TOOLS; do
				LINES[$tool]="${LINES[$tool]:-}$(once "$tool" "$dir")"$'\n'
			done
		done
		for tool in $TOOLS; do
			med=$(echo -n "${LINES[$tool]}" | median)
			printf '%-12s mtu=%-6s %-8s %6s Mbit/s  cpu %3s%%  runs: %s\n' "$tool" "$mtu" "$dir" \
				"${med% *}" "${med#* }" "$(echo -n "${LINES[$tool]}" | awk '{ printf "%s ", $1 }')"
		done
	done
	cleanup
done
