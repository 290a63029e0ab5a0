#!/usr/bin/env bash
# Images in and out at vitamin_large (UniTok-Large's encoder and decoder and
# the real core, synthetic weights): unitok's CPU engine against UniTok's own
# modules in PyTorch eager (bench/torch_image_reference.py bench), same CPU,
# same threads, BATCH images per call. REPS rounds, each one unitok process
# then one PyTorch process, so both see the same machine; per op it prints
# the best and median images/s and CPU seconds per image of each, their
# ratio, and each process's peak RSS. A markdown report on stdout (and in
# $OUT_MD when set).
#   UNITOK_SRC=/path/to/UniTok PYTHON=/work/venv/bin/python BATCH=1 REPS=3 THREADS=2 bench/image_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${UNITOK_SRC:?set UNITOK_SRC to a checkout of the UniTok code (models, utils, open_clip)}"
PY=${PYTHON:-python3}
B=${BATCH:-1}
REPS=${REPS:-3}
ITERS=${ITERS:-2}
THREADS=${THREADS:-$(nproc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go test -c -o "$tmp/unitok.test" .
for r in $(seq "$REPS"); do
	UNITOK_BENCH_IMAGES="$B" /usr/bin/time -f "rss %M" -o "$tmp/go-$r.rss" \
		"$tmp/unitok.test" -test.run '^$' -test.bench 'BenchmarkImage(Tokenize|Detokenize)Large' \
		-test.benchtime "${ITERS}x" -test.cpu "$THREADS" >"$tmp/go-$r.txt"
	OMP_NUM_THREADS="$THREADS" /usr/bin/time -f "rss %M" -o "$tmp/torch-$r.rss" \
		"$PY" bench/torch_image_reference.py bench --unitok "$UNITOK_SRC" --model vitamin_large \
		--batch "$B" --threads "$THREADS" --iters "$ITERS" 2>/dev/null >"$tmp/torch-$r.json"
done

"$PY" - "$tmp" "$REPS" "$B" "$THREADS" <<'PYEOF' | tee "${OUT_MD:-/dev/null}"
import json, re, statistics, sys, os, platform
tmp, reps, B, th = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
go = {"tokenize": [], "detokenize": []}
pt = {"tokenize": [], "detokenize": []}
rss = {"unitok": [], "torch": []}
for r in range(1, reps + 1):
    for line in open(os.path.join(tmp, "go-%d.txt" % r)):
        m = re.match(r"BenchmarkImage(Tokenize|Detokenize)Large\S*\s+\d+\s+\d+ ns/op\s+([\d.]+) cpu-s/image\s+([\d.]+) images/s", line)
        if m:
            go[m.group(1).lower()].append((float(m.group(3)), float(m.group(2))))
    for line in open(os.path.join(tmp, "torch-%d.json" % r)):
        if line.startswith("{"):
            d = json.loads(line)
            pt[d["op"]].append((d["images_per_s"], d["cpu_s_per_image"]))
    for who, f in (("unitok", "go-%d.rss"), ("torch", "torch-%d.rss")):
        for line in open(os.path.join(tmp, f % r)):
            if line.startswith("rss "):
                rss[who].append(int(line.split()[1]) / 1024)
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
print("## Images at vitamin_large: unitok vs UniTok's PyTorch eager\n")
print("%s, %s threads, batch %s, %d rounds (unitok then PyTorch each round); load average %s\n" %
      (cpu, th, B, reps, open("/proc/loadavg").read().split()[0]))
print("| op | unitok images/s best (median) | PyTorch eager images/s best (median) | ratio best (median) | unitok CPU s/image | PyTorch CPU s/image |")
print("|---|---:|---:|---:|---:|---:|")
for op in ("tokenize", "detokenize"):
    g, p = [x[0] for x in go[op]], [x[0] for x in pt[op]]
    if not g or not p:
        print("| %s | missing | | | | |" % op)
        continue
    gc, pc = min(x[1] for x in go[op]), min(x[1] for x in pt[op])
    print("| %s | %.3f (%.3f) | %.3f (%.3f) | %.2fx (%.2fx) | %.2f | %.2f |" % (
        op, max(g), statistics.median(g), max(p), statistics.median(p),
        max(g) / max(p), statistics.median(g) / statistics.median(p), gc, pc))
print("\nPeak RSS per process (tokenize and detokenize in one process, model loaded once): unitok %.0f MiB, PyTorch %.0f MiB" %
      (max(rss["unitok"]), max(rss["torch"])))
PYEOF
