#!/usr/bin/env python3
"""Fixtures for tests/test_ops_hrnet.c: the ops of RITM's OCR head against PyTorch, as RITM computes them
(isegm/model/modeling/ocr.py @ b9b4460: SpatialGather_Module.forward, ObjectAttentionBlock2D.forward with
scale 1, its 1x1 conv stacks left out: they are ordinary convolutions in i3rt's graph).

Writes DIR/<op>_<i>.safetensors (seeded; float64 torch, stored as float32 inputs and outputs):
  spatial_gather_i    feats [n, c, d, h, w], logits [n, k, d, h, w] -> y [n, c, k, 1, 1]
  object_attention_i  q [n, ck, d, h, w], key [n, ck, k, 1, 1], value [n, cv, k, 1, 1] -> y [n, cv, d, h, w]
"""
import argparse
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


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


if __name__ == "__main__":
    main()
