#!/usr/bin/env python3
"""Reference data for internal/wds, made and read by the `webdataset` package.

  python3 webdataset_ref.py make DIR   writes DIR/py.tar (webdataset.TarWriter, plus
                                       members added with tarfile to cover the
                                       reader's corner cases) and DIR/py.json: the
                                       samples webdataset.WebDataset reads from it
  python3 webdataset_ref.py read TAR   prints, as JSON, the samples webdataset reads
                                       (read TAR1 TAR2 ...: a JSON list, one per tar)

JSON: [{"key": KEY, "members": [[EXT, BASE64], ...]}, ...] in read order; EXT as
webdataset gives it (lowercased), members in tar order.
"""
import base64
import io
import json
import sys
import tarfile
import warnings

warnings.filterwarnings("ignore")
import webdataset as wds  # noqa: E402


def read(path, arrays=False):
    out = []
    ds = wds.WebDataset(path, shardshuffle=False)
    for s in ds:
        members = [[k, base64.b64encode(v).decode()] for k, v in s.items() if not k.startswith("__")]
        r = {"key": s["__key__"], "members": members}
        if arrays:
            # .npy members as numpy reads them: [shape, dtype, values]
            import numpy as np
            r["arrays"] = {}
            for k, v in s.items():
                if k.endswith(".npy"):
                    a = np.load(io.BytesIO(v), allow_pickle=False)
                    r["arrays"][k] = [list(a.shape), str(a.dtype), a.ravel().tolist()]
        out.append(r)
    return out


def blob(i, n):
    return bytes((i * 31 + j * 7) % 256 for j in range(n))


def make(d):
    path = d + "/py.tar"
    with open(path, "wb") as f:
        with wds.TarWriter(f, mtime=0, format="PAX_FORMAT") as w:
            # sorted member order, as TarWriter writes it
            for i in range(4):
                w.write({"__key__": "shard0/img%03d" % i, "jpg": blob(i, 100 + i),
                         "txt": "caption %d \u00e9" % i, "json": json.dumps({"i": i}),
                         "seg.png": blob(i + 50, 33), "cls": str(i)})
            w.write({"__key__": "nested/dir/x", "webp": blob(9, 0)})  # empty member
            # corner cases, added to the same stream with tarfile: members not
            # in sorted order, a directory, a metadata file, a name without
            # extension, an upper-case extension, a long (PAX) name, a symlink
            t = w.tarstream

            def add(name, data=b"", typ=tarfile.REGTYPE, link=""):
                ti = tarfile.TarInfo(name)
                ti.type = typ
                ti.mtime = 0
                ti.linkname = link
                ti.size = len(data) if typ == tarfile.REGTYPE else 0
                t.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)

            add("__meta__", b"skipped")
            add("shard1", typ=tarfile.DIRTYPE)
            add("shard1/b.txt", b"text first")
            add("shard1/b.JPG", blob(1, 10))
            add("shard1/b.meta.json", b"{}")
            add("README", b"no extension: skipped")
            add("shard1/c.png", blob(2, 20))
            add("shard1/link.png", typ=tarfile.SYMTYPE, link="c.png")
            add("shard1/" + "long" * 40 + ".jpg", blob(3, 5))
            add("shard1/c2.txt", b"after the long one")
    json.dump(read(path), open(d + "/py.json", "w"), indent=0)
    print("wrote", path)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 3:
        json.dump(read(sys.argv[2]), sys.stdout)
    else:
        # several tars: a JSON list; a name ending in ":arrays" also decodes
        # its .npy members with numpy
        json.dump([read(p[:-7], True) if p.endswith(":arrays") else read(p) for p in sys.argv[2:]], sys.stdout)
