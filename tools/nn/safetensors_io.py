"""Reads and writes safetensors files with numpy alone (the format: kernels/nn/safetensors.h).

Loom's reference tools (tools/braggnn, tools/ptychonn) write weights and golden data with it, so
they need no third-party safetensors package:

    from safetensors_io import save, load
    save("w.safetensors", {"conv.weight": array}, metadata={"network": "braggnn"})
    tensors, metadata = load("w.safetensors")

Arrays are written as little-endian float32 (F32), in name order, data 8-byte aligned: the same
layout Loom's C++ writer produces.
"""
import json
import struct

import numpy as np

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}


def save(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = {}
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[name], dtype="<f4"))
        arrays[name] = a
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(arrays):
            f.write(arrays[name].tobytes())


def load(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = entry["dtype"]
        if dtype == "BF16":
            raw = np.frombuffer(data[begin:end], dtype="<u2").astype("<u4") << 16
            a = raw.view("<f4")
        else:
            a = np.frombuffer(data[begin:end], dtype=_DTYPES[dtype])
        tensors[name] = a.reshape(entry["shape"]).astype(np.float32)
    return tensors, metadata


if __name__ == "__main__":
    # Self-check: a round trip through this module.
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save(p, {"a": np.arange(6).reshape(2, 3), "b": np.array([1.5])}, {"k": "v"})
        t, m = load(p)
        assert m == {"k": "v"} and t["a"].shape == (2, 3) and t["a"][1, 2] == 5 and t["b"][0] == 1.5
    print("ok")
