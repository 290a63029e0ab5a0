#!/usr/bin/env bash
# device_check.sh: the one prepared script for a GPU machine. It compiles
# nothing: it needs what `make cuda-test-bin` made on the build machine,
# build/device.tgz (build/unitok_cuda.test, build/prep_cuda.test,
# build/unitok-cuda, build/kern.test and build/sysroot, the loader and
# shared libraries they were linked against; unpacked here), plus the
# repository's testdata/ and bench/torch_reference.py.
#
#   bash bench/device_check.sh            # from anywhere; OUT=dir BUDGET_S=420
#
# It fails closed: no GPU, binaries that cannot start, a skipped GPU test,
# a kernel error under compute-sanitizer, or a step that did not finish are
# never reported as a pass. Exit status and last line (VERDICT):
#   0 PASS        every test family passed, both sanitizers clean, figures taken
#   1 FAIL        a test, a benchmark or a sanitizer found an error
#   3 NO GPU      preflight: no NVIDIA GPU visible, or the binaries cannot start
#                 or cannot see it (one line says which)
#   4 INCOMPLETE  nothing failed, but something required did not run or finish
#                 (a sanitizer that could not start, a timeout); the table says what
#
# Binaries start through the carried loader (build/sysroot/ld-linux-x86-64.so.2
# --library-path build/sysroot:<driver dirs>), so the machine's own glibc
# does not matter; the NVIDIA driver's libcuda.so.1 is still found in the
# driver dirs or the machine's ld.so.cache. If the carried loader cannot start
# them and the machine's own can, the machine's is used (and said so).
#
# Steps, each under its own limit (the limits add up to less than BUDGET_S;
# a step that overruns takes time only from the optional steps at the end):
#   0. preflight: GPU visible (nvidia-smi, /dev/nvidiaN); binaries start
#      (-test.list dry run); the binary sees the GPU (UNITOK_REQUIRE_GPU=1)
#   1. CUDA tests, one process per family (a sticky CUDA error stays in its
#      family), UNITOK_REQUIRE_GPU=1 so a skipped GPU test fails
#   2. Go benchmarks: resident (CUDA events) and through the Go API, with
#      GPU telemetry (`unitok-cuda devices --json` every 2 s, nvidia-smi every
#      0.5 s) matched to each figure's time window
#   3. PyTorch eager (JSON written before any torch.compile starts)
#   4. compute-sanitizer memcheck and racecheck on TestCUDAVariants (a small
#      instance of every kernel variant); only exit 99 is a kernel error
#   5. where the host CPU has AVX-512: the CPU engine's kernel tests and
#      GEMM benchmarks on it (build/kern.test), the AVX-512 path's first run
#   6. optional, if time is left: ncu (quantize kernel, --clock-control none),
#      the data-prep pipeline benchmark
# Logs go to files first; $OUT gets table.md and logs.tar.gz (and nothing
# else), rewritten after every step and from the EXIT trap, so a run cut
# short still brings back what was done.
set -u
cd "$(dirname "$0")/.." || exit 3
ROOT=$PWD
OUT=${OUT:-$ROOT/build/device_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUDGET_S=${BUDGET_S:-420}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/unitok_device_check.XXXXXX")
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S))
BIN=build/unitok_cuda.test
SYSROOT=build/sysroot
STEPS=$LOGS/steps.tsv # step, result (PASS/FAIL/INCOMPLETE/SKIPPED/INFO), seconds, note
: >"$STEPS"
VERDICT=""
SAMPLERS=()
TELEMETRY="not started"

log() { echo "[device_check $(($(date +%s) - T0))s] $*" | tee -a "$LOGS/console.log"; }
left() { echo $((DEADLINE - $(date +%s))); }
# limit WANT: the smaller of WANT and the seconds left (at least 1).
limit() {
	local l
	l=$(left)
	[ "$l" -lt 1 ] && l=1
	[ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"; log "$1: $2 ($3 s) $4"; }

stop_samplers() {
	local p
	for p in "${SAMPLERS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${SAMPLERS[@]}"; do wait "$p" 2>/dev/null; done
	SAMPLERS=()
}

# snapshot: the table and the archive of the logs so far, into $OUT.
snapshot() {
	python3 bench/device_table.py "$LOGS" "${VERDICT:-RUNNING}" >"$LOGS/table.md" 2>"$LOGS/table.err" ||
		{ echo "table failed: $(tail -n 1 "$LOGS/table.err")" >"$LOGS/table.md"; cat "$LOGS/steps.tsv" >>"$LOGS/table.md"; }
	cp "$LOGS/table.md" "$OUT/table.md.tmp" && mv "$OUT/table.md.tmp" "$OUT/table.md"
	tar czf "$OUT/logs.tar.gz.tmp" -C "$LOGS" . 2>/dev/null && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

finish() {
	local rc=$?
	trap - EXIT INT TERM
	stop_samplers
	if [ -z "$VERDICT" ]; then
		VERDICT="INCOMPLETE (stopped early, exit $rc)"
		rc=4
	fi
	log "VERDICT: $VERDICT"
	snapshot
	cat "$LOGS/table.md"
	echo "device_check: logs in $OUT/logs.tar.gz, table in $OUT/table.md"
	echo "VERDICT: $VERDICT"
	exit "$rc"
}
trap finish EXIT
trap 'log "interrupted"; exit 4' INT TERM

nogpu() { # one clear line, exit 3
	VERDICT="NO GPU: $*"
	echo "device_check: FAIL: no GPU: $*" >&2
	record preflight FAIL "$(($(date +%s) - T0))" "no GPU: $*"
	exit 3
}

# ------------------------------------------------------------ 0. preflight
log "repository $ROOT, budget ${BUDGET_S}s, logs $LOGS"
{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(uname -a)"
	echo "glibc: $(ldd --version 2>&1 | head -n 1)"
	[ -f "$SYSROOT/BUILD_INFO" ] && sed 's/^/build: /' "$SYSROOT/BUILD_INFO"
} >"$LOGS/host.txt"
gpus=""
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi -L >"$LOGS/nvidia-smi-L.txt" 2>&1
	gpus=$(grep -c '^GPU [0-9]' "$LOGS/nvidia-smi-L.txt")
	nvidia-smi >"$LOGS/nvidia-smi.txt" 2>&1
	timeout 20 nvidia-smi -q -d CLOCK,PERFORMANCE,POWER,TEMPERATURE >"$LOGS/nvidia-smi-q.txt" 2>&1
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
		--format=csv >"$LOGS/nvidia-smi-query.csv" 2>&1
fi
devnodes=$(ls /dev 2>/dev/null | grep -cE '^nvidia[0-9]+$')
if [ "${gpus:-0}" -eq 0 ] && [ "$devnodes" -eq 0 ]; then
	if command -v nvidia-smi >/dev/null 2>&1; then
		nogpu "nvidia-smi lists no GPU ($(head -n 1 "$LOGS/nvidia-smi-L.txt")) and there is no /dev/nvidiaN"
	fi
	nogpu "no nvidia-smi and no /dev/nvidiaN device node"
fi
# The binaries travel as one archive (make cuda-test-bin: stripped and
# compressed, under the device tool's 64 MiB for all that travels).
if [ -f build/device.tgz ]; then
	tar xzf build/device.tgz -C build 2>"$LOGS/untar.txt" || nogpu "build/device.tgz does not unpack: $(head -n 1 "$LOGS/untar.txt")"
fi
[ -x "$BIN" ] || nogpu "$BIN missing: run 'make cuda-test-bin' on the build machine and carry build/device.tgz"

# The driver's library dirs: where ld.so.cache puts libcuda.so.1, then the
# usual places (never the toolkit's stubs or compat dirs).
drv=""
for d in $(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF}' | xargs -r -n1 dirname) \
	/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /lib64; do
	[ -d "$d" ] && case ":$drv:" in *":$d:"*) ;; *) drv=${drv:+$drv:}$d ;; esac
done
echo "driver dirs: $drv" >>"$LOGS/host.txt"
for d in $(echo "$drv" | tr ':' ' '); do ls -l "$d"/libcuda.so* "$d"/libnvidia-ml.so* 2>/dev/null; done >>"$LOGS/host.txt"

# LAUNCH prefixes every binary; TOOL_LAUNCH is the same for programs that
# compute-sanitizer and ncu start (empty when the machine's loader is used).
NATIVE=(env)
CARRIED=("$SYSROOT/ld-linux-x86-64.so.2" --library-path "$SYSROOT:$drv")
LAUNCH=()
how=""
if [ -x "$SYSROOT/ld-linux-x86-64.so.2" ] &&
	timeout 20 "${CARRIED[@]}" "$BIN" -test.list '.' >"$LOGS/list_carried.txt" 2>&1 && grep -q '^TestCUDAVariants$' "$LOGS/list_carried.txt"; then
	LAUNCH=("${CARRIED[@]}")
	how="carried loader ($SYSROOT, $(sed -n 2p "$SYSROOT/MANIFEST" | sed 's/^# //'))"
fi
ldd "$BIN" >"$LOGS/ldd_native.txt" 2>&1
if timeout 20 "$BIN" -test.list '.' >"$LOGS/list_native.txt" 2>&1 && grep -q '^TestCUDAVariants$' "$LOGS/list_native.txt"; then
	native_ok=1
else
	native_ok=0
fi
if [ ${#LAUNCH[@]} -eq 0 ]; then
	[ "$native_ok" -eq 1 ] || nogpu "the binaries cannot start: carried loader: $(tail -n 1 "$LOGS/list_carried.txt" 2>/dev/null || echo "no $SYSROOT"); this machine's loader: $(tail -n 1 "$LOGS/list_native.txt")"
	LAUNCH=("${NATIVE[@]}")
	how="this machine's loader (the carried one failed: $(tail -n 1 "$LOGS/list_carried.txt" 2>/dev/null))"
fi

# The binary must see the GPU: with UNITOK_REQUIRE_GPU=1 this test fails
# when the CUDA runtime finds no device (no libcuda.so.1, driver too old).
see() { UNITOK_REQUIRE_GPU=1 timeout 30 "$@" "$BIN" -test.run '^TestCUDANoDeviceIsClean$' -test.v >"$LOGS/device.log" 2>&1; }
if ! see "${LAUNCH[@]}"; then
	if [ "${LAUNCH[0]}" != env ] && [ "$native_ok" -eq 1 ] && see "${NATIVE[@]}"; then
		LAUNCH=("${NATIVE[@]}")
		how="this machine's loader (the carried one started the binary but it saw no GPU)"
	else
		nogpu "the test binary sees no GPU: $(grep -m1 -E 'no usable CUDA GPU|panic|error' "$LOGS/device.log" | sed 's/^ *//')"
	fi
fi
if [ "${LAUNCH[0]}" = env ]; then TOOL_LAUNCH=(); else TOOL_LAUNCH=("${LAUNCH[@]}"); fi
DEVICE_LINE=$(grep -m1 -oE 'cuda:0 .*' "$LOGS/device.log")
echo "launch: $how" >>"$LOGS/host.txt"
echo "device: $DEVICE_LINE" >>"$LOGS/host.txt"
record preflight PASS "$(($(date +%s) - T0))" "$DEVICE_LINE; binaries started through the $how"
snapshot

# ------------------------------------------------------------ 1. CUDA tests
FAILED=0
INCOMPLETE=0
# family NAME LIMIT REGEXP: one test process, under UNITOK_REQUIRE_GPU=1.
family() {
	local name=$1 want=$2 re=$3 t lim rc f=$LOGS/test_$1.log
	t=$(date +%s)
	lim=$(limit "$want")
	if [ "$lim" -lt 5 ]; then
		record "test $name" INCOMPLETE 0 "not run: budget spent"
		INCOMPLETE=1
		return
	fi
	UNITOK_REQUIRE_GPU=1 timeout -k 5 "$lim" "${LAUNCH[@]}" "$BIN" -test.run "$re" -test.v -test.count 1 \
		-test.timeout "$((lim - 2))s" >"$f" 2>&1
	rc=$?
	local pass skip fail
	pass=$(grep -c -- '--- PASS' "$f")
	skip=$(grep -c -- '--- SKIP' "$f")
	fail=$(grep -c -- '--- FAIL' "$f")
	local note="$pass passed, $fail failed, $skip skipped"
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		record "test $name" FAIL "$(($(date +%s) - t))" "timed out after ${lim}s ($note)"
		FAILED=1
	elif [ "$rc" -ne 0 ] || [ "$fail" -gt 0 ] || [ "$skip" -gt 0 ] || [ "$pass" -eq 0 ]; then
		record "test $name" FAIL "$(($(date +%s) - t))" "exit $rc, $note; $(grep -m1 -E -- '--- FAIL|--- SKIP|panic:|Error:' "$f" | sed 's/^ *//' | cut -c1-200)"
		FAILED=1
	else
		record "test $name" PASS "$(($(date +%s) - t))" "$note"
	fi
	snapshot
}
family basics 15 '^TestCUDA(NoDeviceIsClean|ErrorMapping|ResourcesNilSafe|ResourcesCloseTwice|VariantChoice|MisalignedWords)$'
family conformance 25 '^TestCUDAConformance$'
family variants 20 '^TestCUDAVariants$'
family real_quantize 30 '^TestCUDARealQuantize$'
family real_encode_decode 35 '^TestCUDARealEncodeDecode$'
family matches_cpu 35 '^TestCUDAMatchesCPU$'
family others 20 '^TestCUDA(UsageHistogram|ConcurrentCallsAgree|QuantizeManyRows|SteadyStateAllocs)$'
# Any CUDA test the families above do not name still runs.
cat "$LOGS/list_carried.txt" "$LOGS/list_native.txt" 2>/dev/null | grep '^TestCUDA' | sort -u >"$LOGS/all_tests.txt"
rest=$(grep -vxE 'TestCUDA(NoDeviceIsClean|ErrorMapping|ResourcesNilSafe|ResourcesCloseTwice|VariantChoice|MisalignedWords|Conformance|Variants|RealQuantize|RealEncodeDecode|MatchesCPU|UsageHistogram|ConcurrentCallsAgree|QuantizeManyRows|SteadyStateAllocs)' "$LOGS/all_tests.txt" | paste -sd'|')
[ -n "$rest" ] && family rest 20 "^($rest)\$"

# ------------------------------------------------------------ 2. benchmarks
# Telemetry during the benchmarks and PyTorch: clocks and throttling for
# each figure.
t=$(date +%s)
if command -v nvidia-smi >/dev/null 2>&1; then
	q=timestamp,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu
	for r in clocks_event_reasons.active clocks_throttle_reasons.active; do
		if nvidia-smi --query-gpu=$q,$r --format=csv,noheader,nounits >/dev/null 2>&1; then
			echo "# $q,$r" >"$LOGS/nvsmi.csv"
			nvidia-smi --query-gpu=$q,$r --format=csv,noheader,nounits -lms 500 >>"$LOGS/nvsmi.csv" 2>&1 &
			SAMPLERS+=($!)
			break
		fi
	done
fi
if [ -x build/unitok-cuda ] && timeout 10 "${LAUNCH[@]}" build/unitok-cuda devices --json >"$LOGS/devices.json" 2>"$LOGS/devices.err" &&
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$LOGS/devices.json" 2>>"$LOGS/devices.err"; then
	(
		while :; do
			ts=$(date +%s.%N)
			j=$(timeout 5 "${LAUNCH[@]}" build/unitok-cuda devices --json 2>/dev/null | tr -d '\n')
			[ -n "$j" ] && printf '{"t":%s,"devices":%s}\n' "$ts" "$j" >>"$LOGS/telemetry.jsonl"
			sleep 2
		done
	) &
	SAMPLERS+=($!)
	TELEMETRY="unitok-cuda devices --json every 2 s"
else
	TELEMETRY="not available: $( [ -x build/unitok-cuda ] && (head -c 300 "$LOGS/devices.err" | tr '\n' ' ') || echo 'no build/unitok-cuda')"
fi
echo "$TELEMETRY" >"$LOGS/telemetry_status.txt"
record telemetry INFO "$(($(date +%s) - t))" "telemetry: $TELEMETRY; nvidia-smi sampler: $([ -s "$LOGS/nvsmi.csv" ] && echo on || echo off)"

# bench NAME LIMIT REGEXP BENCHTIME
bench() {
	local name=$1 want=$2 re=$3 n=$4 t lim rc f=$LOGS/bench_$1.txt
	t=$(date +%s)
	lim=$(limit "$want")
	if [ "$lim" -lt 5 ]; then
		record "bench $name" INCOMPLETE 0 "not run: budget spent"
		INCOMPLETE=1
		return
	fi
	UNITOK_REQUIRE_GPU=1 UNITOK_BENCH_TIMELOG=$LOGS/bench_times.txt timeout -k 5 "$lim" "${LAUNCH[@]}" "$BIN" \
		-test.run '^$' -test.bench "$re" -test.benchtime "$n" -test.timeout "$((lim - 2))s" >"$f" 2>&1
	rc=$?
	local got
	got=$(grep -c 'tokens/s' "$f")
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		record "bench $name" INCOMPLETE "$(($(date +%s) - t))" "timed out after ${lim}s with $got figures"
		INCOMPLETE=1
	elif [ "$rc" -ne 0 ] || grep -qE -- '--- (FAIL|SKIP)' "$f"; then
		record "bench $name" FAIL "$(($(date +%s) - t))" "exit $rc: $(grep -m1 -E -- '--- FAIL|--- SKIP|panic:|Error' -A2 "$f" | tr '\n' ' ' | cut -c1-200)"
		FAILED=1
	else
		record "bench $name" PASS "$(($(date +%s) - t))" "$got figures"
	fi
	snapshot
}
bench resident 30 'CUDA(Quantize|Encode|Decode)Resident$' 20x
bench goapi 40 'CUDA(Quantize|Encode|Decode|EncodeCausal)$' 8x

# ------------------------------------------------------------ 3. PyTorch
t=$(date +%s)
lim=$(limit 45)
if ! timeout 30 python3 -c 'import torch; assert torch.cuda.is_available()' >"$LOGS/torch_probe.txt" 2>&1; then
	record torch INCOMPLETE "$(($(date +%s) - t))" "not run: $(tail -n 1 "$LOGS/torch_probe.txt")"
	INCOMPLETE=1
elif [ "$lim" -lt 15 ]; then
	record torch INCOMPLETE 0 "not run: budget spent"
	INCOMPLETE=1
else
	# Eager numbers land in torch.json before torch.compile starts; compile
	# only while the first 25 s are not spent.
	PYTHONUNBUFFERED=1 timeout -k 5 "$lim" python3 bench/torch_reference.py bench --device cuda --config real \
		--batches 8,64 --quant-rows 65536,262144,1048576 --compile-at quantize:65536,encode:64,decode:64 \
		--deadline-s 25 --json "$LOGS/torch.json" >"$LOGS/torch.log" 2>&1
	rc=$?
	phase=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["_meta"]["phase"])' "$LOGS/torch.json" 2>/dev/null)
	case "$phase" in
	done) record torch PASS "$(($(date +%s) - t))" "eager and torch.compile (as time allowed)" ;;
	eager | compile) record torch PASS "$(($(date +%s) - t))" "eager complete; stopped during torch.compile (exit $rc)" ;;
	*)
		record torch INCOMPLETE "$(($(date +%s) - t))" "no eager figures (exit $rc): $(tail -n 1 "$LOGS/torch.log" | cut -c1-200)"
		INCOMPLETE=1
		;;
	esac
fi
stop_samplers
snapshot

# ------------------------------------------------------------ 4. compute-sanitizer
sanitize() {
	local tool=$1 want=$2 t lim rc f=$LOGS/sanitizer_$1.log
	t=$(date +%s)
	lim=$(limit "$want")
	if ! command -v compute-sanitizer >/dev/null 2>&1; then
		record "sanitizer $tool" INCOMPLETE 0 "not run: compute-sanitizer not found"
		INCOMPLETE=1
		return
	fi
	if [ "$lim" -lt 10 ]; then
		record "sanitizer $tool" INCOMPLETE 0 "not run: budget spent"
		INCOMPLETE=1
		return
	fi
	run_tool() {
		UNITOK_REQUIRE_GPU=1 timeout -k 5 "$lim" compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
			"$@" "$BIN" -test.run '^TestCUDAVariants$' -test.v -test.count 1 -test.timeout "$((lim - 3))s" >"$f" 2>&1
	}
	run_tool ${TOOL_LAUNCH[@]+"${TOOL_LAUNCH[@]}"}
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] && ! grep -q 'ERROR SUMMARY' "$f" &&
		[ ${#TOOL_LAUNCH[@]} -gt 0 ] && [ "$native_ok" -eq 1 ]; then
		# The tool did not start the program through the carried loader: try
		# this machine's loader before calling it "not run".
		mv "$f" "$f.carried"
		lim=$(limit "$want")
		run_tool
		rc=$?
	fi
	local summary
	summary=$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$f" | sed 's/^=* *//')
	if [ "$rc" -eq 99 ]; then
		record "sanitizer $tool" FAIL "$(($(date +%s) - t))" "kernel errors: $summary; $(grep -m1 -E '^========= (Invalid|Error|Race|.*hazard)' "$f" | cut -c1-160)"
		FAILED=1
	elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || grep -q 'panic: test timed out' "$f"; then
		record "sanitizer $tool" INCOMPLETE "$(($(date +%s) - t))" "not finished: timed out after ${lim}s (the tool slows the kernels)"
		INCOMPLETE=1
	elif grep -q 'ERROR SUMMARY' "$f"; then
		if [ "$rc" -eq 0 ] && grep -q -- '--- PASS: TestCUDAVariants' "$f"; then
			record "sanitizer $tool" PASS "$(($(date +%s) - t))" "$summary"
		else
			record "sanitizer $tool" FAIL "$(($(date +%s) - t))" "the test failed under the tool (exit $rc): $(grep -m1 -E -- '--- FAIL|panic:|Error:' "$f" | sed 's/^ *//' | cut -c1-160)"
			FAILED=1
		fi
	else
		record "sanitizer $tool" INCOMPLETE "$(($(date +%s) - t))" "not run: $(grep -m1 -E '^=+ (Error|ERROR)|error' "$f" | cut -c1-200 || tail -n 1 "$f")"
		INCOMPLETE=1
	fi
	snapshot
}
sanitize memcheck 35
sanitize racecheck 35

# ------------------------------------------------------------ 5. CPU AVX-512
# The host's CPU, where it has AVX-512 (the build machines have not): the
# CPU engine's AVX-512 kernels run for the first time. kern's tests force
# every level the CPU has (GEMM tiles on both panel layouts, codebook
# search, row ops; a start-up self-check drop fails TestSelfCheck), the
# root package's CPU tests run the core model per level, and BenchmarkGemm
# / BenchmarkKernelOnly give the GEMM's fraction of the FMA peak on 1 and 2
# threads. A failed test fails the check; the figures are INFO. Like the
# optional steps, it runs on what the GPU steps left (skipped under 20 s).
t=$(date +%s)
lim=$(limit 60)
cpuname=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
if ! grep -qw avx512f /proc/cpuinfo; then
	record "cpu avx512" SKIPPED 0 "host CPU has no avx512f ($cpuname)"
elif [ ! -x build/kern.test ]; then
	record "cpu avx512" SKIPPED 0 "no build/kern.test (make cuda-test-bin builds it; carry it)"
elif [ "$lim" -lt 20 ]; then
	record "cpu avx512" SKIPPED 0 "only ${lim}s left"
else
	f=$LOGS/cpu_avx512.log
	GOMAXPROCS=2 timeout -k 5 "$((lim / 2))" build/kern.test -test.count 1 -test.v -test.timeout "$((lim / 2 - 2))s" >"$f" 2>&1
	rc=$?
	GOMAXPROCS=2 timeout -k 5 15 "${LAUNCH[@]}" "$BIN" -test.run '^TestCPU' -test.count 1 -test.v -test.timeout 13s >>"$f" 2>&1
	rc2=$?
	fail=$(grep -c -- '--- FAIL' "$f")
	lvl=$(grep -c -- '--- PASS: .*/avx512' "$f")
	note="$cpuname; kern exit $rc, root TestCPU exit $rc2, $(grep -c -- '--- PASS' "$f") passed ($lvl avx512 subtests), $fail failed"
	if [ "$rc" -ne 0 ] || [ "$rc2" -ne 0 ] || [ "$fail" -gt 0 ] || [ "$lvl" -eq 0 ]; then
		record "cpu avx512" FAIL "$(($(date +%s) - t))" "$note; $(grep -m1 -E -- '--- FAIL|panic:|start-up check' "$f" | sed 's/^ *//' | cut -c1-160)"
		FAILED=1
	else
		record "cpu avx512" PASS "$(($(date +%s) - t))" "$note"
		lim=$(limit 25)
		if [ "$lim" -ge 10 ]; then
			GOMAXPROCS=2 timeout -k 5 "$lim" build/kern.test -test.run '^$' -test.bench '^Benchmark(Gemm|KernelOnly|FMAPeak)$/^(avx512|avx2)' \
				-test.benchtime 1s >"$LOGS/cpu_bench.log" 2>&1
			record "cpu bench" INFO "$(($(date +%s) - t))" "$(grep -E '^Benchmark(FMAPeak|Gemm|KernelOnly)/(avx512|avx2)' "$LOGS/cpu_bench.log" |
				awk '{o=$1; for (i=2;i<NF;i++) if ($(i+1) ~ /GFLOP\/cpu-s|of-peak/) o=o" "$i" "$(i+1); print o}' | tr '\n' ';' | cut -c1-600)"
		fi
	fi
fi
snapshot

# ------------------------------------------------------------ 6. optional
t=$(date +%s)
lim=$(left)
if ! command -v ncu >/dev/null 2>&1; then
	record ncu SKIPPED 0 "ncu not found"
elif [ "$lim" -lt 25 ]; then
	record ncu SKIPPED 0 "only ${lim}s left"
else
	timeout -k 5 "$((lim - 5))" ncu --clock-control none --kernel-name regex:quantize_d8 --launch-skip 1 --launch-count 1 \
		--section SpeedOfLight --section LaunchStats --section Occupancy \
		${TOOL_LAUNCH[@]+"${TOOL_LAUNCH[@]}"} "$BIN" -test.run '^$' -test.bench 'CUDAQuantizeResident/M=262144$' -test.benchtime 2x >"$LOGS/ncu_quantize.txt" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ] && grep -q 'quantize_d8' "$LOGS/ncu_quantize.txt"; then
		record ncu INFO "$(($(date +%s) - t))" "quantize_d8 at M=262144: $(grep -m3 -E 'Compute \(SM\) Throughput|Duration|SM Frequency' "$LOGS/ncu_quantize.txt" | tr -s ' ' | tr '\n' ';')"
	else
		record ncu SKIPPED "$(($(date +%s) - t))" "not run (exit $rc): $(grep -m1 -E 'ERR|rror' "$LOGS/ncu_quantize.txt" | cut -c1-160)"
	fi
fi
snapshot
t=$(date +%s)
lim=$(left)
if [ -x build/prep_cuda.test ] && [ "$lim" -ge 25 ]; then
	UNITOK_PREP_BENCH_DEVICE=cuda UNITOK_PREP_BENCH_CONFIG=1024,64,8,4096,16,256 UNITOK_PREP_BENCH_MB=512 \
		timeout -k 5 "$((lim - 5))" "${LAUNCH[@]}" build/prep_cuda.test -test.run '^$' -test.bench PrepEncode \
		-test.benchtime 1x -test.timeout "$((lim - 7))s" >"$LOGS/bench_prep.txt" 2>&1
	record prep INFO "$(($(date +%s) - t))" "exit $?: $(grep -m1 -E 'Benchmark' "$LOGS/bench_prep.txt" | tr -s ' ' | cut -c1-200)"
else
	record prep SKIPPED 0 "$([ -x build/prep_cuda.test ] && echo "only ${lim}s left" || echo 'no build/prep_cuda.test')"
fi

# ------------------------------------------------------------ verdict
if [ "$FAILED" -ne 0 ]; then
	VERDICT="FAIL"
	exit 1
elif [ "$INCOMPLETE" -ne 0 ]; then
	VERDICT="INCOMPLETE"
	exit 4
fi
VERDICT="PASS"
exit 0
