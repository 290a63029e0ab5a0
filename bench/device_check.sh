#!/usr/bin/env bash
# device_check.sh: the one prepared script for a GPU machine (DESIGN.md
# section 4). It compiles nothing: it needs the build/ directory made here by
# `make cuda-test-bin` (build/unitok_cuda.test, static cudart, driver loaded
# at run time) and the repository's testdata/ and bench/torch_reference.py.
#
#   bash bench/device_check.sh            # from the repository root
#
# Steps, each under its own timeout, all within a 470 s budget (later steps
# get what is left, optional ones are skipped when too little is):
#   1. the binary runs and sees the GPU
#   2. the CUDA tests: conformance against the PyTorch fixtures and against
#      the CPU engine (real widths, odd shapes, causal/full, cosine/L2)
#   3. compute-sanitizer memcheck and racecheck on a small case
#   4. the Go benchmarks (end to end and device-resident), and the data-prep
#      pipeline's end-to-end vs kernel-only throughput
#   5. bench/torch_reference.py bench (eager and torch.compile)
#   6. (if time is left) ncu SpeedOfLight of one encode's kernels
#   7. a table: op, unitok tokens/s, torch eager tokens/s, ratio,
#      torch.compile tokens/s, fraction of the FP32 FFMA ceiling
# Everything is logged under $OUT (default build/device_out); the table also
# goes to $OUT/table.md. Exit status: nonzero if the tests or a sanitizer
# failed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/device_out}
mkdir -p "$OUT"
BIN=build/unitok_cuda.test
STATUS=0
T0=$(date +%s)

DEADLINE=$((T0 + ${BUDGET_S:-470}))

step() { echo; echo "=== $* ($(( $(date +%s) - T0 ))s)"; }
# limit WANT: the smaller of WANT and the seconds left in the budget.
limit() {
	local left=$((DEADLINE - $(date +%s)))
	[ "$left" -lt 1 ] && left=1 # timeout 0 would mean no limit
	[ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

if [ ! -x "$BIN" ]; then
	echo "device_check: $BIN missing; run 'make cuda-test-bin' on the build machine and carry build/" >&2
	exit 2
fi

step "1. device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
timeout "$(limit 30)" "$BIN" -test.run 'TestCUDANoDeviceIsClean$' -test.v 2>&1 | tee "$OUT/device.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || STATUS=1
if [ -x build/unitok-cuda ]; then
	timeout 30 build/unitok-cuda --help >"$OUT/cli_help.txt" 2>&1
	echo "CLI build/unitok-cuda --help exit status $?"
fi

step "2. CUDA tests"
timeout "$(limit 120)" "$BIN" -test.run 'TestCUDA' -test.v -test.timeout 115s 2>&1 | tee "$OUT/tests.log" |
	grep -E '^(=== RUN|--- |\s+cuda_test|\s+conformance_test|PASS|FAIL|ok|panic)' | grep -v '=== RUN' | head -200
TEST_RC=${PIPESTATUS[0]}
echo "tests exit status $TEST_RC"
[ "$TEST_RC" -eq 0 ] || STATUS=1

step "3. compute-sanitizer"
if command -v compute-sanitizer >/dev/null 2>&1; then
	for tool in memcheck racecheck; do
		timeout "$(limit 60)" compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
			"$BIN" -test.run 'TestCUDASmall$' -test.timeout 58s >"$OUT/sanitizer_$tool.log" 2>&1
		rc=$?
		echo "compute-sanitizer $tool: exit status $rc"
		tail -n 4 "$OUT/sanitizer_$tool.log"
		[ "$rc" -eq 0 ] || STATUS=1
	done
else
	echo "compute-sanitizer not found: skipped"
fi

step "4. Go benchmarks"
timeout "$(limit 75)" "$BIN" -test.run '^$' -test.bench 'CUDA' -test.benchtime 20x -test.timeout 70s 2>&1 | tee "$OUT/go_bench.txt"

step "4b. data-prep pipeline on the GPU (end to end vs kernel only)"
if [ -x build/prep_cuda.test ]; then
	# Real widths, 512 MiB of synthetic feature shards; e2e/kernel >= 0.8 means
	# reading, copies and compute overlap.
	UNITOK_PREP_BENCH_DEVICE=cuda UNITOK_PREP_BENCH_CONFIG=1024,64,8,4096,16,256 UNITOK_PREP_BENCH_MB=512 \
		timeout "$(limit 60)" build/prep_cuda.test -test.run '^$' -test.bench PrepEncode -test.benchtime 1x -test.timeout 58s 2>&1 | tee "$OUT/prep_bench.txt"
else
	echo "build/prep_cuda.test missing: skipped"
fi

step "5. PyTorch reference"
if [ -f bench/torch_reference.py ]; then
	timeout "$(limit 150)" python3 bench/torch_reference.py bench --device cuda --config real --batch 64 --json "$OUT/torch.json" 2>&1 | tail -n 20 | tee "$OUT/torch.log"
else
	echo "bench/torch_reference.py not found: skipped"
fi

step "6. ncu"
if command -v ncu >/dev/null 2>&1 && [ "$(limit 45)" -ge 30 ]; then
	# One encode of 64 images: LayerNorm, 5 GEMMs, attention, 2 LayerNorms, quantize.
	timeout "$(limit 45)" ncu --section SpeedOfLight --launch-skip 10 --launch-count 10 \
		"$BIN" -test.run '^$' -test.bench 'CUDAEncodeResident$' -test.benchtime 1x >"$OUT/ncu_encode.txt" 2>&1
	echo "ncu exit status $? (report in $OUT/ncu_encode.txt)"
	grep -E '^\s+[a-z_]+.*\(|SM Throughput|Memory Throughput|Duration' "$OUT/ncu_encode.txt" | head -n 40
else
	echo "ncu skipped (not found, or under 30 s of budget left)"
fi

step "7. table"
python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
# Real config: C=1024, D=64, K=8, V=4096, d=8, H=16, N=256, full attention.
C, D, K, V, d, N = 1024, 64, 8, 4096, 8, 256
quant = K * V * d * 2                                     # 524,288 FLOP/token
def proj(i, o):                                           # GEMMs + attention, per token
    W = max(i, o)
    return 2 * (i * 3 * W + o * o + i * o + o * 4 * o + 2 * o * o) + 4 * N * W
flops = {"quantize": quant, "encode": proj(C, D) + quant, "decode": proj(D, C)}
CEIL = 67e12                                              # H200 FP32 FFMA, FLOP/s
go = {}
try:
    for line in open(os.path.join(out, "go_bench.txt")):
        m = re.match(r"BenchmarkCUDA(\w+?)-?\d*\s+\d+\s+.*?([\d.e+]+) tokens/s", line)
        if m:
            go[m.group(1)] = float(m.group(2))
except OSError:
    pass
torch = {}
try:
    torch = json.load(open(os.path.join(out, "torch.json")))
except (OSError, ValueError):
    pass
def f(v):
    return "-" if v is None else ("%.3g" % v)
rows = ["| op | unitok tokens/s (resident) | unitok tokens/s (end to end) | torch eager tokens/s | ratio | torch.compile tokens/s | fraction of FP32 FFMA ceiling |",
        "|---|---|---|---|---|---|---|"]
for op in ("quantize", "encode", "decode"):
    cap = op.capitalize()
    res, e2e = go.get(cap + "Resident"), go.get(cap)
    t = torch.get(op, {})
    eager, comp = t.get("eager_tokens_per_s"), t.get("compile_tokens_per_s")
    ratio = res / eager if res and eager else None
    frac = res * flops[op] / CEIL if res else None
    rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (op, f(res), f(e2e), f(eager), ("%.2fx" % ratio) if ratio else "-", f(comp), ("%.3f" % frac) if frac else "-"))
meta = torch.get("_meta", {})
gpu = meta.get("gpu", "")
try:
    gpu = gpu or open(os.path.join(out, "nvidia-smi.txt")).read().splitlines()[1].split(",")[0]
except (OSError, IndexError):
    pass
note = ("\nGPU: %s; torch %s; B=64 images x N=256 tokens, real config, full attention, fp32 (TF32 off). "
        "Resident = inputs already on the GPU (as torch's numbers); end to end = through the Go API with host copies. "
        "Ceiling: 67 TFLOP/s FP32 FFMA; FLOP/token quantize %d, encode %d, decode %d.\n") % (gpu, meta.get("torch", "?"), flops["quantize"], flops["encode"], flops["decode"])
if "EncodeCausal" in go:
    note += "Encode with causal attention, end to end: %.3g tokens/s.\n" % go["EncodeCausal"]
table = "\n".join(rows) + "\n" + note
print(table)
open(os.path.join(out, "table.md"), "w").write(table)
PY

step "done, status $STATUS"
exit $STATUS
