"""Writes probe fixtures with the real producers (run by tests/it/support/pyfix.rs).

Reads a JSON list of file specs on stdin; each spec is
  {"kind": "safetensors" | "torch_zip" | "torch_legacy",
   "path": str, "tensors": [[name, shape, dtype], ...],
   "metadata": {str: str} | null,      # safetensors __metadata__
   "wrap": [str, ...] | null,          # pickles: nest the state dict under these keys
   "protocol": int,                    # pickles: pickle protocol (0-5)
   "mangle": "deflate" | "short" | "missing" | null}  # torch_zip: break storage `0`

Tensor values are `arange(numel) % 251` in the tensor's numpy dtype, so a reader's bytes can be
compared with the safetensors twin of the same spec.

- safetensors: `safetensors.numpy.save_file` over zero-filled numpy arrays;
- torch_zip: what `torch.save(obj, path, pickle_protocol=p)` writes — `archive/data.pkl`
  pickled by CPython's `pickle` with torch's persistent ids, `archive/data/N` raw storages,
  `archive/version`, `archive/byteorder`, `archive/.data/serialization_id` (stored, no
  compression, each record's data aligned to 64 bytes by a `FB` padding extra field, as
  torch's PyTorchStreamWriter does);
- torch_legacy: `torch.save(..., _use_new_zipfile_serialization=False)` — magic number,
  protocol version, sys info, the object, the storage keys, then each storage as 8-byte numel
  and its bytes.

torch is not installed: stand-ins for `torch._utils._rebuild_tensor_v2` and the storage
classes are registered under their real module names, so CPython's pickler emits exactly the
globals and persistent ids torch.save does.
"""

import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

DTYPES = {
    "F16": (np.float16, "HalfStorage", 2),
    "BF16": (np.float16, "BFloat16Storage", 2),
    "F32": (np.float32, "FloatStorage", 4),
    "F64": (np.float64, "DoubleStorage", 8),
    "I64": (np.int64, "LongStorage", 8),
    "I32": (np.int32, "IntStorage", 4),
    "U8": (np.uint8, "ByteStorage", 1),
}

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch.__path__ = []
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    raise RuntimeError("fixtures are written, never loaded, here")


_rebuild_tensor_v2.__module__ = "torch._utils"
_rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

for _, (_, cls_name, _) in DTYPES.items():
    cls = type(cls_name, (), {"__module__": "torch"})
    setattr(torch, cls_name, cls)


class Storage:
    def __init__(self, key, cls_name, numel, elt, data):
        self.key, self.cls, self.numel, self.elt = key, getattr(torch, cls_name), numel, elt
        self.data = data


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (
            _rebuild_tensor_v2,
            (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()),
        )


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def values(shape, dtype):
    n = numel(shape)
    return (np.arange(n) % 251).astype(DTYPES[dtype][0]).reshape(shape)


def state_dict(spec):
    storages = []
    sd = collections.OrderedDict()
    for name, shape, dtype in spec["tensors"]:
        _, cls_name, elt = DTYPES[dtype]
        data = values(shape, dtype).tobytes()
        s = Storage(str(len(storages)), cls_name, numel(shape), elt, data)
        storages.append(s)
        sd[name] = Tensor(s, shape)
    # torch's state_dict() carries per-module versions in `_metadata`.
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    obj = sd
    for key in reversed(spec.get("wrap") or []):
        obj = {key: obj}
    return obj, storages


class TorchPickler(pickle.Pickler):
    def __init__(self, f, protocol, legacy):
        super().__init__(f, protocol=protocol)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            if self.legacy:
                return ("storage", obj.cls, obj.key, "cpu", obj.numel, None)
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def write_record(z, name, data, compress=zipfile.ZIP_STORED):
    # PyTorchStreamWriter::writeRecord: an extra field `FB` + u16 length + `Z` padding puts
    # the data of each record at a multiple of 64 bytes.
    start = z.fp.tell() + 30 + len(name.encode()) + 4
    pad = (64 - start % 64) % 64
    info = zipfile.ZipInfo(name)
    info.compress_type = compress
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    z.writestr(info, data)


def torch_zip(spec):
    obj, storages = state_dict(spec)
    buf = io.BytesIO()
    TorchPickler(buf, spec.get("protocol", 2), legacy=False).dump(obj)
    archive = "archive"
    mangle = spec.get("mangle")
    with zipfile.ZipFile(spec["path"], "w", zipfile.ZIP_STORED) as z:
        write_record(z, f"{archive}/data.pkl", buf.getvalue())
        write_record(z, f"{archive}/byteorder", "little")
        for s in storages:
            data, compress = s.data, zipfile.ZIP_STORED
            if s.key == "0" and mangle == "missing":
                continue
            if s.key == "0" and mangle == "short":
                data = data[:-1]
            if s.key == "0" and mangle == "deflate":
                compress = zipfile.ZIP_DEFLATED
            write_record(z, f"{archive}/data/{s.key}", data, compress)
        write_record(z, f"{archive}/version", "3\n")
        write_record(z, f"{archive}/.data/serialization_id", "0" * 40)


def torch_legacy(spec):
    obj, storages = state_dict(spec)
    p = spec.get("protocol", 2)
    with open(spec["path"], "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=p)
        pickle.dump(1001, f, protocol=p)
        sys_info = {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        }
        pickle.dump(sys_info, f, protocol=p)
        TorchPickler(f, p, legacy=True).dump(obj)
        pickle.dump([s.key for s in storages], f, protocol=p)
        for s in storages:
            f.write(struct.pack("<q", s.numel))
            f.write(s.data)


def safetensors_file(spec):
    from safetensors.numpy import save_file

    arrays = {}
    for name, shape, dtype in spec["tensors"]:
        arrays[name] = values(shape, dtype)
    save_file(arrays, spec["path"], metadata=spec.get("metadata"))


def main():
    specs = json.load(sys.stdin)
    for spec in specs:
        os.makedirs(os.path.dirname(spec["path"]) or ".", exist_ok=True)
        {
            "safetensors": safetensors_file,
            "torch_zip": torch_zip,
            "torch_legacy": torch_legacy,
        }[spec["kind"]](spec)


if __name__ == "__main__":
    main()
