#!/usr/bin/env bash
# Throughput through rootlesskit with four network helpers side by side (issue 16):
# berth as slirp4netns, berth as pasta, Debian's slirp4netns and a current pasta, plus a
# rootful veth pair for scale. Runs take turns (helper by helper, run by run) so that the
# machine's drift from minute to minute spreads over all of them.
#
#   bash cmd/berth/testdata/dropin-bench.sh BERTH PASST_DIR [RUNS] [SECONDS] > results.tsv
#
# As root; needs rootlesskit, iperf3, newuidmap, python3. BERTH is a berth binary,
# PASST_DIR a built passt release (make), with pasta and pesto. The helpers run as the
# ordinary user berth-drop (made with useradd, with /etc/subuid and /etc/subgid ranges,
# as cmd/berth's rootlesskit test does), with a private /dev/net/tun of mode 0666.
# Output: one line per measurement: case, MTU, direction, run, Mbit/s (iperf3's
# receiver), helper CPU % (of one core, over the transfer).
#
# Environment: CASES="berth-slirp4netns berth-pasta slirp4netns pasta" (the default) picks
# the helpers; MTUS="1500 65520" and DIRS="c2p p2c" the cells, PORTFWD=0 skips the port
# forwarding; BASE=BINARY adds the cases base-slirp4netns and base-pasta, a second berth
# build (before a change) taking its turn in the same runs; PROFILE=DIR writes a CPU profile of berth's helper in every berth cell to
# DIR/CASE-MTU-DIR-RUN.pprof (BERTH_CPUPROFILE; go tool pprof BERTH DIR/*.pprof).
set -euo pipefail
berth=$(readlink -f "$1"); passt=$(readlink -f "$2"); runs=${3:-5}; secs=${4:-3}
user=berth-drop
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh "$user"
for f in /etc/subuid /etc/subgid; do grep -q "^$user:" "$f" 2>/dev/null || echo "$user:1000000:65536" >> "$f"; done
work=$(mktemp -d /tmp/berth-dropbench.XXXXXX); chmod 755 "$work"
mkdir "$work/b" "$work/cur" "$work/tun" "$work/out"; chmod 1777 "$work/out"
cp "$berth" "$work/b/berth"; for n in slirp4netns pasta pesto; do ln -s berth "$work/b/$n"; done
if [ -n "${BASE:-}" ]; then
	mkdir "$work/base"; cp "$(readlink -f "$BASE")" "$work/base/berth"
	for n in slirp4netns pasta pesto; do ln -s berth "$work/base/$n"; done
fi
cp "$passt"/pasta* "$passt"/pesto "$work/cur/"
veth=dbv$$
cleanup() {
	set +e
	[ -n "${srv:-}" ] && kill "$srv" 2>/dev/null
	[ -n "${srv2:-}" ] && kill "$srv2" 2>/dev/null
	ip netns delete "$veth" 2>/dev/null
	ip link delete "$veth-h" 2>/dev/null
	if [ -n "${PROFILE:-}" ]; then
		sleep 1 # the helpers write their profiles as they exit
		mkdir -p "$PROFILE" && cp "$work"/out/*.pprof "$PROFILE"/ 2>/dev/null
	fi
	rm -rf "$work"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p 5201 >/dev/null 2>&1 & srv=$!
ip netns add "$veth"
ip link add "$veth-h" type veth peer name "$veth-n" netns "$veth"
ip addr add 10.99.0.1/24 dev "$veth-h"; ip link set "$veth-h" up
ip -n "$veth" addr add 10.99.0.2/24 dev "$veth-n"; ip -n "$veth" link set "$veth-n" up; ip -n "$veth" link set lo up
iperf3 -s -B 10.99.0.1 -p 5202 >/dev/null 2>&1 & srv2=$!
sleep 0.5

declare -A net=(
	[berth-slirp4netns]="--net=slirp4netns --slirp4netns-binary=$work/b/slirp4netns --port-driver=slirp4netns"
	[berth-pasta]="--net=pasta --pasta-binary=$work/b/pasta --port-driver=pesto --pesto-binary=$work/b/pesto"
	[slirp4netns]="--net=slirp4netns --slirp4netns-binary=$(command -v slirp4netns) --port-driver=slirp4netns"
	[pasta]="--net=pasta --pasta-binary=$work/cur/pasta --port-driver=pesto --pesto-binary=$work/cur/pesto"
	[base-slirp4netns]="--net=slirp4netns --slirp4netns-binary=$work/base/slirp4netns --port-driver=slirp4netns"
	[base-pasta]="--net=pasta --pasta-binary=$work/base/pasta --port-driver=pesto --pesto-binary=$work/base/pesto"
)
cases=${CASES:-"berth-slirp4netns berth-pasta slirp4netns pasta${BASE:+ base-slirp4netns base-pasta}"}

# rootlesskit as the user, in a mount namespace whose /dev/net/tun is open to every user.
rk() {
	local prof=""
	[ -n "${PROFILE:-}" ] && [ -n "${PROF:-}" ] && prof="BERTH_CPUPROFILE=$PROF"
	env $prof unshare --mount --propagation private sh -c "mount -t tmpfs -o mode=755 t $work/tun && mknod -m 666 $work/tun/tun c 10 200 && mount --bind $work/tun/tun /dev/net/tun && exec setpriv --reuid $user --regid $user --init-groups \"\$@\"" sh rootlesskit "$@"
}
mbps() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6))' "$1" 2>/dev/null || echo 0; }
# ticks CPU of the helper process (slirp4netns or pasta by name, the newest of the user's)
helper_pid() { pgrep -u "$user" -n slirp4netns || pgrep -u "$user" -n pasta; }
helper_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# The child measures itself: iperf3 to the host's loopback through the gateway, and the
# helper's CPU over the transfer.
child='p=$(pgrep -n slirp4netns || pgrep -n pasta); a=$(awk "{print \$14+\$15}" /proc/$p/stat); s=$(date +%s%N)
iperf3 -c 10.0.2.2 -p 5201 -t '"$secs"' $DIR -J > $OUT
e=$(date +%s%N); b=$(awk "{print \$14+\$15}" /proc/$p/stat); echo $(( (b-a)*1000000000/(e-s) )) > $OUT.cpu'

for run in $(seq 1 "$runs"); do
	for mtu in ${MTUS:-1500 65520}; do
		for dir in ${DIRS:-c2p p2c}; do
			R=""; [ "$dir" = p2c ] && R="-R"
			for c in $cases; do
				out="$work/out/$c-$mtu-$dir-$run"
				rm -rf "$work/out/state"
				PROF="$work/out/$c-$mtu-$dir-$run.pprof"; case $c in berth-* | base-*) ;; *) PROF="" ;; esac
				# shellcheck disable=SC2086
				if rk --state-dir="$work/out/state" --mtu="$mtu" ${net[$c]} env DIR="$R" OUT="$out" sh -c "$child" >"$out.log" 2>&1; then
					printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$mtu" "$dir" "$run" "$(mbps "$out")" "$(cat "$out.cpu" 2>/dev/null || echo -)"
				else
					printf '%s\t%s\t%s\t%s\tfailed\t-\n' "$c" "$mtu" "$dir" "$run"
				fi
			done
			ip link set "$veth-h" mtu "$mtu"; ip -n "$veth" link set "$veth-n" mtu "$mtu"
			ip netns exec "$veth" iperf3 -c 10.99.0.1 -p 5202 -t "$secs" $R -J > "$work/out/veth" 2>/dev/null || true
			printf 'veth\t%s\t%s\t%s\t%s\t-\n' "$mtu" "$dir" "$run" "$(mbps "$work/out/veth")"
		done
	done
	# Port forwarding, host → namespace: rootlesskit -p to an iperf3 server in the child
	# (rootlesskit's port driver of each helper), MTU 65520.
	[ "${PORTFWD:-1}" = 0 ] && continue
	for c in $cases; do
		rm -rf "$work/out/state" "$work/out/ready"
		PROF="$work/out/$c-portfwd-$run.pprof"; case $c in berth-* | base-*) ;; *) PROF="" ;; esac
		rk --state-dir="$work/out/state" --mtu=65520 -p 127.0.0.1:15201:5201/tcp ${net[$c]} \
			sh -c "iperf3 -s -1 -p 5201 >/dev/null 2>&1 & sleep 0.5; touch $work/out/ready; wait; sleep 1" >/dev/null 2>&1 & rkp=$!
		for _ in $(seq 100); do [ -e "$work/out/ready" ] && break; sleep 0.1; done
		sleep 0.3
		hp=$(helper_pid || echo 0); a=$(helper_ticks "$hp"); s=$(date +%s%N)
		iperf3 -c 127.0.0.1 -p 15201 -t "$secs" -J > "$work/out/fwd" 2>/dev/null || true
		e=$(date +%s%N); b=$(helper_ticks "$hp") # the child keeps the helper 1 s longer
		printf '%s-portfwd\t65520\tp2c\t%s\t%s\t%s\n' "$c" "$run" "$(mbps "$work/out/fwd")" "$(( (b-a)*1000000000/(e-s) ))"
		wait "$rkp" 2>/dev/null || true
		# A helper that forked (pasta) outlives rootlesskit until it sees the namespace
		# gone: the next one could not listen on the port until it has.
		for _ in $(seq 50); do ss -Hltn 'sport = :15201' | grep -q . || break; sleep 0.1; done
	done
done
