#!/usr/bin/env python3
"""Writes hostile files for the memory-ceiling test (tests/it/scan.rs): each is small on disk
and huge once followed. Usage: bombs.py DIR. Standard library only."""

import io
import os
import struct
import sys
import zipfile

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def torch_zip(path, data_pkl, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compress, compresslevel=9) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", b"3\n")


# 1. data.pkl is 100 MB of DUP after one value (the issue's .ckpt had 503 MB).
torch_zip(os.path.join(out, "dup.ckpt"), b"\x80\x02N" + b"2" * 100_000_000 + b".")
# 2. Memo GETs of one slot, 100 MB of them.
torch_zip(os.path.join(out, "memo.ckpt"), b"\x80\x02Nq\x00" + b"h\x00" * 50_000_000 + b".")
# 3. Zip bomb: a BINBYTES8 argument claiming 2 GB, then 320 MB of zeros, deflated.
with zipfile.ZipFile(os.path.join(out, "zipbomb.ckpt"), "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    with z.open("archive/data.pkl", "w", force_zip64=True) as m:
        m.write(b"\x80\x04\x8e" + struct.pack("<Q", 2 << 30))
        chunk = b"\0" * (64 << 20)
        for _ in range(5):
            m.write(chunk)
        m.write(b".")
# 4. MARKs and distinct memo slots, plain pickle (mmapped).
with open(os.path.join(out, "marks.pkl"), "wb") as f:
    f.write(b"(" * 40_000_000)
with open(os.path.join(out, "memo-slots.pkl"), "wb") as f:
    f.write(b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i) for i in range(3_000_000)) + b".")
# 5. 200k distinct globals (de-duplication must be O(1) per global).
with open(os.path.join(out, "globals.pkl"), "wb") as f:
    f.write(b"\x80\x02" + b"".join(b"cmod%d\nname%d\n0" % (i, i) for i in range(200_000)) + b"N.")
# 6. A huge text argument and a tensor shape of 1M dims referenced by many REDUCEs.
with open(os.path.join(out, "text.pkl"), "wb") as f:
    f.write(b"\x80\x04\x8d" + struct.pack("<Q", 64_000_000) + b"a" * 64_000_000 + b".")
shape = b"(" + b"K\x01" * 500_000 + b"tq\x00"
rebuild = b"ctorch._utils\n_rebuild_tensor_v2\nq\x01"
with open(os.path.join(out, "shapes.pkl"), "wb") as f:
    f.write(b"\x80\x02}" + shape + rebuild + b"0" + b"".join(
        b"K%ch\x01(Nh\x00h\x00tRs" % (i % 256) for i in range(100_000)) + b".")
