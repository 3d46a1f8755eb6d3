#!/usr/bin/env bash
# Writes the markdown tables of docs/conformance.md from run.sh results:
#   table.sh BERTH_IPV4 KERNEL_IPV4 BERTH_IPV6 KERNEL_IPV6
# For each variant: "berth X / kernel Y", and every script that fails on berth but
# passes on the kernel with its first failing line and a category; then the scripts that
# fail on both, each with berth's first error and the kernel's.
set -euo pipefail
net="${PD_BUILD:-/tmp/berth-pdrill}/packetdrill-2c4001c/gtests/net"

category() { # the reason of one failure -> a category
	case "$1 $2" in
	*zerocopy* | *ZEROCOPY* | *timestamping/* | *SO_TIMESTAMPING*) echo "out of scope: zerocopy / SO_TIMESTAMPING" ;;
	*/proc/net/tcp* | *"ip route"* | *ethtool* | *qdisc* | *Nexthop* | *mtu_probe/*) echo "out of scope: inspects the host kernel" ;;
	# nstat reads the namespace kernel's own counters; user-timeout-probe has a pfifo qdisc
	# of limit 0 drop the kernel's packets on tun0, which berth's never pass through.
	*nstat* | *user_timeout/user-timeout-probe*) echo "out of scope: inspects the host kernel" ;;
	*fastopen/* | *FASTOPEN*) echo "missing feature: TCP Fast Open (RFC 7413)" ;;
	*NOTSENT_LOWAT* | *notsent_lowat/* | *TCP_MAXSEG* | *TCP_CORK* | *MSG_MORE* | *msg_more* | *cork* | *TCP_USER_TIMEOUT* | *user_timeout/* | *TCP_INQ* | *inq/* | *eor/* | *MSG_EOR*) echo "missing feature: socket option" ;;
	*tcp_ece* | *ecn/* | *ecn-*) echo "missing feature: ECN (RFC 3168)" ;;
	*sendfile* | *splice* | *syscall_bad_arg/*) echo "adapter gap" ;;
	*"Python code"*) echo "behaviour difference: TCP_INFO values" ;;
	*) echo "behaviour difference" ;;
	esac
}

variant() { # variant NAME BERTH KERNEL
	local v=$1 b=$2 k=$3
	local kp bp both
	kp=$(grep -c '^PASS' "$k" || true)
	bp=$(grep -c '^PASS' "$b" || true)
	both=$(grep '^PASS' "$k" | awk '{print $3}' | grep -cxF -f <(grep '^PASS' "$b" | awk '{print $3}') || true)
	echo "### $v"
	echo
	local oos=0 s why
	while read -r s; do
		why=$(grep -m1 "^FAIL $v $s " "$b" || true)
		[ -n "$why" ] || continue
		case "$(category "$s" "$why")" in "out of scope"*) oos=$((oos + 1)) ;; esac
	done < <(grep '^PASS' "$k" | awk '{print $3}')
	echo "berth $bp / kernel $kp of the same $(grep -c . "$k") scripts on this machine; of the kernel's $kp, berth passes $both."
	echo "Leaving out the $oos the issue puts out of scope, berth passes $both of $((kp - oos)) ($((100 * both / (kp - oos))) %)."
	echo
	echo "| script | first failing line | why |"
	echo "| --- | --- | --- |"
	grep '^PASS' "$k" | awk '{print $3}' | while read -r s; do
		local line
		line=$(grep -m1 "^FAIL $v $s " "$b" || true)
		[ -n "$line" ] || continue
		local why=${line#"FAIL $v $s "}
		local n text=""
		n=$(printf '%s' "$why" | sed -n 's/^[^ ]*\.pkt:\([0-9]*\):.*/\1/p')
		if [ -n "$n" ] && [ -f "$net/$s" ]; then
			text=$(sed -n "${n}p" "$net/$s" | sed 's/^[[:space:]]*//' | tr '|`' "/'" | cut -c1-70)
		fi
		local detail
		detail=$(printf '%s' "$why" | sed 's/^[^ ]*\.pkt:[0-9]*: //' | tr '|`' "/'" | cut -c1-110)
		echo "| $s | ${n:+$n: \`$text\`} | $(category "$s" "$why"): $detail |"
	done
	echo
	# The scripts that fail on berth and on this machine's kernel alike: no target counts
	# them, but each failure still says where and why, the kernel's beside berth's.
	local nboth
	nboth=$(grep '^FAIL' "$k" | awk '{print $3}' | grep -cxF -f <(grep '^FAIL' "$b" | awk '{print $3}') || true)
	echo "Failing on this machine's kernel too ($nboth scripts; the kernel's first error beside berth's):"
	echo
	echo "| script | berth | kernel |"
	echo "| --- | --- | --- |"
	grep '^FAIL' "$k" | awk '{print $3}' | while read -r s; do
		local bl kl
		bl=$(grep -m1 "^FAIL $v $s " "$b" || true)
		[ -n "$bl" ] || continue
		kl=$(grep -m1 "^FAIL $v $s " "$k" || true)
		bl=$(printf '%s' "${bl#"FAIL $v $s "}" | sed 's/^[^ ]*\.pkt:\([0-9]*\): /\1: /' | tr '|`' "/'" | cut -c1-100)
		kl=$(printf '%s' "${kl#"FAIL $v $s "}" | sed 's/^[^ ]*\.pkt:\([0-9]*\): /\1: /' | tr '|`' "/'" | cut -c1-100)
		echo "| $s | $bl | $kl |"
	done
	echo
}

variant ipv4 "$1" "$2"
variant ipv6 "$3" "$4"
