#!/usr/bin/env python3
"""JPEG inputs: unitok's codes (Go's JPEG decoder) against UniTok's img_to_idx
on PIL's decode (libjpeg-turbo), with any UniTok .pth.

  python3 bench/image_jpeg_compare.py --unitok /path/to/UniTok \\
      --pth testdata/demo/unitok_small.pth [--unitok-bin /tmp/unitok] [JPEG ...]

For each JPEG (default: the JPEG cases of testdata/images/inputs), PyTorch runs
inference.py's preprocessing on PIL's decode, then UniTok's own img_to_idx and
the top-two cosine margins; `unitok tokenize` writes Go's codes. Prints, per
image, the codes whose margin is above 1e-3 that are equal (the issue's bar is
97%) and all codes equal. The .pth is rebuilt as UniTok(args) with the
custom ViTamin configs of bench/torch_image_reference.py (and of
bench/train_small.py, if present, for the demo checkpoint).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_image_reference as tir  # noqa: E402

JPEGS = ["rocket_jpeg_full.jpg", "jpeg_420.jpg", "jpeg_420_odd.jpg", "jpeg_422.jpg", "jpeg_444.jpg",
         "jpeg_gray.jpg", "jpeg_cmyk.jpg"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--unitok", required=True, help="UniTok checkout")
    p.add_argument("--pth", required=True)
    p.add_argument("--unitok-bin", default="", help="unitok binary (default: go run ./cmd/unitok)")
    p.add_argument("--heads", type=int, default=0, help="pass --heads to unitok")
    p.add_argument("images", nargs="*")
    a = p.parse_args()
    try:
        import train_small  # noqa: F401  (registers the demo's custom config)
    except ImportError:
        pass
    mods = tir.setup_unitok(a.unitok)
    import models.unitok as U
    from torchvision.transforms import transforms
    U.ViTaminDecoder = lambda model, num_query=0, img_size=256, drop_path=0.0, grad_ckpt=False: \
        tir.make_decoder(mods[0], model, img_size)
    ck = torch.load(a.pth, map_location="cpu", weights_only=False)
    args = dict(ck["args"])
    m = U.UniTok(types.SimpleNamespace(**args))
    sd = ck["trainer"]["unitok"]
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    m.eval()
    S = args["img_size"]
    pre = transforms.Compose([transforms.Resize(int(S * args.get("resize_ratio", 1.125))),
                              transforms.CenterCrop(S), transforms.ToTensor(),
                              lambda x: x.add(x).add_(-1)])
    images = a.images or [os.path.join("testdata/images/inputs", n) for n in JPEGS]
    cmd = [a.unitok_bin] if a.unitok_bin else ["go", "run", "./cmd/unitok"]
    total = equal = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in images:
            x = pre(Image.open(path).convert("RGB"))[None]
            with torch.no_grad():
                want = U.UniTok.img_to_idx(m, x).permute(0, 2, 1)[0].numpy()
                margins = tir.margins_of(m.quant_proj(m.encoder(x).float()), m.quantizer)[0].numpy()
            out = os.path.join(tmp, "codes.npy")
            extra = ["--heads", str(a.heads)] if a.heads else []
            subprocess.run(cmd + ["tokenize", "--checkpoint", a.pth, "--in", path, "--out", out,
                                  "--codes-dtype", "int32", "--device", "cpu"] + extra, check=True,
                           stderr=subprocess.DEVNULL)
            got = np.load(out)
            sel = margins > 1e-3
            e = int((got == want)[sel].sum())
            total += int(sel.sum())
            equal += e
            print(f"{os.path.basename(path):24s} above margin 1e-3: {e}/{sel.sum()} ({100 * e / max(sel.sum(), 1):.1f}%)"
                  f"  all codes: {100 * (got == want).mean():.1f}%")
    print(f"total: {equal}/{total} ({100 * equal / max(total, 1):.2f}%) codes above margin 1e-3 equal")


if __name__ == "__main__":
    main()
