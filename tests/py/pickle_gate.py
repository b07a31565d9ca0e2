#!/usr/bin/env python3
"""Differential test of modelsync's pickle gate against CPython's own unpickler.

Writes a corpus of pickles -- hand-written tricky payloads, torch-style saves written by
CPython's pickler (plain, legacy layout, zip archives with extra and duplicate members), and
seeded random opcode streams (GLOBAL/STACK_GLOBAL/INST/OBJ/NEWOBJ/NEWOBJ_EX/REDUCE/BUILD, every
string opcode with CPython escapes, memo PUT/GET/MEMOIZE games, MARK/POP tricks) -- then, for
each file, asks CPython which globals its unpickler would hand to `find_class`. Both the C
(`pickle.Unpickler`) and the pure-Python (`pickle._Unpickler`) unpicklers run, subclassed so
that `find_class` only records the request: nothing is imported, and only harmless builtins
from the allow-list are ever returned (so computed strings such as `str(b'os', 'ascii')` come
out as CPython would compute them). A file on which a global outside ALLOW would be resolved
must not be called clean by `modelsync scan` -- zero misses, or the script fails.

Standard library only. Usage: pickle_gate.py --bin target/debug/modelsync [--random N] [--seed S]
"""

import argparse
import warnings
import collections
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import types
import zipfile

# The allow-list, stated independently of the Rust tables (src/scan.rs SAFE_NAMES).
ALLOW = set()
for m, names in {
    "torch._utils": "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor "
    "_rebuild_device_tensor_from_numpy _rebuild_meta_tensor_no_storage "
    "_rebuild_wrapper_subclass _rebuild_nested_tensor",
    "torch": "FloatStorage HalfStorage BFloat16Storage DoubleStorage LongStorage IntStorage "
    "ShortStorage CharStorage ByteStorage BoolStorage ComplexFloatStorage ComplexDoubleStorage "
    "QInt8Storage QUInt8Storage QInt32Storage Float8_e4m3fnStorage Float8_e5m2Storage "
    "UntypedStorage Tensor Size device complex64 complex128 float8_e4m3fn float8_e5m2 float16 "
    "float32 float64 bfloat16 int8 uint8 int16 int32 int64 bool per_tensor_affine strided "
    "sparse_coo",
    "torch.storage": "UntypedStorage TypedStorage",
    "torch._tensor": "_rebuild_from_type_v2",
    "torch.nn.parameter": "Parameter",
    "collections": "OrderedDict defaultdict deque",
    "numpy": "ndarray dtype",
    "numpy.core.multiarray": "_reconstruct scalar",
    "numpy._core.multiarray": "_reconstruct scalar",
    "_codecs": "encode",
    "builtins": "set frozenset dict list tuple int float complex bool str bytes bytearray "
    "slice range",
    "__builtin__": "set frozenset dict list tuple int long float complex bool str unicode "
    "bytearray slice",
}.items():
    for n in names.split():
        ALLOW.add((m, n))

import _codecs  # noqa: E402

# Targets that certainly run code, read files or reach the interpreter: when CPython would
# resolve one of these, `scan` must say "dangerous", not merely "suspicious".
DENY_MODULES = {"os", "posix", "nt", "subprocess", "runpy", "webbrowser", "socket", "shutil",
                "pty", "sys", "importlib", "ctypes", "io", "functools", "operator"}
DENY_ATTRS = {"eval", "exec", "getattr", "setattr", "__import__", "compile", "open", "system"}


def certainly_dangerous(module, name):
    steps = name.split(".")
    if module.split(".")[0] in DENY_MODULES:
        return True
    if any(s.startswith("__") and s.endswith("__") for s in steps):
        return True
    if module in ("builtins", "__builtin__") and steps[-1] in DENY_ATTRS:
        return True
    return (module, name) in {("torch", "load"), ("numpy", "load"), ("torch.serialization", "load")}


# Harmless real objects handed back for allow-listed builtins.
REAL = {
    ("builtins", n): getattr(__builtins__, n) if hasattr(__builtins__, n) else None
    for n in "set frozenset dict list tuple int float complex bool str bytes bytearray slice range".split()
}
REAL[("collections", "OrderedDict")] = collections.OrderedDict
REAL[("_codecs", "encode")] = _codecs.encode


class Stub:
    """What every other global resolves to: a class that accepts anything and does nothing."""

    def __init__(self, *a, **k):
        pass

    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __setstate__(self, state):
        pass

    def __call__(self, *a, **k):
        return Stub()

    def append(self, x):
        pass

    def extend(self, x):
        pass

    def __setitem__(self, k, v):
        pass


def recorder(base):
    class Recorder(base):
        def __init__(self, f, seen):
            super().__init__(f, encoding="utf-8")
            self.seen = seen

        def find_class(self, module, name):
            self.seen.add((module, name))
            real = REAL.get((module, name))
            if real is not None:
                return real
            return type("Resolved", (Stub,), {})

        def persistent_load(self, pid):
            return Stub()

    return Recorder


UNPICKLERS = [recorder(pickle.Unpickler), recorder(pickle._Unpickler)]
LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019") + b"."


def resolved_by_cpython(data):
    """The (module, name) pairs CPython's unpicklers would resolve: the first pickle, then
    stacked pickles (PROTO next) and torch's legacy layout (5 pickles), as the scanner reads."""
    seen = set()
    legacy = data.startswith(LEGACY_MAGIC)
    for cls in UNPICKLERS:
        f = io.BytesIO(data)
        for index in range(5 if legacy else 1 << 30):
            pos = f.tell()
            if pos >= len(data) or (index > 0 and not legacy and data[pos] != 0x80):
                break
            try:
                cls(f, seen).load()
            except (RecursionError, MemoryError):
                break
            except Exception:  # noqa: BLE001 -- any failure ends the stream, as in CPython
                break
    return seen


def resolved_in_zip(data):
    seen = set()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.filename.lower().endswith(".pkl"):
                seen |= resolved_by_cpython(z.open(info).read())
    return seen


# ---------------------------------------------------------------------------------------------
# Fake torch, so CPython's own pickler writes torch-style saves (nothing is ever imported from
# it at load time).


def fake_module(name, **attrs):
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        if isinstance(v, type) or callable(v):
            v.__module__ = name
            v.__qualname__ = k
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


def _rebuild_tensor_v2(*a):
    raise AssertionError


class HalfStorage:
    pass


class FloatStorage:
    pass


torch = fake_module("torch", HalfStorage=HalfStorage, FloatStorage=FloatStorage)
torch_utils = fake_module("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2)


class FakeTensor:
    def __init__(self, shape, storage=HalfStorage, key="0"):
        self.shape, self.storage, self.key = shape, storage, key

    def __reduce_ex__(self, proto):
        stride = tuple(1 for _ in self.shape)
        return (
            _rebuild_tensor_v2,
            (StorageRef(self.storage, self.key, 6), 0, tuple(self.shape), stride, False,
             collections.OrderedDict()),
        )


class StorageRef:
    def __init__(self, cls, key, numel):
        self.pid = ("storage", cls, key, "cpu", numel)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, StorageRef) else None


def torch_pickle(obj, protocol=2):
    b = io.BytesIO()
    TorchPickler(b, protocol=protocol).dump(obj)
    return b.getvalue()


def state_dict(n, rng):
    return collections.OrderedDict(
        (f"model.layer{i}.weight", FakeTensor([rng.randint(1, 8), rng.randint(1, 8)], key=str(i)))
        for i in range(n)
    )


def torch_zip(main, extra=(), archive="archive"):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", main)
        z.writestr(f"{archive}/byteorder", b"little")
        z.writestr(f"{archive}/data/0", b"\0" * 12)
        for name, data in extra:
            with _quiet():
                z.writestr(name, data)
        z.writestr(f"{archive}/version", b"3\n")
    return b.getvalue()


class _quiet:
    def __enter__(self):
        import warnings

        self.w = warnings.catch_warnings()
        self.w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        self.w.__exit__(*a)


# ---------------------------------------------------------------------------------------------
# Hand-written payloads.


def sbu(s):
    return b"\x8c" + bytes([len(s)]) + s


def hand_written():
    system = b"cos\nsystem\n(S'true'\ntR."
    cases = {
        "global-reduce": system,
        "string-escape-stack-global": b"\x80\x04S'o\\x73'\nS'sys\\164em'\n\x93.",
        "unicode-escape-stack-global": b"\x80\x04V\\u006fs\nV\\u0073ystem\n\x93.",
        "binstring-stack-global": b"\x80\x04T\x02\x00\x00\x00osU\x06system\x93.",
        "dotted-len-self-eval": b"\x80\x04" + sbu(b"builtins") + sbu(b"len.__self__.eval") + b"\x93.",
        "dotted-global-proto4": b"\x80\x04cbuiltins\nlen.__self__.eval\n.",
        "dotted-collections": b"\x80\x04" + sbu(b"collections") + sbu(b"OrderedDict.__init__.__globals__") + b"\x93.",
        "inst": b"(S'true'\nios\nsystem\n.",
        "obj": b"(cos\nsystem\nS'true'\no.",
        "newobj": b"\x80\x02csubprocess\nPopen\n(S'true'\ntb\x81.",
        "newobj-ex": b"\x80\x04csubprocess\nPopen\n)}\x92.",
        "build-setstate": b"\x80\x02ccollections\nOrderedDict\n)R}S'x'\ncos\nsystem\nsb.",
        "memo-stack-global": b"\x80\x04" + sbu(b"os") + b"\x94" + sbu(b"system") + b"\x94h\x00h\x01\x93.",
        "memo-overwrite": b"\x80\x04" + sbu(b"collections") + b"q\x00" + sbu(b"os") + b"q\x00" + b"0h\x00" + sbu(b"system") + b"\x93.",
        "memoize-after-put": b"\x80\x04" + sbu(b"collections") + b"q\x05" + sbu(b"os") + b"\x94" + b"h\x01" + sbu(b"system") + b"\x93.",
        "text-put-get": b"S'os'\np7\n0g7\nS'system'\n\x93.",
        "mark-pop": b"(0cos\nsystem\n.",
        "computed-module": b"\x80\x04cbuiltins\nstr\n" + sbu(b"os") + b"\x85R" + sbu(b"system") + b"\x93.",
        "codecs-computed": b"\x80\x04cbuiltins\nstr\nc_codecs\nencode\n(" + sbu(b"os") + sbu(b"latin1") + b"tRS'ascii'\n\x86R" + sbu(b"system") + b"\x93.",
        "cr-in-module": b"cos\r\nsystem\n.",
        "builtin-getattr": b"c__builtin__\ngetattr\n.",
        "builtins-eval": b"cbuiltins\neval\n(S'1'\ntR.",
        "unknown-class": b"\x80\x02cpytorch_lightning.callbacks\nModelCheckpoint\n)\x81.",
        "stacked": pickle.dumps({"a": 1}, protocol=2) + system.replace(b"cos", b"\x80\x02cos"),
        "frame": b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00" + sbu(b"os") + sbu(b"system") + b"\x93)R.",
        "double-quoted": b'S"os"\nS"system"\n\x93.',
        "proto0-global-after-clean": b"(dp0\nS'a'\np1\nI1\nscposix\nsystem\n.",
        "legacy-sysinfo-payload": LEGACY_MAGIC + pickle.dumps(1001, protocol=2) + b"\x80\x02cos\nsystem\n.",
    }
    # A pickle that opens with a float whose last byte is `{`: its first 8 bytes read as a
    # small safetensors header length.
    trick = b"G\x00\x00\x00\x00\x00\x00\x00{0" + b"\x8c\x40" + b"x" * 64 + b"0" + system
    cases["float-brace-prefix"] = trick
    return cases


# ---------------------------------------------------------------------------------------------
# Random opcode streams.

NAMES = sorted(ALLOW) + [
    ("os", "system"), ("posix", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"),
    ("builtins", "len.__self__.eval"), ("collections", "OrderedDict.fromkeys"),
    ("torch", "load"), ("torch._utils", "_rebuild_tensor_v2.__globals__"),
    ("collections ", "OrderedDict"), ("collections", "OrderedDict\x00"), ("Collections", "deque"),
    ("__builtin__", "reduce"), ("copy_reg", "_reconstructor"), ("functools", "partial"),
    ("operator", "attrgetter"), ("webbrowser", "open"), ("runpy", "_run_code"),
    ("numpy", "load"), ("torch.serialization", "load"), ("io", "open"),
    ("pytorch_lightning.callbacks", "ModelCheckpoint"), ("collections", "Counter"),
    ("builtins", "print"), ("builtins", "type"), ("builtins", "object"),
]


def enc_string(rng, s):
    """One string opcode for `s`, picked at random, with random CPython escapes."""
    b = s.encode("utf-8")
    k = rng.randrange(8)
    if k == 0:
        return b"\x8c" + bytes([len(b)]) + b if len(b) < 256 else b"X" + struct.pack("<I", len(b)) + b
    if k == 1:
        return b"X" + struct.pack("<I", len(b)) + b
    if k == 2:
        return b"\x8d" + struct.pack("<Q", len(b)) + b
    if k == 3:
        return b"T" + struct.pack("<i", len(b)) + b
    if k == 4 and len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    if k == 5 and "\n" not in s and "\\" not in s:
        out = "".join(f"\\u{ord(c):04x}" if rng.random() < 0.3 else c for c in s)
        return b"V" + out.encode("latin-1", "backslashreplace") + b"\n"
    # STRING with escapes
    q = rng.choice([b"'", b'"'])
    out = bytearray()
    for c in b:
        r = rng.random()
        if r < 0.2:
            out += b"\\x%02x" % c
        elif r < 0.3:
            out += b"\\%o" % c
        elif c in b"\\'\"\n" or c < 32 or c > 126:
            out += b"\\x%02x" % c
        else:
            out.append(c)
    return b"S" + q + bytes(out) + q + b"\n"


def random_pickle(rng):
    out = bytearray()
    proto = rng.choice([0, 1, 2, 2, 3, 4, 4, 5])
    if proto >= 2:
        out += b"\x80" + bytes([proto])
    depth, marks, memo = 0, [], []
    for _ in range(rng.randint(1, 30)):
        k = rng.randrange(22)
        floor = marks[-1] if marks else 0
        avail = depth - floor
        if k <= 2:  # GLOBAL
            m, n = rng.choice(NAMES)
            out += b"c" + m.encode() + b"\n" + n.encode() + b"\n"
            depth += 1
        elif k <= 5:  # STACK_GLOBAL with encoded strings (maybe through the memo)
            m, n = rng.choice(NAMES)
            out += enc_string(rng, m) + enc_string(rng, n) + b"\x93"
            depth += 1
        elif k == 6:  # INST
            m, n = rng.choice(NAMES)
            out += b"(" + (b"K\x01" if rng.random() < 0.5 else b"") + b"i" + m.encode() + b"\n" + n.encode() + b"\n"
            depth += 1
        elif k == 7:  # OBJ
            m, n = rng.choice(NAMES)
            out += b"(c" + m.encode() + b"\n" + n.encode() + b"\n" + b"o"
            depth += 1
        elif k == 8 and avail >= 2:  # REDUCE / NEWOBJ
            out += rng.choice([b"R", b"\x81"])
            depth -= 1
        elif k == 9 and avail >= 3:
            out += b"\x92"
            depth -= 2
        elif k == 10 and avail >= 2:  # BUILD
            out += b"b"
            depth -= 1
        elif k == 11:  # a string, memoized
            s = rng.choice(NAMES)[rng.randrange(2)]
            out += enc_string(rng, s)
            depth += 1
            i = rng.randrange(300)
            op = rng.randrange(4)
            out += [b"q" + bytes([i % 256]), b"r" + struct.pack("<I", i), b"p%d\n" % i, b"\x94"][op]
            memo.append(i if op < 3 else None)
        elif k == 12 and memo:  # GET
            i = rng.choice([x for x in memo if x is not None] or [0])
            out += rng.choice([b"h" + bytes([i % 256]), b"j" + struct.pack("<I", i), b"g%d\n" % i])
            depth += 1
        elif k == 13 and avail >= 1:
            out += b"2"
            depth += 1
        elif k == 14 and avail >= 1:
            out += b"0"
            depth -= 1
        elif k == 15:
            out += b"("
            marks.append(depth)
        elif k == 16 and marks:
            out += rng.choice([b"t", b"l"])
            depth = marks.pop() + 1
        elif k == 17:
            out += rng.choice([b"N", b"K\x07", b")", b"}", b"]", b"\x88"])
            depth += 1
        elif k == 18 and avail >= 1:
            out += b"\x85"
        elif k == 19 and avail >= 2:
            out += b"\x86"
            depth -= 1
        elif k == 20 and marks and avail == 0:
            out += b"0"  # POP of a MARK
            marks.pop()
        elif k == 21 and rng.random() < 0.2:
            out += bytes([rng.randrange(256)])  # noise
    if depth - (marks[-1] if marks else 0) < 1:
        out += b"N"
    out += b"."
    if rng.random() < 0.1:
        out += random_pickle(rng)  # stacked
    return bytes(out)


def corpus(rng, n_random):
    files = {}
    for name, data in hand_written().items():
        files[f"hand-{name}.pkl"] = data
    system = b"\x80\x02cposix\nsystem\n(S'true'\ntR."
    for proto in (2, 4):
        files[f"torch-plain-p{proto}.pt"] = torch_pickle(state_dict(5, rng), proto)
    files["torch-legacy.ckpt"] = LEGACY_MAGIC + pickle.dumps(1001, protocol=2) + pickle.dumps(
        {"protocol_version": 1001, "little_endian": True}, protocol=2
    ) + torch_pickle(state_dict(3, rng)) + pickle.dumps(["0", "1", "2"], protocol=2)
    files["torch-zip.ckpt"] = torch_zip(torch_pickle(state_dict(4, rng)))
    files["torch-zip-hidden-member.ckpt"] = torch_zip(
        torch_pickle(state_dict(2, rng)), [("archive/extra/hidden.pkl", system)]
    )
    files["torch-zip-duplicate-data-pkl.ckpt"] = torch_zip(
        torch_pickle(state_dict(2, rng)), [("archive/data.pkl", system)]
    )
    files["torch-zip-nested-archive.ckpt"] = torch_zip(
        torch_pickle(state_dict(2, rng)), [("other/data.pkl", system)]
    )
    files["torch-zip-evil-main.ckpt"] = torch_zip(system)
    for i in range(n_random):
        data = random_pickle(rng)
        if rng.random() < 0.05:
            files[f"random-{i:05}.ckpt"] = torch_zip(torch_pickle(state_dict(1, rng)), [("archive/x.pkl", data)])
        else:
            files[f"random-{i:05}.pkl"] = data
    return files


def scan(binary, path):
    p = subprocess.run([binary, "scan", "-o", "json", path], capture_output=True, timeout=60)
    try:
        return json.loads(p.stdout)["verdict"], p.returncode
    except (ValueError, KeyError):
        return f"error rc={p.returncode}: {p.stderr.decode(errors='replace').strip()}", p.returncode


def main():
    warnings.simplefilter("ignore")
    # A random length field can make CPython allocate gigabytes; under a cap that is a
    # MemoryError, which ends the stream like any other unpickling error.
    import resource

    cap = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.unraisablehook = lambda *_: None  # stub objects make CPython complain while freeing
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--random", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--keep", help="write the corpus here instead of a temp dir")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    files = corpus(rng, a.random)
    tmp = a.keep or tempfile.mkdtemp(prefix="pickle-gate-")
    os.makedirs(tmp, exist_ok=True)
    misses, false_alarms, must_refuse, clean_ok, refusable = [], [], 0, 0, set()
    for name, data in sorted(files.items()):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        seen = resolved_in_zip(data) if data[:4] == b"PK\x03\x04" else resolved_by_cpython(data)
        outside = sorted(seen - ALLOW)
        verdict, rc = scan(a.bin, path)
        if rc not in (0, 2) and not verdict.startswith("error"):
            misses.append((name, outside, f"exit code {rc}"))
        if outside:
            refusable.add(name)
            must_refuse += 1
            if verdict == "clean":
                misses.append((name, outside, verdict))
            elif verdict != "dangerous" and any(certainly_dangerous(*g) for g in outside):
                misses.append((name, outside, f"{verdict} (must be dangerous)"))
        elif verdict == "clean":
            clean_ok += 1
        elif not name.startswith("random-"):
            false_alarms.append((name, verdict))
    print(f"{len(files)} files: {must_refuse} resolve a global outside the allow-list, "
          f"{clean_ok} clean, {len(misses)} missed")
    for name, verdict in false_alarms:
        print(f"  note: {name} resolves only allowed globals but scans {verdict}")
    for name, outside, verdict in misses:
        print(f"  MISS {name}: CPython resolves {outside}; scan says {verdict}")
    inert = [n for n in files if n.startswith("hand-") and n not in refusable]
    if inert:
        print(f"FAIL: hand-written payloads that CPython resolves nothing outside the allow-list from: {inert}")
        return 1
    for must_be_clean in ("torch-plain-p2.pt", "torch-plain-p4.pt", "torch-legacy.ckpt", "torch-zip.ckpt"):
        if any(n == must_be_clean for n, _ in false_alarms):
            print(f"FAIL: {must_be_clean} is a plain torch-style save and must scan clean")
            return 1
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
