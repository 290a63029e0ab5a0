#!/usr/bin/env python3
"""PyTorch reference for the image commands (unitok tokenize / detokenize /
reconstruct / embed) on real photos: UniTok's inference.py end to end, with
the weights of testdata/image/tiny_pth/unitok_tiny_bf16.pth.

  python3 bench/image_cli_fixture.py --unitok /path/to/UniTok [--out testdata/image/cli]

Per image (testdata/images/inputs/{chelsea_full.png, coffee.png}, photos that
scikit-image ships): inference.py's preprocessing (Image.open(p).convert("RGB"),
Resize(int(img_size * resize_ratio)), CenterCrop(img_size), ToTensor,
normalize_01_into_pm1), then UniTok's img_to_idx, idx_to_img and
encode_image(normalize=True) on UniTok's own modules (built as
bench/torch_image_reference.py builds the tiny case, then loaded with the
.pth's bf16 weights upcast to float32, as UniTok.load_state_dict does), and
inference.py's save_img of torch.cat((img, rec_img), dim=3).

Files (testdata/image/cli/): config.json; x.npy (B,3,S,S) f32 preprocessed
input; codes.npy (B,N,K) i32; margins.npy (B,N,K) f32 top1 - top2 cosine
score; rec.npy (B,3,S,S) f32 idx_to_img(codes); emb.npy (B,E) f32;
NAME_side.png: save_img's side-by-side picture, as inference.py writes it;
jpeg_codes.npy, jpeg_margins.npy (J,N,K) and jpeg.json: the same for the JPEG
inputs listed there (PIL/libjpeg-turbo decoding), for the JPEG measurement.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_image_reference as tir  # noqa: E402
import torch_reference as tr  # noqa: E402

IMAGES = ["chelsea_full.png", "coffee.png"]
JPEGS = ["rocket_jpeg_full.jpg", "jpeg_420.jpg", "jpeg_420_odd.jpg", "jpeg_422.jpg", "jpeg_444.jpg",
         "jpeg_gray.jpg", "jpeg_cmyk.jpg"]


def save_img(img, path):
    # inference.py's save_img, verbatim in effect.
    img = img.add(1).mul_(0.5 * 255).round().nan_to_num_(128, 0, 255).clamp_(0, 255)
    img = img.to(dtype=torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    Image.fromarray(img[0]).save(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--unitok", required=True)
    p.add_argument("--pth", default="testdata/image/tiny_pth/unitok_tiny_bf16.pth")
    p.add_argument("--images", default="testdata/images/inputs")
    p.add_argument("--out", default="testdata/image/cli")
    a = p.parse_args()
    torch.manual_seed(0)
    mods = tir.setup_unitok(a.unitok)
    from torchvision.transforms import transforms

    def normalize_01_into_pm1(x):  # utils/data.py's (that module imports pandas)
        return x.add(x).add_(-1)

    ckpt = torch.load(a.pth, map_location="cpu", weights_only=False)
    args = ckpt["args"]
    case = dict(tir.CASES["tiny"])
    m, UniTok = tir.build(mods, case)
    sd = ckpt["trainer"]["unitok"]
    m.load_state_dict({k: sd[k].float() for k in m.state_dict()})
    m.eval()

    S = args["img_size"]
    pre = transforms.Compose([
        transforms.Resize(int(S * args["resize_ratio"])),
        transforms.CenterCrop(S),
        transforms.ToTensor(), normalize_01_into_pm1,
    ])
    os.makedirs(a.out, exist_ok=True)
    xs = torch.stack([pre(Image.open(os.path.join(a.images, n)).convert("RGB")) for n in IMAGES])
    with torch.no_grad():
        codes = UniTok.img_to_idx(m, xs)  # (B, K, N)
        rec = UniTok.idx_to_img(m, codes)
        emb = UniTok.encode_image(m, xs, normalize=True)
        lat = m.quant_proj(m.encoder(xs).float())
        margins = tir.margins_of(lat, m.quantizer)
    for i, n in enumerate(IMAGES):
        save_img(torch.cat((xs[i:i + 1], rec[i:i + 1]), dim=3),
                 os.path.join(a.out, os.path.splitext(n)[0] + "_side.png"))
    save = lambda n, v: tr.save_npy(os.path.join(a.out, n + ".npy"), v)
    save("x", xs.numpy().astype(np.float32))
    save("codes", codes.permute(0, 2, 1).numpy().astype(np.int32))
    save("margins", margins.numpy().astype(np.float32))
    save("rec", rec.numpy().astype(np.float32))
    save("emb", emb.numpy().astype(np.float32))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(dict(images=IMAGES, checkpoint=a.pth, img_size=S, resize_ratio=args["resize_ratio"],
                       num_heads=case.get("num_heads", m.encoder.embed_dim // case["D"])), f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{a.out}: {len(IMAGES)} images, codes {tuple(codes.shape)}", file=sys.stderr)

    # JPEG: PIL (libjpeg-turbo) decodes; Go's decoder differs by IDCT
    # rounding, so the Go test measures how many codes survive that.
    xj = torch.stack([pre(Image.open(os.path.join(a.images, n)).convert("RGB")) for n in JPEGS])
    with torch.no_grad():
        cj = UniTok.img_to_idx(m, xj)
        mj = tir.margins_of(m.quant_proj(m.encoder(xj).float()), m.quantizer)
    save("jpeg_codes", cj.permute(0, 2, 1).numpy().astype(np.int32))
    save("jpeg_margins", mj.numpy().astype(np.float32))
    with open(os.path.join(a.out, "jpeg.json"), "w") as f:
        json.dump(dict(images=JPEGS), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
