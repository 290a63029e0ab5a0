#!/usr/bin/env bash
# prove_sysroot.sh [BIN]: shows that a binary made by `make cuda-test-bin`
# starts with ONLY the files in build/sysroot, no C library of the machine:
# it builds an empty root holding build/sysroot and the binary (nothing
# else: no /lib, /lib64, /usr, /etc, /proc), then, inside it (chroot, root
# needed),
#   1. starting the binary directly must fail (its PT_INTERP,
#      /lib64/ld-linux-x86-64.so.2, does not exist there);
#   2. starting it through the carried loader must list the tests and run
#      the host-side CUDA tests, the CUDA runtime reporting "no device"
#      cleanly (there is no libcuda.so.1 in the root: cudaErrorInsufficientDriver);
#   3. with this machine's libcuda.so.1 (if it has one) copied to /drv and
#      --library-path /sysroot:/drv, the static CUDA runtime's dlopen finds it
#      (the error becomes the driver's own answer, e.g. cudaErrorNoDevice);
#   4. the same with libcuda.so.1 in the loader's default dir
#      /usr/lib/x86_64-linux-gnu and not named by --library-path.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/unitok_cuda.test}
[ -x "$BIN" ] && [ -x build/sysroot/ld-linux-x86-64.so.2 ] || { echo "run 'make cuda-test-bin' first" >&2; exit 2; }
root=$(mktemp -d /tmp/unitok_sysroot_proof.XXXXXX)
trap 'rm -rf "$root"' EXIT
cp -a build/sysroot "$root/sysroot"
cp "$BIN" "$root/bin.test"
echo "root contents:"; (cd "$root" && find . -type f | sort | sed 's/^/  /')
echo "1. direct start (must fail):"
if chroot "$root" /bin.test -test.list . >"$root/direct.txt" 2>&1; then
	echo "  FAIL: it started without the carried loader"; exit 1
fi
echo "  failed as expected: $(head -c 200 "$root/direct.txt")"
echo "2. through the carried loader:"
chroot "$root" /sysroot/ld-linux-x86-64.so.2 --library-path /sysroot /bin.test -test.list 'TestCUDA' >"$root/list.txt"
echo "  -test.list: $(wc -l <"$root/list.txt") CUDA tests, e.g. $(head -n 3 "$root/list.txt" | paste -sd' ')"
chroot "$root" /sysroot/ld-linux-x86-64.so.2 --library-path /sysroot /bin.test \
	-test.run '^TestCUDA(NoDeviceIsClean|VariantChoice|MisalignedWords|ErrorMapping)$' -test.v -test.count 1 >"$root/run.txt" 2>&1 ||
	{ cat "$root/run.txt"; echo "FAIL"; exit 1; }
grep -E -- '--- |no GPU here|^ok|^PASS' "$root/run.txt" | sed 's/^/  /'
lib=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
if [ -n "$lib" ]; then
	mkdir -p "$root/drv" "$root/usr/lib/x86_64-linux-gnu"
	cp -L "$lib" "$root/drv/libcuda.so.1"
	for n in 3 4; do
		if [ $n = 3 ]; then lp=/sysroot:/drv; else lp=/sysroot; mv "$root/drv/libcuda.so.1" "$root/usr/lib/x86_64-linux-gnu/"; fi
		chroot "$root" /sysroot/ld-linux-x86-64.so.2 --library-path $lp /bin.test -test.run '^TestCUDANoDeviceIsClean$' -test.v \
			-test.count 1 >"$root/run$n.txt" 2>&1 || true
		echo "$n. libcuda.so.1 from $lib, --library-path $lp: $(grep -m1 -oE 'cuda:0 .*|no GPU here.*|Error.*' "$root/run$n.txt")"
		grep -q 'cudaErrorInsufficientDriver' "$root/run$n.txt" && { echo "  FAIL: libcuda.so.1 was not found"; exit 1; }
	done
else
	echo "3./4. skipped: this machine has no libcuda.so.1"
fi
echo "sysroot proof: OK ($(sed -n 2p build/sysroot/MANIFEST | sed 's/^# //'))"
