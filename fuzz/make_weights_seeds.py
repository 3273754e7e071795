#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_weights into fuzz/corpus/weights/ (standard library only).

Small valid i3rt/safetensors files that between them use every accepted dtype, a 0-d and an empty
tensor, metadata, header padding and nnU-Net-style names, so the fuzzer starts from inputs that pass
validation and mutates them into every way of failing it."""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "weights")
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8, "U8": 1}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a counting pattern."""
    header, data = {}, b""
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((len(data) + i) * 37 % 256 for i in range(n))
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def main():
    os.makedirs(HERE, exist_ok=True)
    net = json.dumps({"class": "PlainConvUNet", "dims": 3, "input_channels": 1, "num_classes": 2})
    seeds = {
        "empty_header": safetensors([]),
        "all_dtypes": safetensors([(f"t_{d.lower()}", d, [2, 3]) for d in SIZES]),
        "scalar_and_empty": safetensors([("s", "F32", []), ("e", "F16", [0, 4]), ("u", "U8", [3])], pad=False),
        "nnunet_like": safetensors(
            [("encoder.stages.0.0.convs.0.conv.weight", "F32", [2, 1, 1, 3, 3]),
             ("encoder.stages.0.0.convs.0.conv.bias", "F32", [2]),
             ("encoder.stages.0.0.convs.0.norm.weight", "F16", [2]),
             ("decoder.seg_layers.0.weight", "BF16", [2, 2, 1, 1, 1])],
            {"format": "i3rt-weights-1", "network": net, "fold": "0", "mirror_axes": "[0, 1, 2]"}),
    }
    for name, blob in seeds.items():
        with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
            f.write(blob)
        print(f"{name}: {len(blob)} bytes")


if __name__ == "__main__":
    main()
