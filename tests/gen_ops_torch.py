"""Fixtures for test_ops_torch.c: every CPU op's inputs, parameters and PyTorch's output.

Usage: python tests/gen_ops_torch.py --out DIR

Writes DIR/<op>_<i>.safetensors, one case per file (seeded, odd and anisotropic shapes): tensors x, w,
b, ... and y (PyTorch's result), parameters as a JSON string in the metadata key "params". Ops:
F.conv3d, F.conv2d (stored with D = 1), F.conv_transpose3d, ACSConv (its maths written with F.conv3d as
in shared/notes/snc-ritm-acs.md section 2), F.instance_norm, batch norm folding (conv then F.batch_norm
in eval), F.relu / F.leaky_relu, residual add, F.interpolate (trilinear / bilinear, both align_corners),
softmax / normalized entropy / max softmax probability / argmax over channels.
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SLOPE = 0.01


def act(y, kind):
    if kind == "relu":
        return F.relu(y)
    if kind == "leaky":
        return F.leaky_relu(y, SLOPE)
    return y


def save(out, op, index, tensors, params):
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items() if v is not None}
    save_file(tensors, os.path.join(out, f"{op}_{index}.safetensors"), metadata={"params": json.dumps(params)})


def rand(*shape):
    return torch.rand(*shape) * 2 - 1


def gen_conv(out):
    # (x shape, cout, kernel, stride, pad, act, bias)
    cases = [
        ((2, 3, 3, 5, 7), 5, (3, 3, 3), (1, 1, 1), (1, 1, 1), "leaky", True),
        ((1, 3, 3, 5, 7), 5, (1, 3, 3), (1, 2, 2), (0, 1, 1), "none", True),
        ((1, 3, 5, 6, 7), 5, (3, 3, 3), (2, 2, 2), (1, 1, 1), "relu", False),
        ((1, 4, 5, 3, 4), 6, (3, 1, 1), (1, 1, 1), (1, 0, 0), "leaky", True),
        ((2, 7, 3, 5, 7), 5, (1, 1, 1), (1, 1, 1), (0, 0, 0), "leaky", True),
        ((1, 2, 4, 5, 6), 3, (3, 2, 3), (3, 2, 1), (0, 0, 1), "none", True),
        ((1, 32, 6, 9, 11), 24, (3, 3, 3), (1, 1, 1), (1, 1, 1), "leaky", True),
        ((1, 16, 3, 7, 37), 10, (3, 3, 3), (1, 1, 1), (1, 1, 1), "leaky", True),  # i3rt's direct path
        ((2, 8, 4, 9, 33), 6, (1, 3, 3), (2, 2, 1), (0, 1, 1), "none", True),
    ]
    for i, (xs, cout, k, s, p, a, bias) in enumerate(cases):
        x, w = rand(*xs), rand(cout, xs[1], *k) * 0.5
        b = rand(cout) if bias else None
        y = act(F.conv3d(x, w, b, stride=s, padding=p), a)
        save(out, "conv", i, {"x": x, "w": w, "b": b, "y": y}, {"cout": cout, "k": k, "stride": s, "pad": p, "act": a})
    # 2D convolutions: F.conv2d on [N, C, H, W], stored as D = 1 with kernels of depth 1
    cases2d = [((1, 3, 9, 11), 4, (3, 3), (1, 1), (1, 1), "relu"), ((2, 5, 10, 7), 6, (3, 3), (2, 2), (1, 1), "leaky"),
               ((1, 4, 8, 9), 3, (1, 1), (1, 1), (0, 0), "none"), ((1, 8, 20, 45), 5, (3, 3), (1, 1), (1, 1), "leaky")]
    for j, (xs, cout, k, s, p, a) in enumerate(cases2d):
        x, w, b = rand(*xs), rand(cout, xs[1], *k) * 0.5, rand(cout)
        y = act(F.conv2d(x, w, b, stride=s, padding=p), a)
        save(out, "conv", len(cases) + j, {"x": x.unsqueeze(2), "w": w.unsqueeze(2), "b": b, "y": y.unsqueeze(2)},
             {"cout": cout, "k": (1,) + k, "stride": (1,) + s, "pad": (0,) + p, "act": a})


def gen_conv_transpose(out):
    cases = [((2, 4, 3, 5, 7), 3, (2, 2, 2), True), ((1, 5, 3, 5, 7), 2, (1, 2, 2), False),
             ((1, 3, 1, 5, 7), 4, (1, 2, 2), True), ((1, 40, 5, 6, 7), 24, (2, 2, 2), True)]
    for i, (xs, cout, k, bias) in enumerate(cases):
        x, w = rand(*xs), rand(xs[1], cout, *k)
        b = rand(cout) if bias else None
        y = F.conv_transpose3d(x, w, b, stride=k)
        save(out, "conv_transpose", i, {"x": x, "w": w, "b": b, "y": y}, {"cout": cout, "k": k})


def acs_conv_torch(x, w, b, k, s, p):
    """ACSConv (M3DV/ACSConv acs_conv_f, pad-and-slice route): output channels split (axial, coronal,
    sagittal); each part's 2D kernel is unsqueezed on its kernel-less axis; that axis is zero-padded by p
    and sliced from k // 2 so that the 1-tap convolution reads the centre of each 3D window."""
    cout = w.shape[0]
    split = [cout // 3 + (1 if i < cout % 3 else 0) for i in range(3)]
    parts, first = [], 0
    for axis, size in enumerate(split):
        if size == 0:
            continue
        wp = w[first:first + size].unsqueeze(2 + axis)
        first += size
        pad3 = [p, p, p]
        pad3[axis] = 0
        n = x.shape[2 + axis]
        o = (n + 2 * p - k) // s + 1
        pad_arg = [0, 0, 0, 0, 0, 0]  # F.pad order: w, h, d
        pad_arg[2 * (2 - axis)] = pad_arg[2 * (2 - axis) + 1] = p
        xp = F.pad(x, pad_arg).narrow(2 + axis, k // 2, (o - 1) * s + 1)
        parts.append(F.conv3d(xp, wp, None, stride=s, padding=pad3))
    y = torch.cat(parts, 1)
    return y + b[None, :, None, None, None] if b is not None else y


def gen_acs_conv(out):
    # (x shape, cout, k, stride, pad, act); the last two have p != k // 2 (centre tap off the corner)
    cases = [((1, 3, 5, 6, 7), 5, 3, 1, 1, "none"), ((2, 4, 7, 5, 6), 7, 3, 2, 1, "leaky"),
             ((1, 3, 4, 5, 6), 4, 1, 1, 0, "relu"), ((1, 2, 9, 7, 8), 8, 5, 2, 2, "none"),
             ((1, 3, 7, 8, 9), 6, 3, 1, 0, "none"), ((1, 2, 6, 7, 9), 5, 3, 2, 2, "none")]
    for i, (xs, cout, k, s, p, a) in enumerate(cases):
        x, w, b = rand(*xs), rand(cout, xs[1], k, k) * 0.5, rand(cout)
        y = act(acs_conv_torch(x, w, b, k, s, p), a)
        save(out, "acs_conv", i, {"x": x, "w": w, "b": b, "y": y}, {"cout": cout, "k": k, "stride": s, "pad": p, "act": a})


def gen_instance_norm(out):
    cases = [((2, 3, 3, 5, 7), True, "leaky", 0.0), ((1, 4, 1, 9, 11), False, "none", 0.0),
             ((1, 2, 17, 19, 23), True, "relu", 0.0), ((1, 3, 3, 5, 7), True, "none", 50.0)]
    for i, (xs, affine, a, offset) in enumerate(cases):
        x = rand(*xs) * 3 + offset
        g, b = (torch.rand(xs[1]) + 0.5, rand(xs[1])) if affine else (None, None)
        y = act(F.instance_norm(x, weight=g, bias=b, eps=1e-5), a)
        save(out, "instance_norm", i, {"x": x, "gamma": g, "beta": b, "y": y}, {"eps": 1e-5, "act": a})


def gen_batch_norm(out):
    cases = [((1, 3, 4, 5, 6), 5, (3, 3, 3), (1, 1, 1), True), ((1, 4, 1, 7, 9), 6, (1, 3, 3), (0, 1, 1), False)]
    for i, (xs, cout, k, p, bias) in enumerate(cases):
        x, w = rand(*xs), rand(cout, xs[1], *k) * 0.5
        b = rand(cout) if bias else None
        gamma, beta, mean, var = torch.rand(cout) + 0.5, rand(cout), rand(cout), torch.rand(cout) * 2 + 0.1
        y = F.batch_norm(F.conv3d(x, w, b, padding=p), mean, var, gamma, beta, training=False, eps=1e-5)
        save(out, "batch_norm", i, {"x": x, "w": w, "b": b, "gamma": gamma, "beta": beta, "mean": mean, "var": var,
                                    "y": y}, {"cout": cout, "k": k, "stride": (1, 1, 1), "pad": p, "eps": 1e-5})


def gen_elementwise(out):
    for i, a in enumerate(["relu", "leaky"]):
        x, r = rand(3, 5, 7) * 3, rand(3, 5, 7) * 3
        save(out, "activation", i, {"x": x, "y": act(x, a)}, {"act": a})
        save(out, "add", i, {"x": x, "r": r, "y": act(x + r, a)}, {"act": a})


def gen_resize(out):
    # (x shape, out size (d, h, w)); 4D inputs are bilinear and stored with D = 1
    cases = [((1, 2, 3, 5, 7), (5, 9, 11)), ((2, 3, 6, 7, 9), (3, 4, 5)), ((1, 2, 4, 5, 6), (7, 3, 13)),
             ((1, 2, 7, 9), (1, 13, 5)), ((1, 1, 5, 4), (1, 10, 8))]
    i = 0
    for xs, size in cases:
        for align in (False, True):
            x = rand(*xs)
            if len(xs) == 4:
                y = F.interpolate(x, size=size[1:], mode="bilinear", align_corners=align).unsqueeze(2)
                x = x.unsqueeze(2)
            else:
                y = F.interpolate(x, size=size, mode="trilinear", align_corners=align)
            save(out, "resize", i, {"x": x, "y": y}, {"out": size, "align_corners": align})
            i += 1


def gen_softmax(out):
    for i, (n, c, s, scale) in enumerate([(2, 5, 37, 3.0), (1, 2, 101, 10.0), (1, 14, 23, 1.0), (1, 3, 17, 300.0)]):
        logits = torch.randn(n, c, s) * scale
        p = torch.softmax(logits, 1)
        p64 = torch.softmax(logits.double(), 1)
        entropy = torch.special.entr(p64).sum(1) / math.log(c)
        save(out, "softmax", i, {"x": logits, "probs": p, "entropy": entropy, "msp": p64.max(1).values,
                                 "argmax": logits.argmax(1).float()}, {"n": n, "c": c, "s": s})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    for gen in (gen_conv, gen_conv_transpose, gen_acs_conv, gen_instance_norm, gen_batch_norm, gen_elementwise,
                gen_resize, gen_softmax):
        gen(args.out)
    print(f"wrote {len(os.listdir(args.out))} fixture files to {args.out}")


if __name__ == "__main__":
    main()
