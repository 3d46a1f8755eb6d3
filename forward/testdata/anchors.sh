#!/bin/bash
# anchors.sh BERTH [SECONDS] [RUNS]: iperf3 through berth, slirp4netns and pasta, in one run.
#
# For each forwarder and MTU (1500, 65520), a namespace is served by the forwarder (berth
# attach, slirp4netns, pasta: each as its own process, attached to the same kind of
# namespace), and iperf3 in the namespace runs against a server on the host's loopback
# reached through the gateway 10.0.2.2: "ns->host" is iperf3 -c, "host->ns" is iperf3 -c
# -R (the host sends). Each case runs RUNS times (default 3); the line gives the median
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

rate() { # the receiver line's rate in Mbit/s
	awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec/) print $(i-1) }' | tail -1
}
ticks() { # utime+stime of a process and its threads, in clock ticks
	awk '{ print $14 + $15 }' /proc/"$1"/stat
}
median() { sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }

# measure TOOL MTU PID: every direction, RUNS times, with the forwarder's CPU.
measure() {
	local tool=$1 mtu=$2 pid=$3 dir r i t0 t1 out rt cpu lines srv med
	for dir in ns-host host-ns; do
		r=""
		[ $dir = host-ns ] && r=-R
		lines=""
		for i in $(seq "$RUNS"); do
			iperf3 -s -1 -B 127.0.0.1 -p $PORT >/dev/null 2>&1 &
			srv=$!
			sleep 0.3
			t0=$(ticks "$pid")
			out=$(ip netns exec $NS iperf3 -c 10.0.2.2 -p $PORT -t "$T" -f m $r 2>&1)
			t1=$(ticks "$pid")
			wait $srv
			rt=$(echo "$out" | rate)
			cpu=$(( (t1 - t0) * 100 / HZ / T ))
			lines="$lines${rt:-0} $cpu"$'\n'
		done
		med=$(echo -n "$lines" | median)
		printf '%-12s mtu=%-6s %-8s %6s Mbit/s  cpu %3s%%  runs: %s\n' "$tool" "$mtu" "$dir" \
			"${med% *}" "${med#* }" "$(echo -n "$lines" | awk '{ printf "%s ", $1 }')"
	done
}

pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	ip netns del $NS 2>/dev/null
}
trap cleanup EXIT

for mtu in 1500 65520; do
	ip netns add $NS
	"$BERTH" attach --netns /run/netns/$NS --mtu $mtu --control none >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 50); do ip -n $NS addr show berth0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
	measure berth $mtu $pid
	kill $pid; wait $pid 2>/dev/null; pid=""
	ip netns del $NS

	ip netns add $NS
	slirp4netns --configure --mtu=$((mtu > 65521 ? 65521 : mtu)) --netns-type=path /run/netns/$NS tap0 >/dev/null 2>&1 &
	pid=$!
	sleep 1
	measure slirp4netns $mtu $pid
	kill $pid; wait $pid 2>/dev/null; pid=""
	ip netns del $NS

	ip netns add $NS
	pasta -q --runas 0:0 -P /tmp/$NS.pid -I pasta0 -a 10.0.2.100 -n 24 -g 10.0.2.2 -m $mtu -4 --netns $NS >/dev/null 2>&1
	pid=$(cat /tmp/$NS.pid); rm -f /tmp/$NS.pid
	ip -n $NS link set pasta0 up mtu $mtu
	ip -n $NS addr add 10.0.2.100/24 dev pasta0 2>/dev/null
	ip -n $NS route add default via 10.0.2.2 2>/dev/null
	measure pasta $mtu $pid
	kill $pid 2>/dev/null; pid=""
	ip netns del $NS
done
