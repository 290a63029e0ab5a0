"""Turn a safetensors checkpoint into a torch.save .pth in UniTok's released
layout ({'args': {...}, 'trainer': {'unitok': state_dict}}), for the loader's
peak-RSS measurements (docs/notes/mmap.md).

  python bench/synth_pth.py IN.safetensors OUT.pth [--dtype float32|bfloat16|float16]

args.model comes from the input's metadata ("model"); the state dict keeps
the input's tensor order.
"""
import argparse
import collections
import json
import struct

import torch
from safetensors.torch import load_file


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = p.parse_args()
    with open(a.src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    meta = hdr.pop("__metadata__", {})
    order = sorted(hdr, key=lambda k: hdr[k]["data_offsets"][0])
    tensors = load_file(a.src)
    dt = getattr(torch, a.dtype)
    sd = collections.OrderedDict((k, tensors[k].to(dt)) for k in order)
    args = collections.OrderedDict(model=meta.get("model", "vitamin_base"), img_size=int(meta.get("img_size", 256)),
                                   vocab_width=64, num_codebooks=8, vocab_size=8 * 4096)
    torch.save({"args": args, "epoch": 1, "trainer": {"unitok": sd}}, a.dst)


if __name__ == "__main__":
    main()
