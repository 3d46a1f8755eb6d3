#!/usr/bin/env bash
# Builds packetdrill from the upstream tarball (unpacked untouched into a build directory)
# and berth's shared-object adapter against its header. Prints the build directory.
#
#   conformance/build.sh            # tarball from $PD_TARBALL, ../shared/peers, /work/shared/peers
#   PD_BUILD=/tmp/x conformance/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
name=packetdrill-2c4001c
tarball=${PD_TARBALL:-}
if [ -z "$tarball" ]; then
	for c in "$root/../shared/peers/$name.tar.gz" /work/shared/peers/$name.tar.gz; do
		if [ -f "$c" ]; then tarball=$c; break; fi
	done
fi
[ -n "$tarball" ] && [ -f "$tarball" ] || { echo "build.sh: no $name.tar.gz (set PD_TARBALL)" >&2; exit 2; }
build=${PD_BUILD:-/tmp/berth-pdrill}
mkdir -p "$build"
src="$build/$name/gtests/net/packetdrill"
if [ ! -x "$src/packetdrill" ]; then
	rm -rf "${build:?}/$name"
	tar -xzf "$tarball" -C "$build"
	(cd "$src" && ./configure >/dev/null && make -j2 >"$build/make.log" 2>&1) || {
		echo "build.sh: packetdrill build failed, see $build/make.log" >&2; exit 1; }
fi
# The scripts' `sysctl ... tcp_congestion_control=cubic` fails with EPERM in any network
# namespace but the initial one when cubic is not in tcp_allowed_congestion_control (this
# machine allows reno and bbr only); the runner's sysctl lets that one key fail quietly.
mkdir -p "$build/bin"
cat >"$build/bin/sysctl" <<'SH'
#!/bin/sh
/usr/sbin/sysctl "$@" && exit 0
rc=$?
case "$*" in *tcp_congestion_control=*) exit 0 ;; esac
exit $rc
SH
chmod +x "$build/bin/sysctl"
(cd "$here" && CGO_CFLAGS="-I$src" go build -tags packetdrill -buildmode=c-shared -o "$build/berth.so" ./adapter)
echo "$build"
