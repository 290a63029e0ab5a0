#!/usr/bin/env bash
# CPU engine vs PyTorch on the same machine, in one run: quantize, encode and
# decode at the real widths (C=1024, D=64, K=8, V=4096, H=16, N=256), float32.
# Prints a markdown table (and writes it to $OUT_MD when set).
#   BATCH=2 ITERS=5 PYTHON=/usr/bin/python3 bench/cpu_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
B=${BATCH:-2}
ITERS=${ITERS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

GOEXPERIMENT=simd go build -o "$tmp/unitok" ./cmd/unitok
go build -o "$tmp/unitok-scalar" ./cmd/unitok
for causal in false true; do
	cflag=""; [ "$causal" = true ] && cflag="--causal"
	"$tmp/unitok" bench --device cpu --batch "$B" --iters "$ITERS" --op quantize,encode,decode $cflag --json >"$tmp/simd-$causal.json"
	"$tmp/unitok-scalar" bench --device cpu --batch "$B" --iters "$ITERS" --op quantize,encode,decode $cflag --json >"$tmp/scalar-$causal.json"
	"$PY" bench/torch_reference.py bench --device cpu --config real --batch "$B" --iters "$ITERS" $cflag --json "$tmp/torch-$causal.json" >/dev/null
done

"$PY" - "$tmp" "$B" <<'PYEOF' | tee "${OUT_MD:-/dev/null}"
import json, os, platform, subprocess, sys
tmp, B = sys.argv[1], sys.argv[2]
def load(p):
    with open(os.path.join(tmp, p)) as f:
        return json.load(f)
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
t0 = load("torch-false.json")["_meta"]
print("CPU: %s, %d cores; commit %s; torch %s; B=%s images x 256 tokens, fp32\n" % (cpu, os.cpu_count(), commit, t0["torch"], B))
print("| op | attention | unitok SIMD tok/s | unitok scalar tok/s | torch eager tok/s | torch.compile tok/s | SIMD / eager |")
print("|---|---|---:|---:|---:|---:|---:|")
for causal in ("false", "true"):
    u = {r["op"]: r for r in load("simd-%s.json" % causal)["results"]}
    s = {r["op"]: r for r in load("scalar-%s.json" % causal)["results"]}
    t = load("torch-%s.json" % causal)
    for op in ("quantize", "encode", "decode"):
        if causal == "true" and op == "quantize":
            continue
        ut, st = u[op]["tokens_per_s"], s[op]["tokens_per_s"]
        te, tc = t[op]["eager_tokens_per_s"], t[op].get("compile_tokens_per_s")
        print("| %s | %s | %.0f | %.0f | %.0f | %s | %.2f |" % (op, "causal" if causal == "true" else "full",
              ut, st, te, ("%.0f" % tc) if tc else "n/a", ut / te))
PYEOF
