#!/usr/bin/env bash
# make_sysroot.sh SYSROOT BIN...: copies the dynamic loader and every shared
# library the binaries need (as ldd resolves them here) into SYSROOT, so that
# a GPU machine with an older or different C library can start them through
# the carried loader:
#
#   SYSROOT/ld-linux-x86-64.so.2 --library-path SYSROOT:<driver dirs> BIN ...
#
# The whole glibc family (libc, libm, libdl, libpthread, librt) is carried
# even where the binaries do not name it, because the NVIDIA driver's
# libcuda.so.1 (loaded at run time by the static CUDA runtime with dlopen,
# found in the driver dirs or the machine's ld.so.cache) needs some of them,
# and they must come from the same glibc as the carried libc.so.6. libcuda
# itself is never carried: it must match the machine's kernel driver.
# Writes SYSROOT/MANIFEST (file, where it came from, sha256, glibc version).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 SYSROOT BIN..." >&2; exit 2; }
root=$1
shift
rm -rf "$root"
mkdir -p "$root"
declare -A src=()
loader=""
for bin in "$@"; do
	[ -f "$bin" ] || { echo "make_sysroot: $bin missing" >&2; exit 1; }
	out=$(ldd "$bin") || { echo "make_sysroot: ldd $bin failed (static or not an ELF for this machine?)" >&2; exit 1; }
	while read -r line; do
		case "$line" in
		*"not found"*) echo "make_sysroot: $bin: $line" >&2; exit 1 ;;
		linux-vdso*) ;;
		*"=>"*)
			name=${line%% =>*}
			path=$(echo "$line" | sed -E 's/.*=> ([^ ]+) .*/\1/')
			case "$name" in libcuda.so*) echo "make_sysroot: $bin links $name: it must be dlopened from the driver, not carried" >&2; exit 1 ;; esac
			src[$name]=$path
			;;
		/*)
			loader=${line%% *}
			;;
		esac
	done <<<"$out"
done
[ -n "$loader" ] || { echo "make_sysroot: no dynamic loader found (static binaries need no sysroot)" >&2; exit 1; }
libdir=$(dirname "$(readlink -f "${src[libc.so.6]}")")
for name in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
	[ -n "${src[$name]:-}" ] || { [ -e "$libdir/$name" ] && src[$name]=$libdir/$name; }
done
cp -L "$loader" "$root/ld-linux-x86-64.so.2"
{
	echo "# carried by scripts/make_sysroot.sh on $(uname -n), $(date -u +%FT%TZ)"
	echo "# $(ldd --version | head -n 1)"
	echo "ld-linux-x86-64.so.2 $loader $(sha256sum "$root/ld-linux-x86-64.so.2" | cut -d' ' -f1)"
	for name in $(printf '%s\n' "${!src[@]}" | sort); do
		cp -L "${src[$name]}" "$root/$name"
		echo "$name ${src[$name]} $(sha256sum "$root/$name" | cut -d' ' -f1)"
	done
} >"$root/MANIFEST"
chmod 755 "$root/ld-linux-x86-64.so.2"
# The carried loader must start each binary with only the carried libraries.
# The carried loader must resolve every library of each binary inside SYSROOT.
for bin in "$@"; do
	list=$("$root/ld-linux-x86-64.so.2" --library-path "$root" --list "$bin") ||
		{ echo "make_sysroot: the carried loader cannot resolve $bin" >&2; exit 1; }
	outside=$(echo "$list" | grep '=>' | grep -v "=> $root/" || true)
	[ -z "$outside" ] || { echo "make_sysroot: $bin resolves outside $root: $outside" >&2; exit 1; }
done
echo "make_sysroot: $root: loader + ${#src[@]} libraries ($(du -sh "$root" | cut -f1))"
