#!/usr/bin/env python3
"""device_table.py LOGDIR VERDICT: the summary table of bench/device_check.sh.

Reads what the script left in LOGDIR (steps.tsv, host.txt, device.log, the
Go benchmark outputs bench_*.txt and bench_times.txt, torch.json, the GPU
telemetry telemetry.jsonl and nvsmi.csv) and prints markdown: the verdict,
the steps, and one row per measured figure with the SM clock and throttle
reasons seen during it and the fraction of the FP32 FMA peak at that clock.
Standard library only; missing inputs leave '-' (never an error).
"""
import json
import os
import re
import statistics
import sys
import time

# Real config: C=1024, D=64, K=8, V=4096, d=8, H=16, N=256, full attention.
C, D, K, V, d, N = 1024, 64, 8, 4096, 8, 256
FP32_LANES_PER_SM = 128  # FP32 FMA units per SM on Hopper (and Ampere GA100: 64)


def proj_flops(i, o, causal=False):
    """FLOP per token of one AttnProjection (GEMMs + attention)."""
    w = max(i, o)
    gemm = 2 * (i * 3 * w + o * o + i * o + o * 4 * o + 2 * o * o)
    att = 4 * N * w
    return gemm + (att / 2 if causal else att)


QUANT = 2 * K * V * d
FLOPS = {"quantize": QUANT, "encode": proj_flops(C, D) + QUANT, "decode": proj_flops(D, C),
         "encode (causal)": proj_flops(C, D, True) + QUANT}

THROTTLE_BITS = [(0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"),
                 (0x8, "hw_slowdown"), (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"),
                 (0x40, "hw_thermal_slowdown"), (0x80, "hw_power_brake_slowdown"),
                 (0x100, "display_clock_setting")]


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def go_benchmarks(logdir):
    """{(kind, op, size): {unit: value}} from bench_*.txt; kind resident/goapi."""
    out = {}
    for name in sorted(os.listdir(logdir)):
        if not (name.startswith("bench_") and name.endswith(".txt")) or name == "bench_times.txt":
            continue
        for line in read(os.path.join(logdir, name)).splitlines():
            m = re.match(r"^Benchmark(CUDA\w+)/(M|B)=(\d+)(?:-\d+)?\s+\d+\s+(.*)$", line)
            if not m:
                continue
            fn, size, rest = m.group(1), int(m.group(3)), m.group(4)
            vals = {}
            for v, u in re.findall(r"([-+\d.eE]+)\s+(\S+)", rest):
                try:
                    vals[u] = float(v)
                except ValueError:
                    pass
            kind = "resident" if fn.endswith("Resident") else "goapi"
            op = fn[len("CUDA"):].replace("Resident", "")
            op = {"Quantize": "quantize", "Encode": "encode", "Decode": "decode",
                  "EncodeCausal": "encode (causal)"}.get(op, op)
            vals["_name"] = "Benchmark%s/%s=%d" % (fn, m.group(2), size)
            out[(kind, op, size)] = vals
    return out


def bench_windows(logdir):
    """{benchmark name: (start_s, end_s)}, the last (reported) run of each."""
    w = {}
    for line in read(os.path.join(logdir, "bench_times.txt")).splitlines():
        p = line.split()
        if len(p) == 4:
            w[p[0]] = (int(p[2]) / 1e9, int(p[3]) / 1e9)
    return w


def samples(logdir):
    """[(t, sm_mhz, max_mhz, [reasons], power_w, temp_c, source)]."""
    out = []
    for line in read(os.path.join(logdir, "telemetry.jsonl")).splitlines():
        try:
            r = json.loads(line)
            g = r["devices"]["gpus"][0]
            out.append((float(r["t"]), g.get("sm_clock_mhz"), g.get("max_sm_clock_mhz"),
                        list(g.get("throttle_reasons") or []), g.get("power_w"), g.get("temperature_c"), "nvml"))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    if out:
        return out
    for line in read(os.path.join(logdir, "nvsmi.csv")).splitlines():
        if line.startswith("#"):
            continue
        p = [x.strip() for x in line.split(",")]
        if len(p) < 8:
            continue
        try:
            ts, frac = p[0].split(".") if "." in p[0] else (p[0], "0")
            t = time.mktime(time.strptime(ts, "%Y/%m/%d %H:%M:%S")) + float("0." + frac)
            bits = int(p[7], 16)
            reasons = [n for b, n in THROTTLE_BITS if bits & b]
            out.append((t, float(p[1]), float(p[2]), reasons, float(p[4]) if p[4] not in ("", "[N/A]") else None,
                        float(p[5]), "nvidia-smi"))
        except (ValueError, IndexError):
            continue
    return out


def during(smp, window):
    """(median MHz, min, max, reasons, n) of the samples in window (or nearest)."""
    if not smp or not window:
        return None
    a, b = window
    sel = [s for s in smp if a - 0.25 <= s[0] <= b + 0.25 and s[1]]
    if not sel:
        near = min(smp, key=lambda s: min(abs(s[0] - a), abs(s[0] - b)))
        if min(abs(near[0] - a), abs(near[0] - b)) > 2.5 or not near[1]:
            return None
        sel = [near]
    mhz = [s[1] for s in sel]
    reasons = sorted(set(r for s in sel for r in s[3] if r not in ("gpu_idle", "none", "None")))
    return statistics.median(mhz), min(mhz), max(mhz), reasons, len(sel)


def f3(v):
    return "-" if v is None else "%.3g" % v


def main():
    logdir, verdict = sys.argv[1], sys.argv[2]
    host = read(os.path.join(logdir, "host.txt"))
    dev = read(os.path.join(logdir, "device.log"))
    m = re.search(r"cuda:0 (.*?) \(sm_(\d+), (\d+) SMs", dev)
    gpu, sms = (m.group(1), int(m.group(3))) if m else (None, None)
    torch = {}
    try:
        with open(os.path.join(logdir, "torch.json")) as f:
            torch = json.load(f)
    except (OSError, ValueError):
        pass
    meta = torch.get("_meta", {})
    sms = sms or meta.get("multiprocessors")
    gpu = gpu or meta.get("gpu")
    smp = samples(logdir)
    go = go_benchmarks(logdir)
    win = bench_windows(logdir)
    tr = {(r.get("op"), r.get("size")): r for r in torch.get("runs", [])}

    print("# unitok device check: %s\n" % verdict)
    nvq = read(os.path.join(logdir, "nvidia-smi-query.csv")).strip().splitlines()
    print("- GPU: %s; %s SMs; nvidia-smi: %s" % (gpu or "?", sms or "?", nvq[1] if len(nvq) > 1 else "-"))
    for key in ("build:", "launch:", "glibc:", "date:"):
        for line in host.splitlines():
            if line.startswith(key):
                print("- " + line)
    print("- telemetry: %s%s" % (read(os.path.join(logdir, "telemetry_status.txt"), "not started").strip(),
                                 "; %d samples (%s)" % (len(smp), smp[0][6]) if smp else "; no samples"))
    print("- torch: %s, %s" % (meta.get("torch", "-"), meta.get("timing", "not run")))
    print()
    print("| step | result | s | note |")
    print("|---|---|---|---|")
    for line in read(os.path.join(logdir, "steps.tsv")).splitlines():
        p = line.split("\t")
        if len(p) == 4:
            print("| %s | %s | %s | %s |" % tuple(x.replace("|", "/") for x in p))
    print()
    print("Real widths (C=1024 D=64 K=8 V=4096 d=8 H=16, N=256 tokens per image, full attention unless said), "
          "fp32, TF32 off. Resident = inputs already on the GPU, CUDA events around 20 calls (as torch's numbers, "
          "which are medians of host-timed synchronized calls); Go API = from and to Go memory, host copies "
          "included. Peak = SMs x %d FP32 FMA lanes x 2 FLOP x the median SM clock sampled during the resident "
          "run. FLOP/token: quantize %d, encode %d, decode %d.\n" % (FP32_LANES_PER_SM, FLOPS["quantize"],
                                                                    FLOPS["encode"], FLOPS["decode"]))
    print("| op | size | unitok resident tok/s | unitok Go API tok/s | torch eager tok/s | resident / eager "
          "| torch.compile tok/s | SM MHz median (min-max, n) | throttle | FP32 peak at that clock TFLOP/s "
          "| resident fraction of peak | SM MHz during torch eager (throttle) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = sorted(set((op, size) for (_, op, size) in go) | set(tr),
                  key=lambda k: (["quantize", "encode", "encode (causal)", "decode"].index(k[0])
                                 if k[0] in ("quantize", "encode", "encode (causal)", "decode") else 9, k[1]))
    for op, size in keys:
        res = go.get(("resident", op, size), {})
        api = go.get(("goapi", op, size), {})
        t = tr.get((op, size), {})
        r_tok, a_tok = res.get("tokens/s"), api.get("tokens/s")
        eager, comp = t.get("eager_tokens_per_s"), t.get("compile_tokens_per_s")
        clk = during(smp, win.get(res.get("_name"))) or during(smp, win.get(api.get("_name")))
        peak = sms * FP32_LANES_PER_SM * 2 * clk[0] * 1e6 if (clk and sms) else None
        frac = r_tok * FLOPS.get(op, 0) / peak if (peak and r_tok) else None
        tclk = during(smp, t.get("eager_window"))
        sizes = ("M=%d" if op == "quantize" else "B=%d") % size
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            op, sizes, f3(r_tok), f3(a_tok), f3(eager), ("%.2fx" % (r_tok / eager)) if (r_tok and eager) else "-",
            f3(comp) if comp else ("failed" if "compile_error" in t and not t["compile_error"].startswith("not run")
                                   else "-"),
            ("%.0f (%.0f-%.0f, %d)" % (clk[0], clk[1], clk[2], clk[4])) if clk else "-",
            (", ".join(clk[3]) or "none") if clk else "-",
            ("%.1f" % (peak / 1e12)) if peak else "-", ("%.3f" % frac) if frac else "-",
            ("%.0f (%s)" % (tclk[0], ", ".join(tclk[3]) or "none")) if tclk else "-"))
    if not smp:
        print("\nNo clock samples: the fraction of peak is not given (no telemetry, no nvidia-smi).")


if __name__ == "__main__":
    main()
