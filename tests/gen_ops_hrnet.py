#!/usr/bin/env python3
"""Fixtures for tests/test_ops_hrnet.c: the ops of RITM's OCR head against PyTorch, as RITM computes them
(isegm/model/modeling/ocr.py @ b9b4460: SpatialGather_Module.forward, ObjectAttentionBlock2D.forward with
scale 1, its 1x1 conv stacks left out: they are ordinary convolutions in i3rt's graph), and the two ops of
Slice-and-Conquer's mask attention as tools/snc_models.py's MaskAttention computes them (its pool, and
the gate feats * 2 sigmoid(g); the FC layers are 1x1x1 convolutions in i3rt's graph).

Writes DIR/<op>_<i>.safetensors (seeded; float64 torch, stored as float32 inputs and outputs):
  spatial_gather_i    feats [n, c, d, h, w], logits [n, k, d, h, w] -> y [n, c, k, 1, 1]
  object_attention_i  q [n, ck, d, h, w], key [n, ck, k, 1, 1], value [n, cv, k, 1, 1] -> y [n, cv, d, h, w]
  mask_pool_i         feats [n, c, ceil(d/4), ceil(h/4), ceil(w/4)], guide [n, 2, d, h, w] (masks on a few
                      slices, annotated indicator) -> y [n, 2c, 1, 1, 1]
  channel_gate_i      x [n, c, d, h, w], gate [n, c, 1, 1, 1] -> y [n, c, d, h, w]
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from snc_models import MaskAttention  # noqa: E402


def spatial_gather(feats, probs):
    b, k = probs.size(0), probs.size(1)
    probs = F.softmax(probs.reshape(b, k, -1), dim=2)  # batch x k x positions
    f = feats.reshape(b, feats.size(1), -1).permute(0, 2, 1)  # batch x positions x c
    return torch.matmul(probs, f).permute(0, 2, 1).reshape(b, feats.size(1), k, 1, 1)


def object_attention(q, key, value):
    b, ck = q.size(0), q.size(1)
    query = q.reshape(b, ck, -1).permute(0, 2, 1)
    sim = F.softmax((ck ** -.5) * torch.matmul(query, key.reshape(b, ck, -1)), dim=-1)
    context = torch.matmul(sim, value.reshape(b, value.size(1), -1).permute(0, 2, 1)).permute(0, 2, 1)
    return context.reshape(b, value.size(1), *q.shape[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(7)

    def rand(*shape, scale=1.0):  # float32 values, computed on in float64
        return (scale * torch.randn(shape, generator=gen)).float().double()

    def save(name, tensors):
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, os.path.join(args.out, name + ".safetensors"))

    # (n, c, k, d, h, w, logit scale): one class as RITM, several; large logits test the max subtraction
    for i, (n, c, k, d, h, w, s) in enumerate([(1, 5, 1, 1, 6, 7, 1.0), (2, 4, 3, 3, 5, 6, 4.0),
                                                (1, 3, 2, 1, 9, 4, 60.0)]):
        feats, logits = rand(n, c, d, h, w), rand(n, k, d, h, w, scale=s)
        save(f"spatial_gather_{i}", {"feats": feats, "logits": logits, "y": spatial_gather(feats, logits)})
    # (n, ck, cv, k, d, h, w)
    for i, (n, ck, cv, k, d, h, w) in enumerate([(1, 8, 5, 1, 1, 6, 7), (2, 16, 6, 3, 2, 5, 4),
                                                 (1, 64, 7, 5, 1, 3, 8)]):
        q, key, value = rand(n, ck, d, h, w), rand(n, ck, k, 1, 1, scale=2.0), rand(n, cv, k, 1, 1)
        save(f"object_attention_{i}", {"q": q, "key": key, "value": value, "y": object_attention(q, key, value)})
    # (n, c, d, h, w, annotated slices (axis, index), mask density): sizes not divisible by 4, slices on the
    # borders and crossing, nothing annotated (both averages 0), everything annotated as background
    att = MaskAttention(4).double()
    for i, (n, c, d, h, w, slices, density) in enumerate([
            (1, 5, 9, 13, 10, [(0, 4), (1, 0), (2, 9)], 0.6), (2, 3, 4, 5, 7, [(0, 3), (2, 2)], 0.3),
            (1, 4, 8, 8, 8, [], 0.5), (1, 3, 5, 6, 4, [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)], 0.0)]):
        feats = rand(n, c, (d + 3) // 4, (h + 3) // 4, (w + 3) // 4)
        guide = torch.zeros(n, 2, d, h, w, dtype=torch.float64)
        for axis, index in slices:
            sl = [slice(None), 0] + [slice(None)] * 3
            sl[2 + axis] = index
            guide[tuple(sl)] = (torch.rand(guide[tuple(sl)].shape, generator=gen) < density).double()
            sl[1] = 1
            guide[tuple(sl)] = 1.0
        save(f"mask_pool_{i}", {"feats": feats, "guide": guide, "y": att.pool(feats, guide)[:, :, None, None, None]})
    for i, (n, c, d, h, w) in enumerate([(1, 5, 3, 4, 6), (2, 3, 1, 7, 5)]):
        x, gate = rand(n, c, d, h, w), rand(n, c, 1, 1, 1, scale=3.0)
        save(f"channel_gate_{i}", {"x": x, "gate": gate, "y": x * 2 * torch.sigmoid(gate)})


if __name__ == "__main__":
    main()
