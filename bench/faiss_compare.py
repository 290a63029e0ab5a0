#!/usr/bin/env python3
"""unitok's CPU codebook search against faiss-cpu's product quantizer, in one run.

Real widths: K=8 codebooks of V=4096 codewords, d=8 (faiss: ProductQuantizer(64, 8, 12),
dsub 8, ksub 4096), on the SAME normalized codebooks and latents:

  * unitok: `go test -bench BenchmarkQuantize` (cosine argmax; every argmax path the CPU
    has, 1 and 2 threads), and the codes it writes for the latents (bench/quantcase);
  * faiss: `pq.compute_codes` (plain, and after `sync_transposed_centroids`, which makes
    compute_code use the transposed-centroid kernel), and the fused path
    `compute_codes_with_assign_index` with an IndexFlatL2(8) assign index (per
    sub-quantizer it loads the 4096 centroids into the index and runs assign = knn k=1,
    the fused L2 kernel where faiss has one for the CPU).

faiss sees the latents with each 8-wide chunk normalized: on unit vectors
|z - e|^2 = 2 - 2 z.e, so L2 on normalized codebooks is unitok's cosine argmax (which
does not need z normalized). Codes may differ only where the top-two margin is within
float32 noise; the script checks that every difference is such a near-tie.

Timings interleave unitok and faiss, repeat --reps times and keep each one's best
(the machine may be shared); tokens per CPU-second are printed too. Ratios from one run.

  /work/venv/bin/python bench/faiss_compare.py [--m 65536] [--faiss-m 8192] [--reps 3]
"""
import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import faiss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def unpack_codes(codes, K, nbits):
    """faiss PQ codes (n, code_size) bytes, LSB-first bit packing -> (n, K) indices."""
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : K * nbits]
    w = (1 << np.arange(nbits)).astype(np.int64)
    return (bits.reshape(len(codes), K, nbits).astype(np.int64) * w).sum(axis=2).astype(np.int32)


def margins64(cb, z, K, rows=4096):
    """float64 cosine scores: (top1 index, top1 - top2) per (token, codebook), in row blocks."""
    zn = z / np.maximum(np.linalg.norm(z, axis=2, keepdims=True), 1e-12)
    best = np.empty(z.shape[:2], np.int64)
    gap = np.empty(z.shape[:2])
    for k in range(K):
        c = cb[k].astype(np.float64).T
        for r0 in range(0, len(z), rows):
            s = zn[r0:r0 + rows, k, :].astype(np.float64) @ c
            i1 = s.argmax(axis=1)  # first maximum: the lowest index on ties
            ar = np.arange(len(s))
            top = s[ar, i1]
            s[ar, i1] = -np.inf
            best[r0:r0 + rows, k] = i1
            gap[r0:r0 + rows, k] = top - s.max(axis=1)
    return best, gap


def go_bench(testbin, path, threads, benchtime):
    out = subprocess.run(
        [testbin, "-test.run", "^$", "-test.bench", "^BenchmarkQuantize$/path=%s/threads=%d$" % (path, threads),
         "-test.benchtime", benchtime],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    m = re.search(r"([0-9.e+]+) tokens/s", out)
    c = re.search(r"([0-9.e+]+) tokens/cpu-s", out)
    if not m:
        raise RuntimeError("no tokens/s in go test output:\n" + out)
    return float(m.group(1)), (float(c.group(1)) if c else float("nan"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=65536, help="latent rows for unitok (and for faiss unless --faiss-m)")
    ap.add_argument("--faiss-m", type=int, default=0, help="rows per faiss timing run (default: --m)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--benchtime", default="3x", help="go test -benchtime per unitok run")
    ap.add_argument("--paths", default="", help="unitok argmax paths to time: comma list or 'all' (default: the start-up one)")
    ap.add_argument("--json", default="", help="also write the results here")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    fm = a.faiss_m or a.m

    tmp = tempfile.mkdtemp(prefix="faiss_compare.")
    subprocess.run(["go", "run", "./bench/quantcase", "-out", tmp, "-m", str(a.m)], cwd=ROOT, check=True)
    testbin = os.path.join(tmp, "unitok.test")
    subprocess.run(["go", "test", "-c", "-o", testbin, "."], cwd=ROOT, check=True)
    meta = json.load(open(os.path.join(tmp, "meta.json")))
    K, V, d, M = meta["K"], meta["V"], meta["d"], meta["M"]
    cb = np.fromfile(os.path.join(tmp, "codebooks.f32"), np.float32).reshape(K, V, d)
    z = np.fromfile(os.path.join(tmp, "latents.f32"), np.float32).reshape(M, K, d)
    ucodes = np.fromfile(os.path.join(tmp, "codes.i32"), np.int32).reshape(M, K)
    zn = np.ascontiguousarray((z / np.maximum(np.linalg.norm(z, axis=2, keepdims=True), 1e-12)).reshape(M, K * d))

    nbits = int(np.log2(V))
    pq = faiss.ProductQuantizer(K * d, K, nbits)
    faiss.copy_array_to_vector(cb.ravel(), pq.centroids)
    assign = faiss.IndexFlatL2(d)

    def compute_codes(x):
        pq.assign_index = None
        pq.clear_transposed_centroids()
        return pq.compute_codes(x)

    def compute_codes_transposed(x):
        pq.assign_index = None
        pq.sync_transposed_centroids()
        try:
            return pq.compute_codes(x)
        finally:
            pq.clear_transposed_centroids()

    def fused(x):
        pq.assign_index = assign
        out = np.empty((len(x), pq.code_size), np.uint8)
        try:
            pq.compute_codes_with_assign_index(faiss.swig_ptr(x), faiss.swig_ptr(out), len(x))
        finally:
            pq.assign_index = None
        return out

    faiss_ops = [("faiss compute_codes", compute_codes),
                 ("faiss compute_codes (transposed centroids)", compute_codes_transposed),
                 ("faiss compute_codes_with_assign_index (IndexFlatL2, fused)", fused)]

    # Agreement on the first fm rows (every faiss op), near-ties explained by float64 margins.
    ref, gap = margins64(cb, z[:fm], K)
    print("CPU: %s; cores %d; faiss %s (%s); unitok argmax path at start-up: %s" % (
        platform.processor() or platform.machine(), os.cpu_count(), faiss.__version__,
        faiss.get_compile_options(), meta["argmax_path"]))
    u = ucodes[:fm]
    n_diff_oracle = int((u != ref).sum())
    print("unitok vs float64 oracle on %d x %d codes: %d differ, largest margin among them %.2g" % (
        fm, K, n_diff_oracle, gap[u != ref].max() if n_diff_oracle else 0.0))
    agreement = {}
    for name, fn in faiss_ops:
        f = unpack_codes(fn(zn[:fm]), K, nbits)
        diff = f != u
        worst = gap[diff].max() if diff.any() else 0.0
        agreement[name] = {"differ": int(diff.sum()), "of": int(diff.size), "max_margin_of_differing": float(worst)}
        print("%s vs unitok: %d of %d codes differ, largest float64 margin among them %.2g" % (
            name, diff.sum(), diff.size, worst))
        if diff.any() and worst > 1e-5:
            print("  ERROR: a code differs with a margin above float32 noise", file=sys.stderr)
            sys.exit(1)

    upaths = meta["argmax_paths"] if a.paths == "all" else (a.paths.split(",") if a.paths else [meta["argmax_path"]])

    results = {}
    for th in threads:
        faiss.omp_set_num_threads(th)
        best = {}
        for rep in range(a.reps):
            for p in upaths:
                w, c = go_bench(testbin, p, th, a.benchtime)
                k = "unitok " + p
                best[k] = (max(best.get(k, (0, 0))[0], w), max(best.get(k, (0, 0))[1], c))
            for name, fn in faiss_ops:
                x = zn[:fm]
                c0, t0 = cpu_seconds(), time.perf_counter()
                fn(x)
                w, c = fm / (time.perf_counter() - t0), fm / max(cpu_seconds() - c0, 1e-9)
                best[name] = (max(best.get(name, (0, 0))[0], w), max(best.get(name, (0, 0))[1], c))
        results[th] = best

    print()
    print("| threads | implementation | tokens/s (best of %d) | tokens per CPU-s |" % a.reps)
    print("|---:|---|---:|---:|")
    for th in threads:
        for k, (w, c) in results[th].items():
            print("| %d | %s | %.0f | %.0f |" % (th, k, w, c))
    print()
    for th in threads:
        r = results[th]
        for p in upaths:
            uw = r["unitok " + p][0]
            print("threads=%d: unitok %s / faiss fused assign = %.2fx; / faiss compute_codes = %.2fx; "
                  "/ compute_codes transposed = %.2fx" % (
                      th, p, uw / r[faiss_ops[2][0]][0], uw / r[faiss_ops[0][0]][0], uw / r[faiss_ops[1][0]][0]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "faiss": faiss.__version__, "faiss_options": faiss.get_compile_options(),
                       "faiss_m": fm, "agreement": agreement,
                       "results": {str(t): {k: {"tokens_per_s": v[0], "tokens_per_cpu_s": v[1]}
                                            for k, v in r.items()} for t, r in results.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
