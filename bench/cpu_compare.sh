#!/usr/bin/env bash
# The CPU engine against its peers on this machine, in one run, same threads:
#  1. the FMA peak of one core per vector level (independent VFMADD231PS, no
#     loads) and kern's GEMM 256x1024x3072 (the encode QKV shape) on one core
#     and on every thread, each REPS times: best GFLOP/s and its fraction of
#     the peak measured in the same run;
#  2. the same GEMM on numpy's BLAS (OpenBLAS; its kernel named by
#     threadpoolctl) and torch.matmul;
#  3. quantize, encode and decode at the real widths (C=1024, D=64, K=8,
#     V=4096, H=16, N=256, fp32, B images) against UniTok's AttnProjection in
#     PyTorch eager and torch.compile (bench/torch_reference.py bench), in
#     ROUNDS interleaved rounds (unitok then PyTorch each round): the best of
#     each side over the rounds, and the median of the per-round ratios,
#     with unitok's GFLOP/s and its fraction of the run's FMA peak x threads;
#  4. quantize against faiss-cpu's product quantizer, fused assign path and
#     compute_codes, same normalized codebooks, codes checked equal
#     (bench/faiss_compare.py);
#  5. with UNITOK_SRC=/path/to/UniTok (a checkout of UniTok's code): image
#     tokenize and detokenize at vitamin_large, batch 1, against UniTok's own
#     modules in PyTorch eager, interleaved rounds, with the peak RSS of each
#     process (bench/image_compare.sh).
# Rates are by wall clock and, where shown, per CPU second of the measuring
# threads: on a shared machine the latter is what the cores did.
# Prints a markdown report (and writes it to $OUT_MD when set).
#   BATCH=8 ITERS=5 REPS=5 ROUNDS=3 THREADS=2 PYTHON=/work/venv/bin/python bench/cpu_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
B=${BATCH:-8}
ITERS=${ITERS:-5}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go test -run '^$' -bench '^Benchmark(FMAPeak|KernelOnly|Gemm)$' -count "$REPS" -cpu "$THREADS" \
	./internal/cpu/kern >"$tmp/kern.txt"
# numpy's OpenBLAS: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines
# for old builds) would pin a slower kernel, so this command alone drops them.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/gemm_peers.py --threads "1,$THREADS" --reps "$REPS" >"$tmp/peers.json"

go build -o "$tmp/unitok" ./cmd/unitok
for causal in false true; do
	cflag=""; [ "$causal" = true ] && cflag="--causal"
	UNITOK_CPU_KERNEL=generic "$tmp/unitok" bench --device cpu --threads "$THREADS" --batch "$B" --iters "$ITERS" --op quantize,encode,decode $cflag --json >"$tmp/generic-$causal.json"
	# Rounds alternate the two sides: this machine's speed drifts between
	# minutes, and both should see the same drift.
	for r in $(seq "$ROUNDS"); do
		"$tmp/unitok" bench --device cpu --threads "$THREADS" --batch "$B" --iters "$ITERS" --op quantize,encode,decode $cflag --json >"$tmp/asm-$causal-$r.json"
		OMP_NUM_THREADS="$THREADS" "$PY" bench/torch_reference.py bench --device cpu --config real --batch "$B" --iters "$ITERS" $cflag --json "$tmp/torch-$causal-$r.json" >/dev/null
	done
done

"$PY" - "$tmp" "$B" "$THREADS" "$REPS" "$ROUNDS" <<'PYEOF' | tee "${OUT_MD:-/dev/null}"
import json, os, re, statistics, subprocess, sys
tmp, B, T, reps, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def load(p):
    with open(os.path.join(tmp, p)) as f:
        return json.load(f)
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
    load1 = open("/proc/loadavg").read().split()[0]
except OSError:
    load1 = "?"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

# go test -bench lines: name, then "value unit" pairs; keep the best of each.
best = {}
for line in open(os.path.join(tmp, "kern.txt")):
    m = re.match(r"^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+(.*)$", line)
    if not m:
        continue
    f = m.group(2).split()
    d = best.setdefault(m.group(1), {})
    for v, u in zip(f[0::2], f[1::2]):
        if u != "ns/op":
            d[u] = max(d.get(u, 0.0), float(v))
levels = [k.split("/")[1] for k in best if k.startswith("FMAPeak/")]
peers = load("peers.json")
t0 = load("torch-false-1.json")["_meta"]
print("CPU: %s, %d cores, load average %s while measuring; commit %s; %d threads; best of %s runs\n"
      % (cpu, os.cpu_count(), load1, commit, T, reps))
print("FMA peak per core (GFLOP/s by wall clock; per CPU second):\n")
print("| level | wall | per CPU s |")
print("|---|---:|---:|")
for l in levels:
    d = best["FMAPeak/" + l]
    print("| %s | %.1f | %.1f |" % (l, d.get("GFLOP/s", 0), d.get("GFLOP/cpu-s", 0)))
print("\nGEMM 256x1024x3072 fp32, GFLOP/s (best; fraction of the same level's per-core FMA peak, x threads):\n")
print("| implementation | threads | wall | per CPU s | of peak |")
print("|---|---:|---:|---:|---:|")
for k, d in best.items():
    m = re.match(r"Gemm/(\w+)/threads=(\d+)", k)
    if not m:
        continue
    l, th = m.group(1), int(m.group(2))
    pk = best.get("FMAPeak/" + l, {}).get("GFLOP/cpu-s")
    frac = ("%.0f%%" % (100 * d["GFLOP/cpu-s"] / pk)) if pk and "GFLOP/cpu-s" in d else "-"
    print("| unitok kern %s | %d | %.1f | %.1f | %s |" % (l, th, d.get("GFLOP/s", 0), d.get("GFLOP/cpu-s", 0), frac))
for k, d in best.items():
    if k.startswith("KernelOnly/"):
        l = k.split("/")[1]
        pk = best.get("FMAPeak/" + l, {}).get("GFLOP/cpu-s")
        print("| kern %s microkernel alone (L1) | 1 | - | %.1f | %s |" % (l, d["GFLOP/cpu-s"], ("%.0f%%" % (100 * d["GFLOP/cpu-s"] / pk)) if pk else "-"))
for name, key in (("numpy (%s)" % "; ".join(peers.get("numpy_blas", [])), "numpy"), ("torch.matmul %s" % peers.get("torch_version", ""), "torch")):
    for th, d in sorted(peers.get(key, {}).items(), key=lambda x: int(x[0])):
        print("| %s | %s | %.1f | %.1f | |" % (name, th, d["gflops"], d["gflops_per_cpu_s"]))

# FLOP per token at the real widths (bench/device_table.py's count: the
# GEMMs, attention (half of it causal), and quantize's 2*K*V*d in encode).
sys.path.insert(0, "bench")
from device_table import proj_flops, QUANT, C, D
flops = {("quantize", "false"): QUANT, ("encode", "false"): proj_flops(C, D) + QUANT,
         ("encode", "true"): proj_flops(C, D, True) + QUANT, ("decode", "false"): proj_flops(D, C),
         ("decode", "true"): proj_flops(D, C, True)}
top = max((l for l in levels), key=lambda l: best["FMAPeak/" + l].get("GFLOP/s", 0), default=None)
peak = best["FMAPeak/" + top].get("GFLOP/s", 0) * T if top else 0
print("\nProjections at real widths, B=%s images x 256 tokens, fp32, tokens/s, best of %d interleaved rounds "
      "(ratios: of the bests, and the median of the per-round ratios); GFLOP/s of unitok's best "
      "(FLOP per token: quantize %d, encode %d / %d causal, decode %d / %d causal) and its fraction of "
      "the %s FMA peak above x %d threads (%.0f GFLOP/s); torch %s:\n"
      % (B, rounds, flops[("quantize", "false")], flops[("encode", "false")], flops[("encode", "true")],
         flops[("decode", "false")], flops[("decode", "true")], top, T, peak, t0["torch"]))
print("| op | attention | unitok (asm) | GFLOP/s (of peak) | unitok generic | torch eager | torch.compile | asm / eager (median) | asm / compile (median) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
def ratio(a, b):
    return ("%.2f" % (a / b)) if b else "n/a"
for causal in ("false", "true"):
    us = [{r["op"]: r for r in load("asm-%s-%d.json" % (causal, i))["results"]} for i in range(1, rounds + 1)]
    ts = [load("torch-%s-%d.json" % (causal, i)) for i in range(1, rounds + 1)]
    s = {r["op"]: r for r in load("generic-%s.json" % causal)["results"]}
    for op in ("quantize", "encode", "decode"):
        if causal == "true" and op == "quantize":
            continue
        ur = [u[op]["tokens_per_s"] for u in us]
        er = [t[op]["eager_tokens_per_s"] for t in ts]
        cr = [t[op].get("compile_tokens_per_s") or 0 for t in ts]
        ut, te, tc = max(ur), max(er), max(cr)
        me = statistics.median(a / b for a, b in zip(ur, er))
        mc = statistics.median(a / b for a, b in zip(ur, cr)) if all(cr) else 0
        gf = ut * flops[(op, causal)] / 1e9
        print("| %s | %s | %.0f | %.1f (%s) | %.0f | %.0f | %s | %s (%.2f) | %s (%s) |" % (op, "causal" if causal == "true" else "full",
              ut, gf, ("%.0f%%" % (100 * gf / peak)) if peak else "-", s[op]["tokens_per_s"], te,
              ("%.0f" % tc) if tc else "n/a", ratio(ut, te), me, ratio(ut, tc), ("%.2f" % mc) if mc else "n/a"))
PYEOF

{
	echo
	echo "## quantize vs faiss-cpu"
	echo
	"$PY" bench/faiss_compare.py --m 65536 --reps 3 --threads "1,$THREADS"
} | tee -a "${OUT_MD:-/dev/null}"

if [ -n "${UNITOK_SRC:-}" ]; then
	echo | tee -a "${OUT_MD:-/dev/null}"
	BATCH=1 REPS="${IMAGE_REPS:-3}" THREADS="$THREADS" PYTHON="$PY" OUT_MD="$tmp/images.md" bench/image_compare.sh
	cat "$tmp/images.md" >>"${OUT_MD:-/dev/null}"
fi
