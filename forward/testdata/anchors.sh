#!/bin/sh
# anchors.sh BERTH [SECONDS]: iperf3 through berth run, slirp4netns and pasta, in one run.
#
# For each forwarder, MTU (1500, 65520) and direction, a namespace runs iperf3 against a
# server on the host's loopback reached through the gateway 10.0.2.2: "ns->host" is
# iperf3 -c, "host->ns" is iperf3 -c -R (the host sends). Prints one line per case with
# the receiver's rate. Needs root, iperf3, slirp4netns, pasta (Debian: iperf3
# slirp4netns passt). Touches only loopback and the namespaces it makes.
set -u
BERTH=${1:?usage: anchors.sh BERTH [SECONDS]}
T=${2:-5}
PORT=5299
NS=berth-anchors-$$

rate() { # the receiver line's rate in Mbit/s
	awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /bits\/sec/) print $(i-1), $i }' | tail -1
}
server() { iperf3 -s -1 -B 127.0.0.1 -p $PORT >/dev/null 2>&1 & sleep 0.3; }
client() { # client NS-EXEC-PREFIX... : runs both directions
	for dir in ns-host host-ns; do
		r=""
		[ $dir = host-ns ] && r=-R
		server
		out=$("$@" iperf3 -c 10.0.2.2 -p $PORT -t "$T" -f m $r 2>&1)
		printf '%-12s mtu=%-6s %-8s %s\n' "$tool" "$mtu" "$dir" "$(echo "$out" | rate)"
	done
}
cleanup() { ip netns del $NS 2>/dev/null; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; }
trap cleanup EXIT

for mtu in 1500 65520; do
	tool=berth
	for dir in ns-host host-ns; do
		r=""
		[ $dir = host-ns ] && r=-R
		server
		out=$("$BERTH" run --mtu $mtu --control none -- iperf3 -c 10.0.2.2 -p $PORT -t "$T" -f m $r 2>&1)
		printf '%-12s mtu=%-6s %-8s %s\n' "$tool" "$mtu" "$dir" "$(echo "$out" | rate)"
	done

	tool=slirp4netns
	ip netns add $NS
	slirp4netns --configure --mtu=$((mtu > 65521 ? 65521 : mtu)) --netns-type=path /run/netns/$NS tap0 >/dev/null 2>&1 &
	pid=$!
	sleep 1
	client ip netns exec $NS
	kill $pid; wait $pid 2>/dev/null; pid=""
	ip netns del $NS

	tool=pasta
	ip netns add $NS
	pasta -q --runas 0:0 -P /tmp/$NS.pid -I pasta0 -a 10.0.2.100 -n 24 -g 10.0.2.2 -m $mtu -4 --netns $NS >/dev/null 2>&1
	pid=$(cat /tmp/$NS.pid); rm -f /tmp/$NS.pid
	ip -n $NS link set pasta0 up mtu $mtu
	ip -n $NS addr add 10.0.2.100/24 dev pasta0
	ip -n $NS route add default via 10.0.2.2
	client ip netns exec $NS
	kill $pid 2>/dev/null; pid=""
	ip netns del $NS
done
