#!/usr/bin/env bash
# Runs packetdrill scripts, each in its own network namespace (unshare -n), two at a time,
# on berth (shared-object mode, the default) or on the kernel (--kernel: packetdrill's
# normal TUN mode), in upstream run_all.py's ipv4 or ipv6 variant. Prints one line per
# script: PASS|FAIL <variant> <script relative to gtests/net> [first error line].
#
#   conformance/run.sh [--kernel] [--variant ipv4|ipv6] [--jobs N] [--timeout S] \
#       [--logs DIR] [script.pkt|dir ...]      (default: every script of gtests/net/tcp)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${PD_BUILD:-/tmp/berth-pdrill}
net="$build/packetdrill-2c4001c/gtests/net"
pd="$net/packetdrill/packetdrill"

one() { # one <mode> <variant> <tmo> <logs> <script>
	local mode=$1 variant=$2 tmo=$3 logs=$4 script=$5
	local rel=${script#"$net"/} flags so=()
	case "$variant" in
	ipv4) flags="--ip_version=ipv4 --local_ip=192.168.0.1 --gateway_ip=192.168.0.1 --netmask_ip=255.255.0.0 --remote_ip=192.0.2.1 -D TFO_COOKIE=3021b9d889017eeb -D CODE=host_unreachable -D CMSG_LEVEL_IP=SOL_IP -D CMSG_TYPE_RECVERR=IP_RECVERR"
		local soflags="local=192.168.0.1/16 mtu=1500" ;;
	ipv6) flags="--ip_version=ipv6 --mtu=1520 --local_ip=fd3d:0a0b:17d6::1 --gateway_ip=fd3d:0a0b:17d6:8888::1 --remote_ip=fd3d:fa7b:d17d::1 -D TFO_COOKIE=c1d1e9742a47a9bc -D CMSG_LEVEL_IP=SOL_IPV6 -D CMSG_TYPE_RECVERR=IPV6_RECVERR"
		local soflags="local=fd3d:a0b:17d6::1/48 mtu=1520" ;;
	esac
	if [ "$mode" = berth ]; then
		so=(--so_filename="$build/berth.so" "--so_flags=$soflags")
		# The adapter's getsockopt answers the code events' TCP_INFO (adapter/shim.c).
		export PD_PRELOAD="$build/berth.so"
	fi
	local out rc=0
	out=$(cd "$(dirname "$script")" && timeout -k 5 "$tmo" unshare -n sh -c '
		export PATH="$0/bin:$PATH"
		ip link set lo up
		[ "$1" = berth ] && ip tuntap add tun0 mode tun
		shift
		[ -n "${PD_PRELOAD:-}" ] && export LD_PRELOAD="$PD_PRELOAD"
		exec "$@"' "$build" "$mode" "$pd" --send_omit_free $flags "${so[@]}" "$(basename "$script")" 2>&1) || rc=$?
	if [ -n "$logs" ]; then
		mkdir -p "$logs/$variant/$(dirname "$rel")"
		printf '%s\n' "$out" >"$logs/$variant/$rel.log"
	fi
	if [ $rc = 0 ]; then
		echo "PASS $variant $rel"
	else
		local why
		why=$(printf '%s\n' "$out" | grep -v '^sysctl: setting key "net.ipv4.tcp_congestion_control"' | grep -m1 -E '\.pkt:[0-9]+|error|Error' || true)
		[ $rc = 124 ] && why="timeout after ${tmo}s ${why}"
		echo "FAIL $variant $rel ${why//$'\n'/ }"
	fi
}

# xargs runs this script again for each script: run.sh __one MODE VARIANT TIMEOUT LOGS SCRIPT
if [ "${1:-}" = __one ]; then shift; one "$@"; exit 0; fi

mode=berth variant=ipv4 jobs=2 tmo=60 logs=
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) mode=kernel ;;
	--variant) variant=$2; shift ;;
	--jobs) jobs=$2; shift ;;
	--timeout) tmo=$2; shift ;;
	--logs) logs=$2; shift ;;
	-*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	*) args+=("$1") ;;
	esac
	shift
done


[ -x "$pd" ] || { echo "run.sh: no packetdrill in $build (run conformance/build.sh)" >&2; exit 2; }
[ ${#args[@]} -gt 0 ] || args=("$net/tcp")
scripts=()
for a in "${args[@]}"; do
	[ -e "$a" ] || a="$net/$a" # names relative to gtests/net, as the expected lists have them
	a=$(realpath "$a")
	if [ -d "$a" ]; then
		while IFS= read -r f; do scripts+=("$f"); done < <(find "$a" -name '*.pkt' | sort)
	else
		scripts+=("$a")
	fi
done
for s in "${scripts[@]}"; do
	# run_all.py's rule: *v6.pkt only in the ipv6 variant, *v4.pkt only in ipv4.
	case "$variant:$s" in ipv4:*v6.pkt | ipv6:*v4.pkt) continue ;; esac
	printf '%s\0' "$s"
done | xargs -0 -P "$jobs" -I{} "$0" __one "$mode" "$variant" "$tmo" "$logs" {}
