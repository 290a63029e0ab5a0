"""GEMM 256x1024x3072 (a @ W^T, float32, W in nn.Linear's (out, in) layout)
on the BLAS peers, one line of JSON: numpy (its BLAS found with
threadpoolctl, threads limited with it) and torch.matmul (torch.set_num_threads).
Best of --reps timed runs of --iters calls each, GFLOP/s by wall clock and
per CPU second of this process (what the cores did on a shared machine).

    python bench/gemm_peers.py --threads 1,2 --reps 5
"""
import argparse
import json
import time

import numpy as np


def best(fn, reps, iters, flop):
    fn()
    wall, cpu = 0.0, 0.0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            fn()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        wall = max(wall, flop * iters / dt / 1e9)
        if dc > 0:
            cpu = max(cpu, flop * iters / dc / 1e9)
    return {"gflops": wall, "gflops_per_cpu_s": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--shape", default="256,1024,3072")
    args = ap.parse_args()
    R, I, O = (int(v) for v in args.shape.split(","))
    flop = 2.0 * R * I * O
    rng = np.random.default_rng(1)
    a = rng.standard_normal((R, I), dtype=np.float32)
    w = rng.standard_normal((O, I), dtype=np.float32)
    out = {"shape": [R, I, O], "numpy": {}, "torch": {}}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        info = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        out["numpy_blas"] = ["%s %s (%s kernels)" % (d.get("internal_api"), d.get("version"), d.get("architecture")) for d in info]
    except ImportError:
        threadpool_limits = None
        out["numpy_blas"] = ["unknown (pip install threadpoolctl)"]
    for t in [int(v) for v in args.threads.split(",")]:
        if threadpool_limits is not None:
            with threadpool_limits(limits=t, user_api="blas"):
                out["numpy"][t] = best(lambda: a @ w.T, args.reps, args.iters, flop)
        else:
            out["numpy"][t] = best(lambda: a @ w.T, args.reps, args.iters, flop)
    try:
        import torch
        ta, tw = torch.from_numpy(a), torch.from_numpy(w)
        out["torch_version"] = torch.__version__
        for t in [int(v) for v in args.threads.split(",")]:
            torch.set_num_threads(t)
            with torch.no_grad():
                out["torch"][t] = best(lambda: torch.matmul(ta, tw.T), args.reps, args.iters, flop)
    except ImportError:
        pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
