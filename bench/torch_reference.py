#!/usr/bin/env python3
"""PyTorch reference for the UniTok tokenizer core (quant_proj -> multi-codebook
quantizer -> post_quant_proj), used to make the committed test fixtures and to
benchmark PyTorch against the Go/CUDA engines.

The modules below are written out from the math in shared/DESIGN.md section 1
(UniTok's AttnProjection / PlainAttention / GeGluMlp / VectorQuantizerM), with
the same state-dict key names as UniTok's checkpoints.  Attention is written
out explicitly (no F.scaled_dot_product_attention) so the script runs on
torch 1.13 (Debian's python3-torch) and on torch 2.x alike.  Dependencies:
torch and numpy only (safetensors files are written by hand).

All weights come from a deterministic synthetic generator that is bit-identical
to SynthTensor in synth.go, so the Go side can rebuild any model from
(config, seed) with SynthModel, and cross-check the small safetensors files.

Modes (run from the repository root):

  fixtures  Conformance fixtures, one directory per case:
              python3 bench/torch_reference.py fixtures --out testdata/fixtures
            Cases small_causal, small_full (model.safetensors + config.json) and
            real_causal, real_full, base_full (config.json only: regenerate the
            weights with SynthModel(cfg, seed)); --cases a,b makes only those.  Each holds features.npy (B,N,C) f32,
            latents.npy (B,N,D) f32, codes.npy (B,N,K) i32 (cosine),
            margins.npy (B,N,K) f32 (top1 - top2 cosine score, float64 math),
            l2_codes.npy (B,N,K) i32, l2_margins.npy (B,N,K) f32 (2nd-best minus
            best squared distance, float64 math), lookup.npy (B,N,D) f32 and
            decoded.npy (B,N,C) f32.

  sample    The shipped demo model and input:
              python3 bench/torch_reference.py sample --out testdata/sample
            model.safetensors (C=256 D=64 K=8 V=512 H=4, full attention, seed 7)
            and features.npy (4,256,256) f32.

  pth       PyTorch zip checkpoints shaped like UniTok's release:
              python3 bench/torch_reference.py pth --out testdata/pth
            small_fp32.pth, small_bf16.pth ({'trainer': {'unitok': sd, ...},
            'args': {...}}), small_bf16.safetensors (same BF16 core tensors),
            bare_state_dict.pth ('module.'-prefixed state dict only) and
            malicious.pth (data.pkl references os.system; NEVER load it).
            The core is small_causal's (C=48 D=16 K=4 V=100, seed 1); the
            checkpoints do not record heads/causal: use 4 heads, causal.

  unitok    Checkpoints written by torch.save from UniTok's OWN modules
            (models/vqvae.py AttnProjection, models/quant.py VectorQuantizerM,
            built as its UniTok class builds them: C // D heads), in UniTok's
            training-checkpoint layout, recording no num_heads:
              python3 bench/torch_reference.py unitok --unitok-src UNITOK \
                  --out testdata/unitok [--big-out /tmp/unitok_pth]
            c256 (C=256 D=64, committed) and, with --big-out, base (C=768) and
            large (C=1024) on the weights/features of fixtures base_full and
            real_full, checked to reproduce those fixtures' codes.

  selfcheck Re-reads everything above from disk (own safetensors/npy parsing)
            and recomputes it with an independent float64 NumPy implementation
            of DESIGN.md section 1; exits 1 on any mismatch:
              python3 bench/torch_reference.py selfcheck --out testdata

  bench     Throughput of PyTorch eager and torch.compile, float32, TF32 off:
              python3 bench/torch_reference.py bench --device cuda --config real \\
                  --batch 64 --json OUT.json [--causal]
              python3 bench/torch_reference.py bench --device cpu --config real --batch 1
            Ops: quantize (f_to_idx on (B*N, D) latents), encode (quant_proj +
            f_to_idx on (B,N,C) features), decode (idx_to_f + post_quant_proj).

testdata/pth/*_torch2.pth are the same `pth` output written under torch 2.x
(renamed by hand) to cover the newer zip layout; see bench/README_fixtures.md.

Everything is deterministic: rerunning fixtures/sample/pth reproduces the
committed files (the .pth zips may differ in torch-version specific
container details, not in tensor values).
"""

import argparse
import collections
import io
import json
import math
import os
import pickle
import statistics
import struct
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Synthetic weights (bit-identical to synth.go)
# ----------------------------------------------------------------------------

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(name):
    h = 14695981039346656037
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 1099511628211) & MASK64
    return h


def synth_uniform(seed, n):
    """n values 2*k/2^24 - 1, k = top 24 bits of splitmix64(seed + i*golden)."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = np.uint64(seed & MASK64) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.int64)
    return (2 * k - (1 << 24)).astype(np.float32) / np.float32(1 << 24)


def synth_tensor(name, shape, seed):
    """Same values as Go's SynthTensor(name, shape, seed), as float32 numpy."""
    n = int(np.prod(shape)) if len(shape) else 1
    if name.endswith("zero_k_bias"):
        return np.zeros(shape, dtype=np.float32)
    h = fnv1a64(name)
    v = synth_uniform(h ^ ((seed * GOLDEN) & MASK64), n)
    if name.startswith("quantizer."):
        pass
    elif len(shape) == 2:
        scale = np.float32(1.0 / math.sqrt(float(shape[1])))
        v = (v * scale).astype(np.float32)
    elif "norm" in name and name.endswith(".weight"):
        v = (np.float32(1.0) + (np.float32(0.1) * v).astype(np.float32)).astype(np.float32)
    else:
        v = (np.float32(0.02) * v).astype(np.float32)
    return v.reshape(shape)


# ----------------------------------------------------------------------------
# Modules (UniTok's names and math)
# ----------------------------------------------------------------------------


class PlainAttention(nn.Module):
    def __init__(self, in_dim, out_dim, num_heads, causal=False):
        super().__init__()
        w = max(in_dim, out_dim)
        self.in_dim, self.out_dim, self.num_heads = in_dim, out_dim, num_heads
        self.head_dim = w // num_heads
        self.causal = causal
        self.qkv = nn.Linear(in_dim, 3 * w, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(w))
        self.register_buffer("zero_k_bias", torch.zeros(w))
        self.v_bias = nn.Parameter(torch.zeros(w))
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x):
        B, N, _ = x.shape
        H, hd = self.num_heads, self.head_dim
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
        s = torch.matmul(q, k.transpose(-2, -1)) * (hd ** -0.5)
        if self.causal:
            mask = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(mask, float("-inf"))
        a = torch.matmul(torch.softmax(s, dim=-1), v)  # (B, H, N, hd)
        if self.in_dim > self.out_dim:
            a = a.mean(dim=1)  # (B, N, hd)
            if hd != self.out_dim:
                a = F.adaptive_avg_pool1d(a, self.out_dim)
        else:
            a = a.transpose(1, 2).reshape(B, N, H * hd)
        return self.proj(a)


class GeGluMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.w0 = nn.Linear(dim, hidden)
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = self.norm(x)
        return self.w2(F.gelu(self.w0(x), approximate="tanh") * self.w1(x))


class AttnProjection(nn.Module):
    def __init__(self, in_dim, out_dim, num_heads, causal=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim, eps=1e-5)
        self.attn = PlainAttention(in_dim, out_dim, num_heads, causal)
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm3 = nn.LayerNorm(in_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(out_dim, eps=1e-5)
        self.mlp = GeGluMlp(out_dim, 2 * out_dim)

    def forward(self, x):
        x = self.proj(self.norm3(x)) + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Codebook(nn.Module):
    def __init__(self, V, d):
        super().__init__()
        self.codebook = nn.Embedding(V, d)


class Quantizer(nn.Module):
    """VectorQuantizerM inference paths: f_to_idx (cosine), L2, idx_to_f."""

    def __init__(self, K, V, d):
        super().__init__()
        self.K, self.V, self.d = K, V, d
        self.codebooks = nn.ModuleList([Codebook(V, d) for _ in range(K)])

    def f_to_idx(self, z):  # (..., D) -> (..., K) int64
        chunks = z.split(self.d, dim=-1)
        out = []
        for i, cb in enumerate(self.codebooks):
            zi = F.normalize(chunks[i], dim=-1)
            e = F.normalize(cb.codebook.weight, dim=1)
            out.append(torch.argmax(torch.matmul(zi, e.t()), dim=-1))
        return torch.stack(out, dim=-1)

    def idx_to_f(self, codes):  # (..., K) -> (..., D)
        out = []
        for i, cb in enumerate(self.codebooks):
            e = F.normalize(cb.codebook.weight, dim=1)
            out.append(F.embedding(codes[..., i], e))
        return torch.cat(out, dim=-1)


class Core(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, D, K, V, H = (cfg["in_dim"], cfg["latent_dim"], cfg["num_codebooks"],
                         cfg["codebook_size"], cfg["num_heads"])
        causal = bool(cfg["causal"])
        self.quant_proj = AttnProjection(C, D, H, causal)
        self.quantizer = Quantizer(K, V, D // K)
        self.post_quant_proj = AttnProjection(D, C, H, causal)

    def core_state_dict(self):
        return collections.OrderedDict(
            (k, v) for k, v in self.state_dict().items())


def make_core(cfg, seed, device="cpu"):
    m = Core(cfg)
    sd = m.state_dict()
    new = collections.OrderedDict()
    for name, t in sd.items():
        new[name] = torch.from_numpy(synth_tensor(name, list(t.shape), seed))
    m.load_state_dict(new)
    return m.to(device).eval()


# ----------------------------------------------------------------------------
# File writers
# ----------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
              torch.int64: "I64", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata=None):
    header = {}
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # align data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


# ----------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------

CASES = [
    dict(name="small_causal", in_dim=48, latent_dim=16, num_codebooks=4, codebook_size=100,
         num_heads=4, causal=True, B=2, N=7, seed=1, weights=True),
    dict(name="small_full", in_dim=64, latent_dim=16, num_codebooks=2, codebook_size=37,
         num_heads=2, causal=False, B=3, N=5, seed=2, weights=True),
    dict(name="real_causal", in_dim=1024, latent_dim=64, num_codebooks=8, codebook_size=4096,
         num_heads=16, causal=True, B=1, N=17, seed=3, weights=False),
    dict(name="real_full", in_dim=1024, latent_dim=64, num_codebooks=8, codebook_size=4096,
         num_heads=16, causal=False, B=2, N=9, seed=4, weights=False),
    # vitamin_base width: UniTok's UniTok class gives it C // D = 768 // 64 = 12 heads.
    dict(name="base_full", in_dim=768, latent_dim=64, num_codebooks=8, codebook_size=4096,
         num_heads=12, causal=False, B=1, N=11, seed=5, weights=False),
]

CFG_KEYS = ("in_dim", "latent_dim", "num_codebooks", "codebook_size", "num_heads", "causal", "seed")


def cosine_margins(z, core):
    """top1 - top2 cosine score per chunk, float64, plus the float64 argmax."""
    q = core.quantizer
    chunks = z.double().split(q.d, dim=-1)
    margins, codes = [], []
    for i, cb in enumerate(q.codebooks):
        zi = F.normalize(chunks[i], dim=-1)
        e = F.normalize(cb.codebook.weight.double(), dim=1)
        s = torch.matmul(zi, e.t())
        top = torch.topk(s, 2, dim=-1)
        margins.append(top.values[..., 0] - top.values[..., 1])
        codes.append(torch.argmax(s, dim=-1))
    return torch.stack(margins, -1), torch.stack(codes, -1)


def l2_codes(z, core, dtype):
    """argmin_j |z_i - E_i[j]|^2 on raw codebooks (direct differences)."""
    q = core.quantizer
    chunks = z.to(dtype).split(q.d, dim=-1)
    codes, margins = [], []
    for i, cb in enumerate(q.codebooks):
        e = cb.codebook.weight.to(dtype)
        dist = ((chunks[i].unsqueeze(-2) - e) ** 2).sum(-1)  # (..., V)
        codes.append(torch.argmin(dist, dim=-1))
        top = torch.topk(dist, 2, dim=-1, largest=False)
        margins.append(top.values[..., 1] - top.values[..., 0])
    return torch.stack(codes, -1), torch.stack(margins, -1)


def run_fixtures(out, only=None):
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    summary = {}
    for case in CASES:
        if only and case["name"] not in only:
            continue
        d = os.path.join(out, case["name"])
        os.makedirs(d, exist_ok=True)
        cfg = {k: case[k] for k in CFG_KEYS}
        core = make_core(cfg, case["seed"])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")
        if case["weights"]:
            write_safetensors(os.path.join(d, "model.safetensors"), core.core_state_dict(),
                              {"num_heads": str(case["num_heads"]),
                               "causal": "true" if case["causal"] else "false",
                               "seed": str(case["seed"])})
        g = torch.Generator().manual_seed(1000 + case["seed"])
        x = torch.randn(case["B"], case["N"], case["in_dim"], generator=g, dtype=torch.float32)
        with torch.no_grad():
            lat = core.quant_proj(x)
            codes = core.quantizer.f_to_idx(lat)
            margins, codes64 = cosine_margins(lat, core)
            l2c, _ = l2_codes(lat, core, torch.float32)
            l2c64, l2m = l2_codes(lat, core, torch.float64)
            look = core.quantizer.idx_to_f(codes)
            dec = core.post_quant_proj(look)
        save_npy(os.path.join(d, "features.npy"), x.numpy().astype(np.float32))
        save_npy(os.path.join(d, "latents.npy"), lat.numpy().astype(np.float32))
        save_npy(os.path.join(d, "codes.npy"), codes.numpy().astype(np.int32))
        save_npy(os.path.join(d, "margins.npy"), margins.numpy().astype(np.float32))
        save_npy(os.path.join(d, "l2_codes.npy"), l2c.numpy().astype(np.int32))
        save_npy(os.path.join(d, "l2_margins.npy"), l2m.numpy().astype(np.float32))
        save_npy(os.path.join(d, "lookup.npy"), look.numpy().astype(np.float32))
        save_npy(os.path.join(d, "decoded.npy"), dec.numpy().astype(np.float32))
        s = dict(
            tokens=case["B"] * case["N"],
            min_margin=float(margins.min()),
            min_l2_margin=float(l2m.min()),
            cos_f32_vs_f64_disagree=int((codes != codes64).sum()),
            l2_f32_vs_f64_disagree=int((l2c != l2c64).sum()),
            distinct_codes=int(len(torch.unique(codes))),
        )
        summary[case["name"]] = s
        print(case["name"], json.dumps(s))
    return summary


# ----------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------

SAMPLE_CFG = dict(in_dim=256, latent_dim=64, num_codebooks=8, codebook_size=512,
                  num_heads=4, causal=False, seed=7)


def run_sample(out):
    os.makedirs(out, exist_ok=True)
    cfg = SAMPLE_CFG
    core = make_core(cfg, cfg["seed"])
    write_safetensors(os.path.join(out, "model.safetensors"), core.core_state_dict(),
                      {"num_heads": str(cfg["num_heads"]), "causal": "false",
                       "seed": str(cfg["seed"])})
    g = torch.Generator().manual_seed(2007)
    x = torch.randn(4, 256, cfg["in_dim"], generator=g, dtype=torch.float32)
    save_npy(os.path.join(out, "features.npy"), x.numpy())
    with torch.no_grad():
        codes = core.quantizer.f_to_idx(core.quant_proj(x))
    print("sample: codes", tuple(codes.shape), "distinct per codebook",
          [int(len(torch.unique(codes[..., i]))) for i in range(cfg["num_codebooks"])])


# ----------------------------------------------------------------------------
# pth
# ----------------------------------------------------------------------------

PTH_CFG = dict(in_dim=48, latent_dim=16, num_codebooks=4, codebook_size=100,
               num_heads=4, causal=True, seed=1)


class _Pwn:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _share_biases(sd, prefix):
    """Make q_bias and v_bias two views of one storage (v_bias at an offset)."""
    q, v = sd[prefix + ".q_bias"], sd[prefix + ".v_bias"]
    buf = torch.cat([q, v])
    sd[prefix + ".q_bias"] = buf[: q.numel()]
    sd[prefix + ".v_bias"] = buf[q.numel():]


def _pth_state_dict(dtype):
    core = make_core(PTH_CFG, PTH_CFG["seed"])
    sd = collections.OrderedDict()
    g = torch.Generator().manual_seed(77)
    # dummy encoder tensors first, as in the real file
    sd["encoder.pos_embed"] = torch.zeros(1, 1, 48)
    sd["encoder.blocks.0.norm1.weight"] = torch.ones(48)
    sd["encoder.blocks.0.attn.qkv.weight"] = torch.randn(144, 4, generator=g)
    enc_buf = torch.randn(96, generator=g)  # two tensors sharing one storage
    sd["encoder.blocks.0.mlp.w0.bias"] = enc_buf[:48]
    sd["encoder.blocks.0.mlp.w1.bias"] = enc_buf[48:]
    for k, t in core.core_state_dict().items():
        sd[k] = t.detach().clone().to(dtype)
    for i in range(PTH_CFG["num_codebooks"]):
        sd["quantizer.codebooks.%d.vocab_usage" % i] = torch.zeros(PTH_CFG["codebook_size"])
    _share_biases(sd, "quant_proj.attn")
    _share_biases(sd, "post_quant_proj.attn")
    sd["decoder.head.weight"] = torch.randn(12, 16, generator=g).to(dtype)
    sd["decoder.head.bias"] = torch.randn(12, generator=g).to(dtype)
    sd["decoder.stem.bn.num_batches_tracked"] = torch.tensor(123, dtype=torch.int64)
    sd["text_encoder.token_embedding.weight"] = torch.randn(20, 8, generator=g)
    sd["text_encoder.ln_final.weight"] = torch.ones(8)
    sd["fc_norm.weight"] = torch.ones(48)
    sd["projection.weight"] = torch.randn(8, 48, generator=g)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    # nn.Module.state_dict() returns an OrderedDict carrying a _metadata
    # attribute (pickled as BUILD state); keep that, as real checkpoints do.
    meta = collections.OrderedDict(core.state_dict()._metadata)
    for m in ("encoder", "encoder.blocks.0", "decoder", "text_encoder"):
        meta[m] = {"version": 1}
    sd._metadata = meta
    return sd


def _pth_args():
    K, V, D = PTH_CFG["num_codebooks"], PTH_CFG["codebook_size"], PTH_CFG["latent_dim"]
    return collections.OrderedDict({
        "vocab_size": K * V, "vocab_width": D, "num_codebooks": K, "quant_proj": "attn",
        "model": "tiny_test", "img_size": 256, "resize_ratio": 1.125, "vq_beta": 0.25,
        "le": 0.0, "e_temp": 0.01, "drop_path": 0.1, "grad_ckpt": False, "num_query": 0,
        "embed_dim": 8, "text_width": 8, "text_heads": 2, "text_layers": 1,
        "text_vocab_size": 20, "text_context_length": 77, "local_dir": None,
        "betas": [0.9, 0.95], "exp_name": "fixture",
    })


def run_pth(out):
    os.makedirs(out, exist_ok=True)
    for name, dtype in (("small_fp32.pth", torch.float32), ("small_bf16.pth", torch.bfloat16)):
        sd = _pth_state_dict(dtype)
        ckpt = {
            "trainer": {
                "config": {"step": 0, "note": "tiny test"},
                "unitok": sd,
                "disc": collections.OrderedDict(
                    [("head.weight", torch.ones(3, 4))]),
            },
            "args": _pth_args(),
            "epoch": 0,
            "iter": 0,
        }
        torch.save(ckpt, os.path.join(out, name))
    core_bf16 = collections.OrderedDict(
        (k, t.detach().clone().to(torch.bfloat16))
        for k, t in make_core(PTH_CFG, PTH_CFG["seed"]).core_state_dict().items())
    write_safetensors(os.path.join(out, "small_bf16.safetensors"), core_bf16,
                      {"num_heads": "4", "causal": "true", "seed": "1"})
    sd32 = _pth_state_dict(torch.float32)
    bare = collections.OrderedDict(("module." + k, v) for k, v in sd32.items())
    bare._metadata = collections.OrderedDict(
        (("module." + k) if k else "module", v) for k, v in sd32._metadata.items())
    torch.save(bare, os.path.join(out, "bare_state_dict.pth"))

    # malicious.pth: a genuine torch.save zip whose data.pkl is replaced by a
    # protocol-2 pickle that calls os.system when unpickled.  Never load it.
    src = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, src)
    src.seek(0)
    evil = pickle.dumps({"trainer": {"unitok": _Pwn()}}, protocol=2)
    # os.system pickles as posix.system on Linux; name it os.system as on disk
    evil = evil.replace(b"c" + os.system.__module__.encode() + b"\nsystem\n", b"cos\nsystem\n")
    assert b"cos\nsystem\n" in evil
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(os.path.join(out, "malicious.pth"), "w",
                                                      zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = evil
            zout.writestr(info, data)
    # sanity: the bf16 paths carry identical values
    a = torch.load(os.path.join(out, "small_bf16.pth"), map_location="cpu")["trainer"]["unitok"]
    for k, t in core_bf16.items():
        assert torch.equal(a[k], t), k
        assert a[k].dtype == torch.bfloat16
    print("pth: wrote", sorted(os.listdir(out)))


# ----------------------------------------------------------------------------
# unitok: checkpoints written by torch.save from UniTok's own modules
# ----------------------------------------------------------------------------

# Each case builds the tokenizer core exactly as UniTok's UniTok class
# (models/unitok.py) does -- AttnProjection(C, D, C // D), VectorQuantizerM,
# AttnProjection(D, C, C // D), from UniTok's own models/vqvae.py and
# models/quant.py -- fills it with the synthetic weights, and torch.saves it in
# the layout of UniTok's training checkpoints ({'args': Args.state_dict(),
# 'epoch', 'iter', 'trainer': {'unitok': state_dict}}).  The checkpoint records
# no num_heads (UniTok's never do): loaders must take C // D.
UNITOK_CASES = [
    # custom width: committed under --out (bf16 storage keeps it at ~1.5 MB)
    dict(name="c256", model="vitamin_custom", in_dim=256, latent_dim=64, num_codebooks=8,
         codebook_size=64, B=2, N=16, seed=11, dtype=torch.bfloat16),
    # vitamin_base / vitamin_large: the weights and features of fixtures
    # base_full / real_full; the checkpoints (fp32) go to --big-out only.
    dict(name="base", model="vitamin_base", fixture="base_full", dtype=torch.float32),
    dict(name="large", model="vitamin_large", fixture="real_full", dtype=torch.float32),
]


def _unitok_args(src, **over):
    """UniTok's Args defaults (utils/config.py, read with ast: its Tap base
    class is not needed) with the given overrides, as Args.state_dict()."""
    import ast
    tree = ast.parse(open(os.path.join(src, "utils", "config.py")).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args")
    args = collections.OrderedDict()
    for n in cls.body:
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.value is not None:
            try:
                v = ast.literal_eval(n.value)
            except ValueError:
                continue
            if n.target.id != "device":
                args[n.target.id] = v
    for k, v in over.items():
        assert k in args, k
        args[k] = v
    return args


def _unitok_core(src, embed_dim, args):
    sys.path.insert(0, src)
    from models.vqvae import AttnProjection as UAttnProjection
    from models.quant import VectorQuantizerM

    class UniTokCore(nn.Module):
        """The tokenizer-core lines of UniTok.__init__ (quant_proj == 'attn')."""

        def __init__(self):
            super().__init__()
            heads = embed_dim // args["vocab_width"]
            self.quant_proj = UAttnProjection(embed_dim, args["vocab_width"], heads)
            self.quantizer = VectorQuantizerM(
                vocab_size=args["vocab_size"], vocab_width=args["vocab_width"],
                beta=args["vq_beta"], use_entropy_loss=args["le"] > 0,
                entropy_temp=args["e_temp"], num_codebooks=args["num_codebooks"])
            self.post_quant_proj = UAttnProjection(args["vocab_width"], embed_dim, heads)

    return UniTokCore()


def _unitok_margins(core, lat):
    """top1 - top2 cosine score per (token, codebook), float64: (B, N, K)."""
    q = core.quantizer
    chunks = lat.double().split(lat.shape[-1] // q.num_codebooks, dim=-1)
    out = []
    for i, cb in enumerate(q.codebooks):
        s = torch.matmul(F.normalize(chunks[i], dim=-1),
                         F.normalize(cb.codebook.weight.double(), dim=1).t())
        top = torch.topk(s, 2, dim=-1).values
        out.append(top[..., 0] - top[..., 1])
    return torch.stack(out, -1)


def run_unitok(a):
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    src = os.path.abspath(a.unitok_src)
    ok = True
    for case in UNITOK_CASES:
        fx = None
        if "fixture" in case:
            if not a.big_out:
                continue
            fx = os.path.join(a.fixtures, case["fixture"])
            cfg = json.load(open(os.path.join(fx, "config.json")))
            C, D, K, V, seed = (cfg["in_dim"], cfg["latent_dim"], cfg["num_codebooks"],
                                cfg["codebook_size"], cfg["seed"])
            assert not cfg["causal"] and cfg["num_heads"] == C // D, cfg
            x = torch.from_numpy(np.load(os.path.join(fx, "features.npy")))
            out = os.path.join(a.big_out, case["name"])
        else:
            C, D, K, V, seed = (case["in_dim"], case["latent_dim"], case["num_codebooks"],
                                case["codebook_size"], case["seed"])
            g = torch.Generator().manual_seed(1000 + seed)
            x = torch.randn(case["B"], case["N"], C, generator=g, dtype=torch.float32)
            out = os.path.join(a.out, case["name"])
        os.makedirs(out, exist_ok=True)
        args = _unitok_args(src, model=case["model"], vocab_width=D, vocab_size=K * V,
                            num_codebooks=K, quant_proj="attn")
        core = _unitok_core(src, C, args)
        sd = core.state_dict()
        new = collections.OrderedDict()
        for k, t in sd.items():
            if k.endswith("vocab_usage"):
                new[k] = torch.zeros_like(t)
            else:
                new[k] = torch.from_numpy(synth_tensor(k, list(t.shape), seed))
        core.load_state_dict(new)
        core = core.to(case["dtype"])  # what is saved; computed in float32 below
        torch.save({"args": args, "epoch": 0, "iter": 0,
                    "trainer": {"unitok": core.state_dict()}},
                   os.path.join(out, "unitok.pth"))
        core = core.float().eval()
        with torch.no_grad():
            lat = core.quant_proj(x)
            codes = core.quantizer.f_to_idx(lat).permute(0, 2, 1).contiguous()  # (B,K,N) -> (B,N,K)
            margins = _unitok_margins(core, lat)
        r = dict(C=C, D=D, heads=core.quant_proj.attn.num_heads, tokens=int(x.shape[0] * x.shape[1]),
                 min_margin=float(margins.min()), distinct_codes=int(len(torch.unique(codes))),
                 pth_bytes=os.path.getsize(os.path.join(out, "unitok.pth")))
        if fx is None:
            save_npy(os.path.join(out, "features.npy"), x.numpy().astype(np.float32))
            save_npy(os.path.join(out, "codes.npy"), codes.numpy().astype(np.int32))
            save_npy(os.path.join(out, "margins.npy"), margins.numpy().astype(np.float32))
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump(dict(in_dim=C, latent_dim=D, num_codebooks=K, codebook_size=V,
                               num_heads=C // D, causal=False, seed=seed,
                               dtype=str(case["dtype"]).replace("torch.", ""),
                               model=case["model"]), f, indent=1)
                f.write("\n")
        else:
            # UniTok's modules must reproduce the committed fixture exactly.
            want = np.load(os.path.join(fx, "codes.npy"))
            fm = np.load(os.path.join(fx, "margins.npy"))
            lat_ref = np.load(os.path.join(fx, "latents.npy"))
            sure = fm > 1e-5
            r["codes_eq_fixture"] = bool(np.array_equal(codes.numpy()[sure], want[sure]))
            r["latents_rel_vs_fixture"] = _rel(lat.numpy(), lat_ref)
            ok &= r["codes_eq_fixture"] and r["latents_rel_vs_fixture"] < 1e-5
        print("unitok", case["name"], json.dumps(r))
        if a.full and case["name"] == "base":
            ok &= _unitok_full(src, args, core, os.path.join(a.big_out, "base_full"))
    print("UNITOK", "OK" if ok else "FAILED")
    return ok


def _unitok_full(src, args, core, out):
    """UniTok's own UniTok class (models/unitok.py) built from args, its
    tokenizer core replaced by core's weights, saved whole as UniTok's
    training checkpoints are: the issue-13 reproduction (vitamin_base, no
    num_heads anywhere)."""
    sys.path.insert(0, src)
    from models.unitok import UniTok

    class _Args:
        pass

    ua = _Args()
    ua.__dict__.update(args)
    ua.grad_ckpt = False
    m = UniTok(ua)
    assert m.quant_proj.attn.num_heads == m.encoder.embed_dim // args["vocab_width"]
    sd = m.state_dict()
    for k, v in core.state_dict().items():
        assert sd[k].shape == v.shape, k
        sd[k] = v
    os.makedirs(out, exist_ok=True)
    torch.save({"args": args, "epoch": 0, "iter": 0, "trainer": {"unitok": sd}},
               os.path.join(out, "unitok.pth"))
    print("unitok base_full: UniTok(%s) with %d tensors, %d parameters, heads %d, %d bytes" % (
        args["model"], len(sd), sum(v.numel() for v in sd.values()), m.quant_proj.attn.num_heads,
        os.path.getsize(os.path.join(out, "unitok.pth"))))
    return True


# ----------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------

BENCH_CFGS = {
    "real": dict(in_dim=1024, latent_dim=64, num_codebooks=8, codebook_size=4096, num_heads=16, N=256),
    "sample": dict(in_dim=256, latent_dim=64, num_codebooks=8, codebook_size=512, num_heads=4, N=256),
    "small": dict(in_dim=48, latent_dim=16, num_codebooks=4, codebook_size=100, num_heads=4, N=7),
}


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device, warmup, iters):
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        _sync(device)
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_bench(args):
    device = args.device
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("highest")
    base = dict(BENCH_CFGS[args.config])
    N = args.tokens or base.pop("N")
    base.pop("N", None)
    cfg = dict(base, causal=args.causal, seed=args.seed)
    core = make_core(cfg, cfg["seed"], device)
    B = args.batch
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(B, N, cfg["in_dim"], generator=g).to(device)
    with torch.no_grad():
        lat = core.quant_proj(feats)
        lat2d = lat.reshape(B * N, cfg["latent_dim"]).contiguous()
        codes = core.quantizer.f_to_idx(lat)

    def quantize(m):
        return lambda: m.quantizer.f_to_idx(lat2d)

    def encode(m):
        return lambda: m.quantizer.f_to_idx(m.quant_proj(feats))

    def decode(m):
        return lambda: m.post_quant_proj(m.quantizer.idx_to_f(codes))

    ops = {"quantize": quantize, "encode": encode, "decode": decode}
    tokens = B * N
    results = {}
    compiled = None
    compile_err = None
    if not args.no_compile:
        if hasattr(torch, "compile"):
            try:
                compiled = torch.compile  # each op is compiled as a closure below
            except Exception as e:  # noqa: BLE001
                compile_err = "%s: %s" % (type(e).__name__, e)
        else:
            compile_err = "torch.compile unavailable in torch %s" % torch.__version__
    for name, mk in ops.items():
        r = {"tokens": tokens}
        t = _time(mk(core), device, args.warmup, args.iters)
        r["eager_s"] = t
        r["eager_tokens_per_s"] = tokens / t
        r["compile_tokens_per_s"] = None
        if compiled is not None:
            try:
                cfn = torch.compile(mk(core), dynamic=False)
                t = _time(cfn, device, max(args.warmup, 3), args.iters)
                r["compile_s"] = t
                r["compile_tokens_per_s"] = tokens / t
            except Exception as e:  # noqa: BLE001
                r["compile_error"] = ("%s: %s" % (type(e).__name__, e))[:500]
        elif compile_err:
            r["compile_error"] = compile_err
        results[name] = r
    meta = {"torch": torch.__version__, "device": device, "config": args.config, "batch": B,
            "tokens_per_image": N, "causal": args.causal, "tf32": False, "dtype": "float32"}
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name(0)
    print("torch %s, %s, config=%s (C=%d D=%d K=%d V=%d H=%d), B=%d N=%d, %s, fp32 (TF32 off)" % (
        torch.__version__, meta.get("gpu", device), args.config, cfg["in_dim"], cfg["latent_dim"],
        cfg["num_codebooks"], cfg["codebook_size"], cfg["num_heads"], B, N,
        "causal" if args.causal else "full"))
    print("%-10s %18s %18s" % ("op", "eager tok/s", "compile tok/s"))
    for name, r in results.items():
        c = r["compile_tokens_per_s"]
        print("%-10s %18.4g %18s" % (name, r["eager_tokens_per_s"],
                                     ("%.4g" % c) if c else ("failed" if "compile_error" in r else "-")))
        if "compile_error" in r:
            print("   compile: " + r["compile_error"].splitlines()[0][:200])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(results, _meta=meta), f, indent=1)
            f.write("\n")
    return results


# ----------------------------------------------------------------------------
# selfcheck: an independent float64 NumPy implementation of DESIGN.md section 1,
# run against the files written by the other modes (read back from disk).
# ----------------------------------------------------------------------------


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        raw = data[b:e]
        if h["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif h["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("dtype %s" % h["dtype"])
        out[name] = a.reshape(h["shape"]).astype(np.float64)
    return out, meta


def _np_ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _np_adaptive_pool(x, out):  # pools the last axis, torch's bin edges
    L = x.shape[-1]
    cols = []
    for i in range(out):
        s, e = (i * L) // out, -((-(i + 1) * L) // out)
        cols.append(x[..., s:e].mean(-1))
    return np.stack(cols, -1)


def np_attn_projection(W, p, x, in_dim, out_dim, H, causal):
    g = lambda k: W[p + "." + k]
    w = max(in_dim, out_dim)
    hd = w // H
    B, N, _ = x.shape
    h = _np_ln(x, g("norm1.weight"), g("norm1.bias"), 1e-5)
    bias = np.concatenate([g("attn.q_bias"), g("attn.zero_k_bias"), g("attn.v_bias")])
    qkv = h @ g("attn.qkv.weight").T + bias
    q, k, v = [qkv[..., j * w:(j + 1) * w].reshape(B, N, H, hd).transpose(0, 2, 1, 3) for j in range(3)]
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    if causal:
        s = np.where(np.triu(np.ones((N, N), bool), 1), -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    if in_dim > out_dim:
        a = a.mean(1)
        if hd != out_dim:
            a = _np_adaptive_pool(a, out_dim)
    else:
        a = a.transpose(0, 2, 1, 3).reshape(B, N, w)
    a = a @ g("attn.proj.weight").T + g("attn.proj.bias")
    x1 = _np_ln(x, g("norm3.weight"), g("norm3.bias"), 1e-5) @ g("proj.weight").T + g("proj.bias") + a
    # norm2 feeds the MLP, whose own LayerNorm (eps 1e-6) follows it
    z = _np_ln(x1, g("norm2.weight"), g("norm2.bias"), 1e-5)
    z = _np_ln(z, g("mlp.norm.weight"), g("mlp.norm.bias"), 1e-6)
    m = _np_gelu_tanh(z @ g("mlp.w0.weight").T + g("mlp.w0.bias")) * (z @ g("mlp.w1.weight").T + g("mlp.w1.bias"))
    return x1 + m @ g("mlp.w2.weight").T + g("mlp.w2.bias")


def _np_normalize(a):
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def np_quantize(W, z, K):
    d = z.shape[-1] // K
    codes, l2 = [], []
    for i in range(K):
        E = W["quantizer.codebooks.%d.codebook.weight" % i]
        zi = z[..., i * d:(i + 1) * d]
        codes.append(np.argmax(_np_normalize(zi) @ _np_normalize(E).T, -1))
        l2.append(np.argmin(((zi[..., None, :] - E) ** 2).sum(-1), -1))
    return np.stack(codes, -1), np.stack(l2, -1)


def np_lookup(W, codes, K):
    return np.concatenate([_np_normalize(W["quantizer.codebooks.%d.codebook.weight" % i])[codes[..., i]]
                           for i in range(K)], -1)


def _rel(a, b):
    return float(np.abs(a - b).max() / max(1e-30, np.abs(b).max()))


def run_selfcheck(root):
    ok = True
    fx = os.path.join(root, "fixtures")
    for case in sorted(os.listdir(fx)):
        d = os.path.join(fx, case)
        cfg = json.load(open(os.path.join(d, "config.json")))
        C, D, K, H = cfg["in_dim"], cfg["latent_dim"], cfg["num_codebooks"], cfg["num_heads"]
        synth = {k: synth_tensor(k, list(t.shape), cfg["seed"]).astype(np.float64)
                 for k, t in Core(cfg).state_dict().items()}
        W = synth
        if os.path.exists(os.path.join(d, "model.safetensors")):
            W, meta = read_safetensors(os.path.join(d, "model.safetensors"))
            same = set(W) == set(synth) and all(np.array_equal(W[k], synth[k]) for k in W)
            ok &= same and meta.get("num_heads") == str(H) and meta.get("causal") == str(cfg["causal"]).lower()
            print("%-13s safetensors == synthetic: %s, metadata %s" % (case, same, meta))
        ld = lambda n: np.load(os.path.join(d, n + ".npy"))
        x = ld("features").astype(np.float64)
        lat = np_attn_projection(W, "quant_proj", x, C, D, H, cfg["causal"])
        lat_ref = ld("latents")
        codes, l2 = np_quantize(W, lat_ref.astype(np.float64), K)
        look = np_lookup(W, ld("codes"), K)
        dec = np_attn_projection(W, "post_quant_proj", ld("lookup").astype(np.float64), D, C, H, cfg["causal"])
        r = dict(latents_rel=_rel(lat_ref, lat), lookup_rel=_rel(ld("lookup"), look),
                 decoded_rel=_rel(ld("decoded"), dec),
                 codes_eq=bool(np.array_equal(codes, ld("codes"))),
                 l2_codes_eq=bool(np.array_equal(l2, ld("l2_codes"))),
                 codes_from_f64_latents_eq=bool(np.array_equal(np_quantize(W, lat, K)[0], ld("codes"))))
        good = (r["latents_rel"] < 1e-5 and r["lookup_rel"] < 1e-6 and r["decoded_rel"] < 1e-5
                and r["codes_eq"] and r["l2_codes_eq"])
        ok &= good
        print("%-13s %s %s" % (case, "ok" if good else "FAIL", json.dumps(r)))
    smp = os.path.join(root, "sample", "model.safetensors")
    if os.path.exists(smp):
        W, meta = read_safetensors(smp)
        sd = Core(SAMPLE_CFG).state_dict()
        same = set(W) == set(sd) and all(
            np.array_equal(W[k], synth_tensor(k, list(sd[k].shape), SAMPLE_CFG["seed"])) for k in W)
        x = np.load(os.path.join(root, "sample", "features.npy"))
        same &= x.shape == (4, 256, SAMPLE_CFG["in_dim"]) and x.dtype == np.float32
        ok &= same
        print("sample/model.safetensors == synthetic seed 7, features ok:", same, meta)
    sp = os.path.join(root, "pth", "small_bf16.safetensors")
    if os.path.exists(sp):
        W, meta = read_safetensors(sp)
        t = torch.load(os.path.join(root, "pth", "small_bf16.pth"), map_location="cpu")["trainer"]["unitok"]
        same = all(np.array_equal(W[k], t[k].float().numpy().astype(np.float64)) for k in W)
        ok &= same
        print("pth/small_bf16.safetensors == small_bf16.pth core:", same, meta)
    print("SELFCHECK", "OK" if ok else "FAILED")
    return ok

# ----------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for m, default in (("fixtures", "testdata/fixtures"), ("sample", "testdata/sample"),
                       ("pth", "testdata/pth"), ("selfcheck", "testdata")):
        s = sub.add_parser(m)
        s.add_argument("--out", default=default)
        if m == "fixtures":
            s.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    u = sub.add_parser("unitok")
    u.add_argument("--unitok-src", required=True,
                   help="a checkout of github.com/FoundationVision/UniTok (its models/ and utils/)")
    u.add_argument("--out", default="testdata/unitok")
    u.add_argument("--big-out", default="",
                   help="also write the C=768 and C=1024 checkpoints (tens of MB, not committed) here")
    u.add_argument("--fixtures", default="testdata/fixtures")
    u.add_argument("--full", action="store_true",
                   help="with --big-out, also save UniTok's whole UniTok class on vitamin_base "
                        "(encoder, decoder, text tower: ~1.3 GB) as base_full/unitok.pth")
    b = sub.add_parser("bench")
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--config", default="real", choices=sorted(BENCH_CFGS))
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--tokens", type=int, default=0, help="tokens per image (default: config's)")
    b.add_argument("--causal", action="store_true")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--iters", type=int, default=10)
    b.add_argument("--no-compile", action="store_true")
    b.add_argument("--json", default="")
    a = p.parse_args(argv)
    if a.mode == "fixtures":
        run_fixtures(a.out, set(filter(None, a.cases.split(","))))
    elif a.mode == "unitok":
        sys.exit(0 if run_unitok(a) else 1)
    elif a.mode == "sample":
        run_sample(a.out)
    elif a.mode == "pth":
        run_pth(a.out)
    elif a.mode == "selfcheck":
        sys.exit(0 if run_selfcheck(a.out) else 1)
    else:
        run_bench(a)


if __name__ == "__main__":
    main()
