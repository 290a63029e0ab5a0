#!/usr/bin/env python3
"""Fixtures for internal/imageio: images in, and what PIL + torchvision make of them.

Writes testdata/images/ (run from the repository root with /work/venv/bin/python):

  inputs/<case>.<ext>   the input file (photos from scikit-image, edge cases generated here)
  want/<case>.rgb.png   Image.open(p).convert("RGB") (small inputs only)
  want/<case>.crop.png  UniTok's inference transform up to the crop, as uint8 RGB:
                        transforms.Resize(288) then CenterCrop(256) on the converted image
  resize/<name>.png     PIL Image.resize((w, h), BILINEAR) of a source, for other sizes
  cmyk_r.png            uint8 (256,256): R of PIL's CMYK->RGB for cyan = row, black = column
  pm1.npy               float32 (256,): ToTensor + normalize_01_into_pm1 of every byte value
  save_in.npy/save_out.npy  inference.py's save_img on awkward values (ties, NaN, inf)
  sizes.json            torchvision's Resize(288) output size for many input sizes
  cases.json            the case list: input, kind (exact, jpeg, error, unsupported)

The full tensor is never stored: the script asserts that torchvision's tensor equals
pm1[crop] exactly, so crop.png + pm1.npy determine it.

Photos (scikit-image's data directory; licenses per skimage.data docstrings):
  chelsea.png  Stefan van der Walt, CC0 (kept at full size, 451x300)
  coffee.png   Rachel Michetti, CC0
  astronaut.png NASA, public domain
  camera.png   Lav Varshney, CC0 (gray)
  rocket.jpg   SpaceX, public domain (kept at full size, 640x427, as a real JPEG)
"""
import hashlib
import io
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import skimage
import torch
import torchvision
from PIL import Image
from torchvision.transforms import transforms
from torchvision.transforms.functional import _compute_resized_output_size

warnings.simplefilter("ignore")

OUT = os.path.join("testdata", "images")
SKDATA = os.path.join(os.path.dirname(skimage.__file__), "data")
IMG_SIZE, RATIO = 256, 1.125

PREPROCESS = transforms.Compose([
    transforms.Resize(int(IMG_SIZE * RATIO)),
    transforms.CenterCrop(IMG_SIZE),
    transforms.ToTensor(),
    lambda x: x.add(x).add_(-1),  # UniTok's normalize_01_into_pm1
])
CROP = transforms.Compose([transforms.Resize(int(IMG_SIZE * RATIO)), transforms.CenterCrop(IMG_SIZE)])


def path(*p):
    full = os.path.join(OUT, *p)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return full


def pm1_table():
    # ToTensor on a uint8 HWC array (1, 256, 1) divides by 255 in float32, as for PIL images.
    t = transforms.ToTensor()(np.arange(256, dtype=np.uint8).reshape(1, 256, 1))
    t = t.add(t).add_(-1)
    return t.flatten().numpy().astype(np.float32)


def png_raw(w, h, color_type, depth, pixels, trns=None):
    """A PNG written byte by byte, for layouts PIL cannot save (16-bit RGB, tRNS on 16-bit gray)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = pixels.reshape(h, -1)
    raw = b"".join(b"\x00" + r.tobytes() for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def gif_raw(sw, sh, pal, rect, idx, trns=None, bg=0, local=False):
    """A one-frame GIF whose frame may cover only part of the logical screen (PIL's writer
    always covers it). LZW is written uncompressed: 9-bit literal codes, a clear code
    every 250, so the code table never grows past 9 bits."""
    x0, y0, w, h = rect
    codes = []
    for n, v in enumerate(idx.flatten()):
        if n % 250 == 0:
            codes.append(256)
        codes.append(int(v))
    codes.append(257)
    bits = nb = 0
    lzw = bytearray()
    for c in codes:
        bits |= c << nb
        nb += 9
        while nb >= 8:
            lzw.append(bits & 255)
            bits >>= 8
            nb -= 8
    if nb:
        lzw.append(bits & 255)
    table = bytes(pal) + bytes(768 - len(pal))
    out = b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0 if local else 0x87, bg, 0)
    if not local:
        out += table
    if trns is not None:
        out += b"\x21\xf9\x04" + bytes([1, 0, 0, trns, 0])
    out += b"\x2c" + struct.pack("<HHHHB", x0, y0, w, h, 0x87 if local else 0)
    if local:
        out += table
    out += b"\x08"
    for i in range(0, len(lzw), 255):
        out += bytes([len(lzw[i:i + 255])]) + lzw[i:i + 255]
    return out + b"\x00\x3b"


def photo(name, size=None):
    im = Image.open(os.path.join(SKDATA, name))
    im.load()
    if size is not None:
        im = im.resize(size, Image.LANCZOS)
    return im


def pattern(w, h, seed):
    """A deterministic image with edges and gradients that compresses well."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 7 + y * 3) % 256
    g = ((x // 9) ^ (y // 5)) * 37 % 256
    b = ((x // 4) * (y // 4 + seed) // 16 + (x * y) // 1024) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


cases = []


def add(name, data, ext, kind="exact", keep_rgb=True, error=None):
    fn = path("inputs", f"{name}.{ext}")
    with open(fn, "wb") as f:
        f.write(data)
    case = {"name": name, "input": f"inputs/{name}.{ext}", "kind": kind}
    if kind == "unsupported":  # PIL reads it, Go's decoders do not: refused with a clear error
        Image.open(fn).convert("RGB")
        case["error"] = error
        cases.append(case)
        return
    if kind == "error":
        try:
            Image.open(fn).convert("RGB")
        except Exception as e:  # PIL refuses it too
            case["pil_error"] = f"{type(e).__name__}: {e}"
        else:
            raise SystemExit(f"{name}: PIL decoded a file meant to be bad")
        case["error"] = error
        cases.append(case)
        return
    rgb = Image.open(fn).convert("RGB")
    case["size"] = list(rgb.size)
    case["pil_mode"] = Image.open(fn).mode
    if keep_rgb:
        case["rgb"] = save_want(np.asarray(rgb))
    crop = CROP(rgb)
    tensor = PREPROCESS(rgb)
    a = np.asarray(crop)
    assert a.shape == (IMG_SIZE, IMG_SIZE, 3), a.shape
    # The stored crop plus the pm1 table determine torchvision's tensor exactly.
    want = torch.from_numpy(PM1[a].transpose(2, 0, 1).copy())
    assert torch.equal(tensor, want), name
    case["crop"] = save_want(a)
    cases.append(case)


def save_want(a):
    """Stores a uint8 RGB array as want/<sha256 prefix>.png, once per distinct content."""
    name = "want/" + hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()[:16] + ".png"
    if not os.path.exists(path(name)):
        Image.fromarray(a).save(path(name), optimize=True)
    return name


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def main():
    global PM1
    os.makedirs(OUT, exist_ok=True)
    PM1 = pm1_table()
    # Cross-check the table against ToTensor on a PIL image holding every value.
    im = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    t = transforms.ToTensor()(im.convert("RGB"))
    assert torch.equal(t.add(t).add_(-1)[0].flatten(), torch.from_numpy(PM1))
    np.save(path("pm1.npy"), PM1)

    # --- real photographs ---
    with open(os.path.join(SKDATA, "chelsea.png"), "rb") as f:
        add("chelsea_full", f.read(), "png", keep_rgb=False)  # full size, 451x300
    add("coffee", encode(photo("coffee.png", (300, 200)), "PNG"), "png", keep_rgb=False)
    add("astronaut", encode(photo("astronaut.png", (300, 300)), "PNG"), "png", keep_rgb=False)
    add("camera_gray", encode(photo("camera.png", (300, 300)), "PNG"), "png", keep_rgb=False)
    with open(os.path.join(SKDATA, "rocket.jpg"), "rb") as f:
        add("rocket_jpeg_full", f.read(), "jpg", kind="jpeg", keep_rgb=False)  # real JPEG, 640x427

    # --- sizes and geometry ---
    add("tiny_1x1", encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"), "png")
    add("wide_5000x300", encode(Image.fromarray(pattern(5000, 300, 0)), "PNG", optimize=True), "png", keep_rgb=False)
    # 3000x2000 -> 432x288: downscale by 6.9, 15-tap filters (blocky pattern: compresses to 100 KB).
    big = Image.fromarray(pattern(750, 500, 9)).resize((3000, 2000), Image.NEAREST)
    add("big_3000x2000", encode(big, "PNG", optimize=True), "png", keep_rgb=False)
    add("tall_100x700", encode(Image.fromarray(pattern(100, 700, 1)), "PNG"), "png", keep_rgb=False)  # upscale x2.88
    add("small_120x90", encode(photo("coffee.png", (120, 90)), "PNG"), "png")  # upscale both ways
    # 302x300 -> 289x288: crop left = round(16.5) = 16 (half to even), not 17.
    add("tie_302x300", encode(Image.fromarray(pattern(302, 300, 6)), "PNG"), "png", keep_rgb=False)
    add("tie_304x300", encode(Image.fromarray(pattern(304, 300, 7)), "PNG"), "png", keep_rgb=False)  # round(17.5) = 18
    # 288 wide: no horizontal pass, only the vertical one.
    add("exact_288x300", encode(Image.fromarray(pattern(288, 300, 8)), "PNG"), "png", keep_rgb=False)

    # --- modes ---
    # Mode cases are small (their convert("RGB") result is stored too); 64x48 upscales.
    W, H = 64, 48
    cof = photo("coffee.png", (W, H))
    add("gray_L", encode(cof.convert("L"), "PNG"), "png")
    la = cof.convert("L").convert("LA")
    la.putalpha(Image.fromarray(pattern(W, H, 2)[..., 2]))
    add("gray_alpha_LA", encode(la, "PNG"), "png")
    rgba = cof.convert("RGBA")
    alpha = pattern(W, H, 3)[..., 1].copy()
    alpha[:10, :20] = 0  # fully transparent pixels keep their colors in PIL's RGBA->RGB
    rgba.putalpha(Image.fromarray(alpha))
    add("rgba", encode(rgba, "PNG"), "png")
    pal = cof.convert("P", palette=Image.ADAPTIVE, colors=64)
    add("palette", encode(pal, "PNG"), "png")
    trns = bytes([0, 128] + [255] * 62)
    add("palette_trns", encode(pal, "PNG", transparency=trns), "png")
    add("gray_trns", encode(cof.convert("L"), "PNG", transparency=int(np.asarray(cof.convert("L"))[5, 5])), "png")
    add("rgb_trns", encode(cof, "PNG", transparency=tuple(int(v) for v in np.asarray(cof)[5, 5])), "png")
    add("bitdepth1", encode(cof.convert("1"), "PNG"), "png")

    # 16-bit: PIL opens gray as I;16 (convert("RGB") clips at 255) and RGB/RGBA/LA as 8-bit (high byte).
    g16 = (np.asarray(cof.convert("L"), dtype=np.uint16) * 257).astype(">u2")
    g16[:20, :20] = np.arange(400).reshape(20, 20) % 300  # values below and above 255
    add("gray16", png_raw(W, H, 0, 16, g16), "png")
    add("gray16_trns", png_raw(W, H, 0, 16, g16, trns=struct.pack(">H", 100)), "png")
    rgb16 = (np.asarray(cof, dtype=np.uint16) * 257 + pattern(W, H, 4)).astype(">u2")
    add("rgb16", png_raw(W, H, 2, 16, rgb16), "png")
    a16 = (pattern(W, H, 5)[..., :1].astype(np.uint16) * 250).astype(">u2")
    add("rgba16", png_raw(W, H, 6, 16, np.concatenate([rgb16, a16], -1)), "png")
    add("gray_alpha16", png_raw(W, H, 4, 16, np.concatenate([g16[..., None], a16], -1)), "png")

    # --- other formats ---
    add("webp_lossless", encode(cof, "WEBP", lossless=True), "webp")
    # Lossy WebP is exact too: VP8 reconstruction is normative and Decode redoes libwebp's
    # YUV->RGB (limited range, fancy upsampling). Odd sizes exercise the edges.
    add("webp_lossy", encode(cof, "WEBP", quality=90), "webp")
    add("webp_lossy_odd", encode(photo("coffee.png", (201, 151)), "WEBP", quality=80), "webp")
    add("webp_lossy_alpha", encode(rgba, "WEBP", quality=90), "webp")
    gif = cof.convert("P", palette=Image.ADAPTIVE, colors=32)
    gif.info.pop("transparency", None)
    add("gif", encode(gif, "GIF"), "gif")
    # Transparent index 3; its stored color is not black, and convert("RGB") shows it.
    add("gif_trns", encode(gif, "GIF", transparency=3), "gif")
    # First frame smaller than the screen: PIL fills the rest with the transparent index,
    # else index 0, of the frame's palette (global or local).
    grng = np.random.default_rng(1)
    gpal = grng.integers(0, 256, 768).astype(np.uint8)
    gidx = grng.integers(0, 256, (10, 20)).astype(np.uint8)
    add("gif_subframe", gif_raw(32, 24, gpal, (5, 3, 20, 10), gidx, bg=9), "gif")
    add("gif_subframe_trns", gif_raw(32, 24, gpal, (5, 3, 20, 10), gidx, trns=7), "gif")
    add("gif_subframe_local", gif_raw(32, 24, gpal[::-1], (5, 3, 20, 10), gidx, trns=5, bg=3, local=True), "gif")
    add("bmp", encode(cof, "BMP"), "bmp")
    add("bmp_palette", encode(pal, "BMP"), "bmp")

    # --- JPEG: Go's decoder vs libjpeg-turbo, measured, not equal ---
    cof = photo("coffee.png", (128, 96))
    add("jpeg_420", encode(cof, "JPEG", quality=90), "jpg", kind="jpeg")
    add("jpeg_444", encode(cof, "JPEG", quality=90, subsampling=0), "jpg", kind="jpeg")
    add("jpeg_422", encode(cof, "JPEG", quality=90, subsampling=1), "jpg", kind="jpeg")
    add("jpeg_420_odd", encode(photo("coffee.png", (129, 97)), "JPEG", quality=85), "jpg", kind="jpeg")
    add("jpeg_gray", encode(cof.convert("L"), "JPEG", quality=90), "jpg", kind="jpeg")
    add("jpeg_cmyk", encode(cof.convert("CMYK"), "JPEG", quality=95), "jpg", kind="jpeg", keep_rgb=False)

    # A CMYK JPEG without Adobe APP14 metadata: PIL reads it (not inverted); Go refuses it.
    data = encode(cof.convert("CMYK"), "JPEG", quality=95)
    i = data.index(b"\xff\xee")
    n = struct.unpack(">H", data[i + 2:i + 4])[0]
    add("jpeg_cmyk_no_adobe", data[:i] + data[i + 2 + n:], "jpg", kind="unsupported", error="unsupported jpeg image")

    frames = [Image.new("RGB", (32, 24), (255, 0, 0)), Image.new("RGB", (32, 24), (0, 255, 0))]
    add("gif_animated", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), "gif")
    add("webp_animated", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
        "webp", kind="unsupported", error="animated WebP")

    # --- bad files ---
    whole = encode(cof, "PNG")
    add("truncated_png", whole[: len(whole) // 2], "png", kind="error", error="truncated or corrupt")
    whole = encode(cof, "JPEG", quality=90)
    add("truncated_jpeg", whole[: len(whole) // 2], "jpg", kind="error", error="truncated or corrupt")
    add("not_an_image", b"hello, this is text\n" * 4, "png", kind="error", error="not a PNG, JPEG, GIF, BMP or WebP")

    # --- PIL resize at other sizes (ResizeShorter's engine, up and down, both passes alone) ---
    src = photo("astronaut.png", (97, 61))
    src.save(path("resize", "src.png"))
    resize_cases = []
    for w, h in [(97, 30), (40, 61), (13, 7), (300, 200), (500, 61), (97, 400), (1, 1), (3, 122)]:
        src.resize((w, h), Image.BILINEAR).save(path("resize", f"{w}x{h}.png"))
        resize_cases.append([w, h])

    # --- CenterCrop padding (an image smaller than the crop), torchvision on PIL ---
    small = photo("coffee.png", (101, 300))
    small.save(path("crop", "src.png"))
    crop_cases = []
    for s in [256, 320, 57]:
        transforms.CenterCrop(s)(small).save(path("crop", f"{s}.png"))
        crop_cases.append(s)

    # --- torchvision's size math on many shapes ---
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (5000, 300), (300, 5000), (302, 300), (288, 288), (287, 289), (3, 100000)]
    shapes += [tuple(int(v) for v in rng.integers(1, 20000, 2)) for _ in range(300)]
    sizes = []
    for w, h in shapes:
        nh, nw = _compute_resized_output_size((h, w), [int(IMG_SIZE * RATIO)])
        sizes.append([w, h, nw, nh])
    with open(path("sizes.json"), "w") as f:
        json.dump(sizes, f)

    # --- PIL's CMYK -> RGB on every (c, k) pair: R of pixel (c, k) ---
    c, k = np.mgrid[0:256, 0:256].astype(np.uint8)
    cmyk = np.stack([c, np.zeros_like(c), np.zeros_like(c), k], -1)
    r = np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB"))[..., 0]
    Image.fromarray(np.ascontiguousarray(r)).save(path("cmyk_r.png"), optimize=True)

    # --- save_img on awkward values ---
    vals = [-1, 1, 0, -2, 2, float("nan"), float("inf"), float("-inf"), 3e38, -3e38]
    vals += [(k + 0.5) / 127.5 - 1 for k in range(-2, 258)]  # exact .5 ties before rounding
    vals += list(rng.standard_normal(500) * 0.7)
    x = torch.tensor(vals, dtype=torch.float32)
    n = x.numel()
    img = x.reshape(1, 1, 1, n).expand(1, 3, 1, n).clone()
    img[:, 1] = -img[:, 1]
    out = img.add(1).mul_(0.5 * 255).round().nan_to_num_(128, 0, 255).clamp_(0, 255)
    out = out.to(dtype=torch.uint8).permute(0, 2, 3, 1).numpy()[0]  # (1, n, 3)
    np.save(path("save_in.npy"), np.ascontiguousarray(img[0].numpy()))  # (3, 1, n)
    np.save(path("save_out.npy"), np.ascontiguousarray(out))

    with open(path("cases.json"), "w") as f:
        json.dump({"cases": cases, "resize": resize_cases, "crop": crop_cases,
                   "versions": {"pillow": Image.__version__, "torch": torch.__version__,
                                "torchvision": torchvision.__version__, "numpy": np.__version__}}, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"{len(cases)} cases, {total / 1e6:.2f} MB in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
