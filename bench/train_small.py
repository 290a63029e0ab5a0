#!/usr/bin/env python3
"""Train the small demo checkpoint that the README's main command uses.

A short reconstruction-only training of a small ViTamin configuration with
UniTok's OWN modules (its UniTok class: timm ViTamin encoder, AttnProjection,
VectorQuantizerM with 8 codebooks of 4096 codewords, AttnProjection back,
ViTaminDecoder), on freely licensed photographs that scikit-image ships
(skimage/data; NASA, public-domain and CC0 images, see skimage/data/README.txt).
The real released checkpoint cannot be downloaded on these machines; without
training, the demo's reconstruction would be noise.

Loss: L1 + MSE on pixels in [-1, 1] plus UniTok's own VQ loss (beta 0.25),
exactly the terms UniTok's forward returns (no perceptual/GAN/CLIP terms, no
text tower training). Training crops are 128x128 (the model has no position
embedding, so it runs at any multiple of 16; inference is at 256x256 with
UniTok's preprocessing), taken from photos rescaled so the shorter side is
256-320 pixels (inference resizes to 288), with random horizontal flips.
chelsea.png (the cat) is held out: the README shows it reconstructed.

Writes OUT/unitok_small.pth in the released layout (torch.save({'args':
OrderedDict, 'epoch', 'iter', 'trainer': {'config', 'unitok': state_dict}})
including the text tower, which unitok ignores), OUT/train_log.json (loss
curve, PSNR on the held-out photo and on a training photo, wall time), and
OUT/torch_reconstruction.png (PyTorch's own side-by-side for comparison).

  python3 bench/train_small.py --unitok /path/to/UniTok --out testdata/demo --minutes 12
"""

import argparse
import collections
import glob
import json
import math
import os
import random
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_image_reference as tir  # noqa: E402  (UniTok setup, custom ViTamin configs)

MODEL = "vitamin_small_demo"
# stem, stage widths, vit width; stage depths; vit depth; heads (head dim 64);
# decoder widths (vit, up1, up2) and depths, as in torch_image_reference.CUSTOM.
tir.CUSTOM[MODEL] = dict(stem=24, dims=(24, 48, 192), depths=(2, 2), depth=3, heads=3,
                         dec_dims=(192, 48, 24), dec_depths=(2, 1))

HELD_OUT = "chelsea.png"
PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png", "chelsea.png"]


def photo_dir():
    import skimage
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def preprocess(img, size=256, ratio=1.125):
    """UniTok's inference.py: Resize(int(size*ratio)), CenterCrop(size), ToTensor, x*2-1."""
    from torchvision import transforms
    t = transforms.Compose([transforms.Resize(int(size * ratio)), transforms.CenterCrop(size),
                            transforms.ToTensor()])
    return t(img).mul(2).sub(1)


def to_uint8(x):
    """inference.py's save_img arithmetic."""
    return x.add(1).mul(0.5 * 255).round().nan_to_num(128, 0, 255).clamp(0, 255).to(torch.uint8)


def psnr(a, b):
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--unitok", required=True)
    p.add_argument("--out", default="testdata/demo")
    p.add_argument("--minutes", type=float, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="continue from this checkpoint (a previous run's unitok_small.pth)")
    p.add_argument("--warmup", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    mods = tir.setup_unitok(a.unitok)
    V = mods[0]
    import models.unitok as U
    U.ViTaminDecoder = lambda model, num_query=0, img_size=256, drop_path=0.0, grad_ckpt=False: \
        tir.make_decoder(V, model, img_size)
    args = collections.OrderedDict(
        model=MODEL, exp_name="unitok_small_demo", img_size=256, resize_ratio=1.125, drop_path=0.0,
        num_query=0, quant_proj="attn", vocab_width=64, vocab_size=8 * 4096, num_codebooks=8, vq_beta=0.25,
        le=0.0, e_temp=0.01, grad_ckpt=False, embed_dim=64, text_width=32, text_heads=2, text_layers=1,
        text_vocab_size=100, text_context_length=8, bf16=False, fp16=False, tf32=False,
        dtype=torch.float32, lr=a.lr)
    model = U.UniTok(types.SimpleNamespace(**args))
    model.quantizer.init_vocab(-1.0)  # UniTok's default vocab_init
    prev_steps = 0
    if a.init:
        prev = torch.load(a.init, map_location="cpu", weights_only=False)
        model.load_state_dict(prev["trainer"]["unitok"])
        prev_steps = int(prev.get("iter", 0))
    n_params = sum(t.numel() for k, t in model.state_dict().items() if not k.startswith("text_encoder."))

    d = photo_dir()
    train_imgs = [Image.open(os.path.join(d, f)).convert("RGB") for f in PHOTOS if f != HELD_OUT]
    held = Image.open(os.path.join(d, HELD_OUT)).convert("RGB")
    train_ref = train_imgs[0]

    from torchvision.transforms import functional as TF

    def sample_batch():
        xs = []
        for _ in range(a.batch):
            im = random.choice(train_imgs)
            short = random.randint(256, 320)
            w, h = im.size
            s = short / min(w, h)
            im2 = im.resize((max(a.crop, int(w * s)), max(a.crop, int(h * s))), Image.BILINEAR)
            x0 = random.randint(0, im2.size[0] - a.crop)
            y0 = random.randint(0, im2.size[1] - a.crop)
            c = im2.crop((x0, y0, x0 + a.crop, y0 + a.crop))
            if random.random() < 0.5:
                c = c.transpose(Image.FLIP_LEFT_RIGHT)
            xs.append(TF.to_tensor(c))
        return torch.stack(xs).mul(2).sub(1)

    params = [t for n, t in model.named_parameters() if t.requires_grad and not n.startswith("text_encoder.")
              and n != "logit_scale"]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    log = []
    t0 = time.time()
    budget = a.minutes * 60
    step = 0
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        lr = a.lr * min(1.0, (step + 1) / max(a.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = sample_batch()
        out = model(x, vae_bs=a.batch)
        rec = out["img_rec"]
        l1, l2 = F.l1_loss(rec, x), F.mse_loss(rec, x)
        loss = l1 + l2 + out["vq_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 20 == 0 or step == 1:
            rec_psnr = 10 * math.log10(4.0 / max(l2.item(), 1e-12))
            e = dict(step=step, seconds=round(time.time() - t0, 1), loss=round(loss.item(), 4),
                     l1=round(l1.item(), 4), vq=round(float(out["vq_loss"]), 4), train_psnr_db=round(rec_psnr, 2),
                     usage_pct=round(float(out["codebook_usages"]), 2), lr=lr)
            log.append(e)
            print(json.dumps(e), flush=True)

    model.eval()
    res = {}
    with torch.no_grad():
        for name, im in (("held_out_" + HELD_OUT, held), ("train_" + PHOTOS[0], train_ref)):
            x = preprocess(im).unsqueeze(0)
            rec = model.idx_to_img(model.img_to_idx(x))
            res[name] = round(psnr(to_uint8(x), to_uint8(rec)), 2)
        x = preprocess(held).unsqueeze(0)
        rec = model.idx_to_img(model.img_to_idx(x))
        side = to_uint8(torch.cat((x, rec), dim=3))[0].permute(1, 2, 0).numpy()
    os.makedirs(a.out, exist_ok=True)
    Image.fromarray(side).save(os.path.join(a.out, "torch_reconstruction.png"))
    ckpt = {"args": args, "epoch": 0, "iter": prev_steps + step,
            "trainer": {"config": {"note": "small demo config, reconstruction-only training (bench/train_small.py)"},
                        "unitok": model.state_dict()}}
    torch.save(ckpt, os.path.join(a.out, "unitok_small.pth"))
    summary = dict(model=MODEL, config=tir.CUSTOM[MODEL], image_params=n_params, steps=step,
                   steps_total=prev_steps + step, init=a.init, lr=a.lr, batch=a.batch,
                   crop=a.crop, minutes=round((time.time() - t0) / 60, 1), threads=a.threads,
                   photos=[f for f in PHOTOS if f != HELD_OUT], held_out=HELD_OUT,
                   psnr_db_256_uint8=res, torch=torch.__version__, log=log)
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}))


if __name__ == "__main__":
    main()
