#!/usr/bin/env bash
# CI for the packetdrill conformance suite: builds packetdrill (from the upstream tarball:
# $PD_TARBALL, ../shared/peers relative to the repository, or /work/shared/peers) and the
# adapter, runs gtests/net/tcp in the ipv4 and ipv6 variants on berth, and fails if a script
# listed in expected/<variant>.txt fails now (each such failure is tried once more, for
# flakes). Prints the table: passes per variant, and what passes that is not listed yet.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$("$here/build.sh")
export PD_BUILD=$build
status=0
printf '\n%-8s %6s %6s %9s %s\n' variant pass fail expected "newly passing (add to expected/)"
for v in ipv4 ipv6; do
	res="$build/ci-$v.txt"
	"$here/run.sh" --variant "$v" --timeout 60 >"$res" 2>&1 || true
	exp="$here/expected/$v.txt"
	broken=()
	while IFS= read -r s; do
		[ -n "$s" ] || continue
		if ! grep -q "^PASS $v $s\$" "$res"; then
			if "$here/run.sh" --variant "$v" --timeout 60 "$s" | grep -q '^PASS'; then
				echo "flake: $v $s failed once, passed on retry" >&2
			else
				broken+=("$s")
			fi
		fi
	done <"$exp"
	pass=$(grep -c '^PASS' "$res" || true)
	fail=$(grep -c '^FAIL' "$res" || true)
	new=$(grep '^PASS' "$res" | awk '{print $3}' | grep -vxF -f "$exp" | tr '\n' ' ' || true)
	printf '%-8s %6s %6s %9s %s\n' "$v" "$pass" "$fail" "$(grep -c . "$exp" || true)" "$new"
	for s in "${broken[@]}"; do
		echo "REGRESSION: $v $s passed before and fails now:" >&2
		grep "^FAIL $v $s" "$res" >&2 || true
		status=1
	done
done
exit $status
