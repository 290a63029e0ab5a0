#!/usr/bin/env python3
"""PyTorch reference for UniTok's image path (ViTamin encoder -> quant_proj ->
quantizer -> post_quant_proj -> ViTaminDecoder, and the CLIP image embedding),
run with UniTok's OWN modules so the Go engine is checked against the code the
released checkpoint was trained with.

Needs a UniTok checkout (github.com/FoundationVision/UniTok; its models/,
utils/ and open_clip/ folders), timm 1.0.8 or 1.0.9 (UniTok's HybridEmbed fails
on newer timm), torch, numpy, pytz and typed-argument-parser (UniTok's
utils/config.py imports `tap`):

  python3 bench/torch_image_reference.py fixtures --unitok /path/to/UniTok \\
      --out testdata/image [--case tiny] [--case vitamin_base]
  python3 bench/torch_image_reference.py pth --unitok /path/to/UniTok --out testdata/image
  python3 bench/torch_image_reference.py bench --unitok /path/to/UniTok \\
      --model vitamin_large --batch 1 --threads 2

Weights come from the synthetic generator of bench/torch_reference.py (bit-
identical to Go's SynthTensor), extended for the image tensors exactly as
imageSynthTensor in image_synth.go: 4-D conv weights are scaled by
1/sqrt(in/groups*kh*kw) and encoder.pos_embed is zero (UniTok sets it to
zeros). Every tensor is named by its key in UniTok's state dict
(encoder.*, decoder.*, quant_proj.*, quantizer.*, post_quant_proj.*,
fc_norm.*, projection.*), so only inputs and outputs are committed.

Modules: the encoder is timm.create_model(model, ...) exactly as UniTok.__init__
calls it, with pos_embed replaced by zeros; quant_proj/post_quant_proj are
models.vqvae.AttnProjection(C, D, C // D); the quantizer is
models.quant.VectorQuantizerM; the decoder is models.vitamin.ViTaminDecoder
(for the small custom configs, built with the same submodules but custom
widths, since ViTaminDecoder hard-codes the widths of vitamin_base/large).
img_to_idx, idx_to_img and encode_image are UniTok's own methods, called on a
module that holds exactly the attributes they use.

pth mode: testdata/image/tiny_pth/unitok_tiny_bf16.pth is torch.save of the
real UniTok class (text tower included) in the released layout
{'args', 'epoch', 'iter', 'trainer': {'config', 'unitok': state_dict}}, tiny
config, weights stored in bf16; the case's outputs are computed from those
weights upcast to float32.

Files per case (testdata/image/CASE/): config.json, x.npy (B,3,S,S) f32 input
in [-1,1]; features.npy (B,N,C) f32 encoder output; latents.npy (B,N,D) f32
quant_proj output; codes.npy (B,N,K) i32 (img_to_idx, transposed from UniTok's
(B,K,N)); margins.npy (B,N,K) f32 top1 - top2 cosine score (float64 math on the
float32 latents); dec_in.npy (B,N,C) f32 post_quant_proj(idx_to_f(codes));
dec_out.npy (B,3,S,S) f32 decoder output before the clamp; rec.npy (B,3,S,S)
f32 idx_to_img(codes) (clamped); emb.npy (B,E) f32 encode_image(x,
normalize=True).
"""

import argparse
import json
import math
import os
import resource
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as tr  # noqa: E402  (synth generator, npy writer)


def image_synth_tensor(name, shape, seed):
    """Go's imageSynthTensor: SynthTensor plus the rules for image tensors."""
    if name.endswith("pos_embed"):
        return np.zeros(shape, dtype=np.float32)
    if len(shape) == 4:
        n = int(np.prod(shape))
        h = tr.fnv1a64(name)
        v = tr.synth_uniform(h ^ ((seed * tr.GOLDEN) & tr.MASK64), n)
        scale = np.float32(1.0 / math.sqrt(float(shape[1] * shape[2] * shape[3])))
        return (v * scale).astype(np.float32).reshape(shape)
    return tr.synth_tensor(name, shape, seed)


# Small custom ViTamin configs (same block types, fewer/narrower blocks).
# stem, dims=(stage1, stage2, vit width), depths=(stage1, stage2), vit depth,
# heads, decoder widths (vit, up1, up2), decoder depths, image size.
CUSTOM = {
    "vitamin_tiny_test": dict(stem=16, dims=(16, 32, 128), depths=(2, 2), depth=2, heads=2,
                              dec_dims=(128, 32, 16), dec_depths=(2, 1)),
}

CASES = {
    # name: model, img size, batch, core (D, K, V), embed dim, seed
    "tiny": dict(model="vitamin_tiny_test", img_size=64, B=2, D=32, K=4, V=64, E=48, seed=11),
    "vitamin_base": dict(model="vitamin_base", img_size=256, B=1, D=64, K=8, V=4096, E=768, seed=12),
}


def setup_unitok(path):
    sys.path.insert(0, os.path.abspath(path))
    import models.vitamin as V  # registers UniTok's vitamin_* models with timm
    from models.vqvae import AttnProjection
    from models.quant import VectorQuantizerM
    from models.unitok import UniTok
    from timm.models._registry import register_model

    for name, c in CUSTOM.items():
        def make(pretrained=False, _c=c, _name=name, **kwargs):
            backbone = V.MbConvStages(cfg=V.VitCfg(
                embed_dim=_c["dims"], depths=tuple(_c["depths"]) + (1,), stem_width=_c["stem"],
                conv_cfg=V.VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6), head_type="1d"))
            args = dict(embed_dim=_c["dims"][2], depth=_c["depth"], num_heads=_c["heads"],
                        mlp_layer=V.GeGluMlp, mlp_ratio=2., class_token=False, global_pool="avg")
            return V._create_vision_transformer_hybrid(_name, backbone=backbone, pretrained=pretrained,
                                                       **dict(args, **kwargs))
        make.__name__ = name
        make.__module__ = V.__name__
        register_model(make)
    return V, AttnProjection, VectorQuantizerM, UniTok


def make_decoder(V, model, img_size):
    if model not in CUSTOM:
        return V.ViTaminDecoder(model, num_query=0, img_size=img_size, drop_path=0.0)
    # ViTaminDecoder.__init__ hard-codes the widths of vitamin_base/large; build
    # the same submodules with the custom widths and keep UniTok's forward.
    import timm
    c = CUSTOM[model]
    d = V.ViTaminDecoder.__new__(V.ViTaminDecoder)
    nn.Module.__init__(d)
    d.num_query = 0
    vit = timm.create_model(model, fc_norm=False, patch_size=1, drop_rate=0.0, num_classes=0,
                            global_pool="", pos_embed="none", mlp_layer=V.GeGluMlp, class_token=False,
                            reg_tokens=0, img_size=img_size, drop_path_rate=0.0)
    d.blocks, d.norm_pre, d.norm = vit.blocks, vit.norm_pre, vit.norm
    e = c["dec_dims"]
    d.up_conv1 = V.Upsample2d(e[0], e[1])
    d.up_conv2 = nn.Sequential(*[V.InvMbConvLNBlock(in_chs=e[1], out_chs=e[1], stride=2 if i == 0 else 1)
                                 for i in range(c["dec_depths"][0])])
    d.up_conv3 = nn.Sequential(*[V.InvMbConvLNBlock(in_chs=e[1] if i == 0 else e[2], out_chs=e[2],
                                                    stride=2 if i == 0 else 1)
                                 for i in range(c["dec_depths"][1])])
    d.up_conv4 = V.InvStem(in_chs=e[2], out_chs=3)
    d.grad_ckpt = False
    return d


def build(mods, case):
    V, AttnProjection, VectorQuantizerM, UniTok = mods
    import timm
    m = nn.Module()
    m.num_query = 0
    m.encoder = timm.create_model(case["model"], patch_size=1, fc_norm=False, drop_rate=0.0, num_classes=0,
                                  global_pool="", pos_embed="none", class_token=False, mlp_layer=V.GeGluMlp,
                                  reg_tokens=0, img_size=case["img_size"], drop_path_rate=0.0)
    m.encoder.pos_embed = nn.Parameter(torch.zeros(1, 1, m.encoder.embed_dim), requires_grad=False)
    C, D = m.encoder.embed_dim, case["D"]
    m.quant_proj = AttnProjection(C, D, C // D)
    m.quantizer = VectorQuantizerM(vocab_size=case["K"] * case["V"], vocab_width=D, beta=0.25,
                                   use_entropy_loss=False, num_codebooks=case["K"])
    m.post_quant_proj = AttnProjection(D, C, C // D)
    m.decoder = make_decoder(V, case["model"], case["img_size"])
    m.fc_norm = nn.LayerNorm(C, eps=1e-6)
    m.projection = nn.Linear(C, case["E"])
    sd = m.state_dict()
    new = {k: torch.from_numpy(image_synth_tensor(k, list(t.shape), case["seed"])) for k, t in sd.items()}
    m.load_state_dict(new)
    return m.eval(), UniTok


def margins_of(z, quantizer):
    K = quantizer.num_codebooks
    chunks = z.double().split(z.shape[-1] // K, dim=-1)
    out = []
    for i, cb in enumerate(quantizer.codebooks):
        zi = torch.nn.functional.normalize(chunks[i], dim=-1)
        e = torch.nn.functional.normalize(cb.codebook.weight.double(), dim=1)
        top = torch.topk(zi @ e.t(), 2, dim=-1).values
        out.append(top[..., 0] - top[..., 1])
    return torch.stack(out, -1)


def run_case(mods, name, out):
    case = CASES[name]
    m, UniTok = build(mods, case)
    save_outputs(m, UniTok, case, os.path.join(out, name))


def save_outputs(m, UniTok, case, d, extra=None):
    S, B = case["img_size"], case["B"]
    g = torch.Generator().manual_seed(2000 + case["seed"])
    x = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    t0 = time.time()
    with torch.no_grad():
        feats = m.encoder(x).float()
        lat = m.quant_proj(feats)
        codes = UniTok.img_to_idx(m, x)  # (B, K, N)
        dec_in = m.post_quant_proj(m.quantizer.idx_to_f(codes))
        dec_out = m.decoder(dec_in)
        rec = UniTok.idx_to_img(m, codes)
        emb = UniTok.encode_image(m, x, normalize=True)
        margins = margins_of(lat, m.quantizer)
    print(f"{d}: forward {time.time() - t0:.1f}s", file=sys.stderr)
    os.makedirs(d, exist_ok=True)
    cfg = dict(model=case["model"], img_size=S, B=B, latent_dim=case["D"], num_codebooks=case["K"],
               codebook_size=case["V"], embed_dim=case["E"], seed=case["seed"],
               num_heads=m.encoder.embed_dim // case["D"])
    if case["model"] in CUSTOM:
        cfg["custom"] = CUSTOM[case["model"]]
    cfg.update(extra or {})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
        f.write("\n")
    save = lambda n, a: tr.save_npy(os.path.join(d, n + ".npy"), a)
    save("x", x.numpy().astype(np.float32))
    save("features", feats.numpy())
    save("latents", lat.numpy())
    save("codes", codes.permute(0, 2, 1).numpy().astype(np.int32))
    save("margins", margins.numpy().astype(np.float32))
    save("dec_in", dec_in.numpy())
    save("dec_out", dec_out.numpy())
    save("rec", rec.numpy())
    save("emb", emb.numpy())


def run_bench(mods, args):
    torch.set_num_threads(args.threads)
    case = dict(model=args.model, img_size=256, B=args.batch, D=64, K=8, V=4096, E=1024, seed=1)
    m, UniTok = build(mods, case)
    x = torch.rand(args.batch, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        codes = UniTok.img_to_idx(m, x)
        for op, fn in (("tokenize", lambda: UniTok.img_to_idx(m, x)),
                       ("detokenize", lambda: UniTok.idx_to_img(m, codes))):
            fn()
            t, c = [], []
            for _ in range(args.iters):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                t.append(time.perf_counter() - t0)
                c.append(time.process_time() - c0)
            best = min(t)
            print(json.dumps(dict(op=op, model=args.model, batch=args.batch, threads=args.threads,
                                  seconds=best, images_per_s=args.batch / best,
                                  cpu_s_per_image=min(c) / args.batch,
                                  peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)))


def run_pth(mods, out):
    """torch.save of the real UniTok class in the released layout, tiny config.

    UniTok(args) builds everything (encoder, quant_proj, quantizer,
    post_quant_proj, decoder, open_clip text tower, fc_norm, projection,
    logit_scale); only ViTaminDecoder is swapped for make_decoder because it
    hard-codes the vitamin_base/large widths. Weights: the synthetic
    generator for every key (the text tower's too), so the file's image path
    equals the tiny fixture's.
    """
    import collections
    import types
    import models.unitok as U
    V = mods[0]
    case = CASES["tiny"]
    U.ViTaminDecoder = lambda model, num_query=0, img_size=256, drop_path=0.0, grad_ckpt=False: \
        make_decoder(V, model, img_size)
    args = collections.OrderedDict(
        model=case["model"], exp_name="unitok_tiny_test", img_size=case["img_size"], resize_ratio=1.125,
        drop_path=0.0, num_query=0, quant_proj="attn", vocab_width=case["D"], vocab_size=case["K"] * case["V"],
        num_codebooks=case["K"], vq_beta=0.25, le=0.0, e_temp=0.01, grad_ckpt=False, embed_dim=case["E"],
        text_width=32, text_heads=2, text_layers=1, text_vocab_size=100, text_context_length=8,
        bf16=True, fp16=False, tf32=True, dtype=torch.float32, lr=None)
    model = U.UniTok(types.SimpleNamespace(**args))
    sd = model.state_dict()
    new = collections.OrderedDict(
        (k, torch.from_numpy(image_synth_tensor(k, list(t.shape), case["seed"])) if t.is_floating_point() else t)
        for k, t in sd.items())
    model.load_state_dict(new)
    # Stored in bf16 (half the bytes; exercises the upcast); the reference
    # outputs come from the same weights upcast back to float32, which is
    # what load_state_dict into UniTok's float32 modules does.
    sd16 = collections.OrderedDict((k, v.to(torch.bfloat16) if v.is_floating_point() else v)
                                   for k, v in model.state_dict().items())
    model.load_state_dict(collections.OrderedDict((k, v.float()) for k, v in sd16.items()))
    model.eval()
    d = os.path.join(out, "tiny_pth")
    save_outputs(model, U.UniTok, case, d, extra={"checkpoint": "unitok_tiny_bf16.pth"})
    ckpt = {"args": args, "epoch": 3, "iter": 1234,
            "trainer": {"config": {"note": "tiny test config"}, "unitok": sd16}}
    torch.save(ckpt, os.path.join(d, "unitok_tiny_bf16.pth"))
    groups = collections.Counter(k.split(".")[0] for k in sd)
    print(f"pth: {len(sd)} tensors {dict(groups)}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fixtures", "pth", "bench"])
    p.add_argument("--unitok", required=True, help="UniTok checkout (models/, utils/, open_clip/)")
    p.add_argument("--out", default="testdata/image")
    p.add_argument("--case", action="append", choices=sorted(CASES))
    p.add_argument("--model", default="vitamin_large")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    mods = setup_unitok(a.unitok)
    if a.mode == "fixtures":
        for name in a.case or ["tiny"]:
            run_case(mods, name, a.out)
    elif a.mode == "pth":
        run_pth(mods, a.out)
    else:
        run_bench(mods, a)


if __name__ == "__main__":
    main()
