"""NNIA arrays written by nnInteractive's own serialization.py, for tests/test_nnia.c.

  gen_nnia.py --out DIR      writes DIR/<case>.nnia (pack_array's bytes), DIR/<case>.raw (the array's
                             bytes, C order, little-endian) and DIR/manifest.json ({"cases": [{name,
                             dtype, shape}]}): every dtype of the protocol, both codecs, both filters,
                             all-zero arrays (Blosc2 special-value chunks), 0-d, empty and 4-d arrays,
                             and arrays split into several chunks as pack_array splits them above 1 GiB.
  gen_nnia.py --check DIR --ref FIXDIR
                             reads the DIR/<case>.nnia files i3rt wrote and checks that unpack_array
                             gives back FIXDIR/<case>.raw with the manifest's dtype and shape (exit 1 if
                             not): i3rt's encoder against Python's decoder.
"""

import argparse
import json
import os
import struct
import sys

import blosc2
import numpy as np
from nnInteractive.inference.remote import serialization
from nnInteractive.inference.remote.serialization import pack_array, unpack_array

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
          "float64"]


def random_array(rng, dtype, shape):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) < 0.3
    if dt.kind in "iu":
        info = np.iinfo(dt)
        # a few distinct values in long runs (masks, label maps) plus the extremes of the type
        a = rng.integers(0, 4, size=shape).astype(dt)
        flat = a.reshape(-1)
        if flat.size >= 2:
            flat[0], flat[-1] = info.min, info.max
        return a
    a = (rng.standard_normal(shape) * 100).astype(dt)
    flat = a.reshape(-1)
    if flat.size >= 3:
        flat[0], flat[1], flat[2] = np.inf, -0.0, np.finfo(dt).max
    return a


def cases(rng):
    """(name, array, pack_array keyword arguments, chunk size to split at or None)."""
    out = []
    for dtype in DTYPES:
        a = random_array(rng, dtype, (7, 9, 11))
        out.append((f"{dtype}_zstd", a, {}, None))
        out.append((f"{dtype}_lz4_nofilter", a, {"codec": blosc2.Codec.LZ4, "filters": [blosc2.Filter.NOFILTER]}, None))
        out.append((f"{dtype}_zeros", np.zeros((5, 6, 7), dtype=dtype), {}, None))
    out.append(("float32_image_4d", random_array(rng, "float32", (1, 16, 20, 24)), {}, None))
    out.append(("int16_image_4d", random_array(rng, "int16", (1, 12, 10, 8)), {"clevel": 9}, None))
    out.append(("uint8_mask_3d", (rng.random((24, 20, 16)) < 0.1).astype(np.uint8),
                {"filters": [blosc2.Filter.NOFILTER]}, None))
    out.append(("float64_1d", np.array([3.5, -1e300, 0.0]), {}, None))  # (pack_array makes 0-d arrays 1-d)
    out.append(("uint8_one_voxel", np.ones((1, 1, 1), dtype=np.uint8), {}, None))
    # pack_array splits at 1 GiB; the same code with a smaller _CHUNK_SIZE writes the same layout
    out.append(("float32_chunked", random_array(rng, "float32", (6, 10, 10)), {}, 1000))
    out.append(("uint8_chunked_zeros_tail", np.concatenate([np.ones(300, np.uint8), np.zeros(700, np.uint8)]), {}, 256))
    return out


def generate(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261126)
    manifest = []
    for name, a, kwargs, chunk in cases(rng):
        saved = serialization._CHUNK_SIZE
        if chunk is not None:
            serialization._CHUNK_SIZE = chunk
        try:
            packed = pack_array(a, **kwargs)
        finally:
            serialization._CHUNK_SIZE = saved
        back = unpack_array(packed)
        assert back.dtype == a.dtype and back.shape == a.shape and back.tobytes() == a.tobytes(), name
        if chunk is not None:
            (nchunks,) = struct.unpack_from("<I", packed, 8 + len(a.dtype.name) + 8 * a.ndim)
            assert nchunks > 1, name
        with open(os.path.join(out_dir, name + ".nnia"), "wb") as f:
            f.write(packed)
        with open(os.path.join(out_dir, name + ".raw"), "wb") as f:
            f.write(np.ascontiguousarray(a).tobytes())
        manifest.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"cases": manifest}, f, indent=1)
    print(f"wrote {len(manifest)} NNIA cases to {out_dir}")


def check(dir_, ref_dir):
    with open(os.path.join(ref_dir, "manifest.json")) as f:
        manifest = json.load(f)["cases"]
    bad = 0
    for case in manifest:
        path = os.path.join(dir_, case["name"] + ".nnia")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            arr = unpack_array(f.read())
        with open(os.path.join(ref_dir, case["name"] + ".raw"), "rb") as f:
            raw = f.read()
        ok = arr.dtype.name == case["dtype"] and list(arr.shape) == case["shape"] and arr.tobytes() == raw
        if not ok:
            print(f"MISMATCH {case['name']}: {arr.dtype} {arr.shape}")
            bad += 1
    print(f"python unpack_array read {len(manifest)} i3rt encodings, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--check")
    p.add_argument("--ref")
    args = p.parse_args()
    if args.check:
        sys.exit(check(args.check, args.ref))
    generate(args.out)
