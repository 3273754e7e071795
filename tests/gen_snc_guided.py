#!/usr/bin/env python3
"""Fixtures for tests/test_snc_guided.c: Slice-and-Conquer's guided 3D network (tools/snc_models.py
GuidedHRNetModel through to_acs: RITM's HRNet with two more coord channels and the mask attention) against
i3rt, and the weight transfer from 2D.

The model is HRNet-18s (small: 2 blocks per branch, OCR width 48, as RITM's hrnet18s config) to keep this
fast; the code path is the same as HRNet-18's. Seeded random weights as tests/gen_hrnet.py makes them
(randomize, then batch-norm statistics measured on random 2D inputs with guide channels, and perturbed),
maps_transform.0's guide columns and the attention's FC layers random too (so that the guide and the gate
matter; the generator prints the gate's range). Saved as a RITM-style checkpoint and converted with
tools/convert_pt/convert_ritm.py --guided; the reference runs in float64 on the float32 weights.

Asserted here (PyTorch only): a GuidedHRNetModel loaded with guided_state_from_2d(2D weights) gives the
same logits as the plain 2D model converted to ACS, whatever the guide channels hold (the transfer starts
as the 2D network).

Writes into --out:
  guided3d.safetensors   the converted weights (acs "1", network snc_guided true)
  io.safetensors         "volume" [d, h, w] in [0, 1], "prev" [d, h, w], "clicks" [n, 4] (z, y, x, positive),
      "mask_slices" [m, 2] (axis, index), "mask_<i>" [rows, cols] (0/1), "input" [1, 8, d, h, w] (encoded),
      "logits_low" [1, 1, d', h', w'], "logits" [1, 1, d, h, w]; d, h, w = 18, 21, 24
  bad_2d.safetensors     guided3d with metadata "acs": "0"
  bad_hidden.safetensors guided3d whose network has no mask_attention_hidden
  plain3d.safetensors    a plain ACS RITM network (guided3d without the attention and the guide channels)
"""
import argparse
import json
import os
import sys
import warnings

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from gen_hrnet import calibrate_bn, randomize, save_converted  # noqa: E402
from gen_hrnet import random_case as gen_hrnet_random_case  # noqa: E402
from snc_models import (GuidedHRNetModel, HRNetModel, dist_maps, guided_input, guided_state_from_2d,  # noqa: E402
                        interpolate, to_acs)

SHAPE = (18, 21, 24)
CONFIG = dict(width=18, ocr_width=48, small=True, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
              use_disks=True, norm_radius=5, with_prev_mask=True)


def points(clicks):
    """(z, y, x, positive) -> dist_maps' [1, 2N, 3], positives first, (-1, -1, -1) padding."""
    pos = [c[:3] for c in clicks if c[3]]
    neg = [c[:3] for c in clicks if not c[3]]
    n = max(len(pos), len(neg), 1)
    pts = torch.full((1, 2 * n, 3), -1.0)
    for i, c in enumerate(pos):
        pts[0, i] = torch.tensor(c)
    for i, c in enumerate(neg):
        pts[0, n + i] = torch.tensor(c)
    return pts


def random_masks(gen, shape, slices):
    """A blob-like 0/1 mask on each (axis, index) slice."""
    out = []
    for axis, index in slices:
        rows, cols = [s for a, s in enumerate(shape) if a != axis]
        r = torch.arange(rows, dtype=torch.float32)[:, None]
        c = torch.arange(cols, dtype=torch.float32)[None, :]
        cr, cc = rows * (0.3 + 0.4 * torch.rand(1, generator=gen)), cols * (0.3 + 0.4 * torch.rand(1, generator=gen))
        rad = min(rows, cols) * (0.2 + 0.15 * torch.rand(1, generator=gen))
        out.append((axis, index, ((r - cr) ** 2 + (c - cc) ** 2 <= rad ** 2).to(torch.uint8)))
    return out


def random_case(gen, shape, clicks, slices):
    volume = torch.rand(shape, generator=gen)
    volume = torch.nn.functional.avg_pool3d(volume[None, None], 3, 1, 1, count_include_pad=False)[0, 0]  # smoother
    prev = torch.sigmoid(3 * torch.randn(shape, generator=gen))
    masks = random_masks(gen, shape, slices)
    return volume, prev, masks, guided_input(volume, prev, points(clicks), masks)


class Plain2D(nn.Module):
    """The guided model's 2D path without the mask attention (3D only), for calibrate_bn."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward_encoded(self, x):
        return self.model.feature_extractor(x[:, :3], self.model.maps_transform(x[:, 3:]))


def calibration_batch(model, gen, size):
    """4 encoded 2D inputs with the guide channels: a blob mask on an annotated slice, or nothing annotated."""
    out = []
    for i in range(4):
        image, prev, pts = gen_hrnet_random_case(gen, size, [(0, 10.0 + 15 * i, 50.0 - 9 * i, 1),
                                                             (0, 60.0 - 7 * i, 20.0 + 11 * i, 0)])
        x = model.encode(torch.cat([image, prev[None]], 0)[None], pts)
        annotated = torch.full((1, 1, *size), float(i % 2))
        mask = random_masks(gen, (1, *size), [(0, 0)])[0][2].float()[None, None] * annotated
        out.append(torch.cat([x, mask, annotated], 1))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="dropout2d: Received a 5-D input")  # eval: identity anyway
    gen = torch.Generator().manual_seed(3)
    kw = {k: CONFIG[k] for k in ("width", "ocr_width", "small", "use_leaky_relu", "norm_radius", "use_disks",
                                 "with_prev_mask")}

    # transfer: the guided model from 2D weights equals the plain ACS model, whatever the guide holds
    plain = HRNetModel(**kw)
    randomize(plain, gen)
    guided = GuidedHRNetModel(attention_hidden=16, **kw)
    guided.load_state_dict(guided_state_from_2d(plain.state_dict(), guided))
    plain, guided = to_acs(plain).eval(), to_acs(guided).eval()
    _, _, _, x = random_case(gen, (9, 12, 10), [(4.0, 6.0, 5.0, 1)], [(0, 4), (2, 3)])
    with torch.no_grad():
        a, b = plain.forward_encoded(x[:, :6])[0], guided.forward_encoded(x)[0]
    assert torch.equal(a, b), f"transferred guided model differs from the 2D one: {(a - b).abs().max()}"
    print(f"transfer: guided model from 2D weights == plain ACS model (max |logit| {a.abs().max():.3g})")

    # the parity model: everything random; batch-norm statistics measured in 2D before the conversion, as
    # tests/gen_hrnet.py does (3D batches of one small volume leave the 1/16 and 1/32 branches a voxel or two:
    # too few samples for a variance that keeps ~200 random layers of order one on another volume)
    model = GuidedHRNetModel(attention_hidden=16, **kw)
    randomize(model, gen)
    calibrate_bn(Plain2D(model), gen, [calibration_batch(model, gen, (64, 80))])
    model = to_acs(model).eval()
    att = model.mask_attention
    with torch.no_grad():  # FC layers scaled to the pooled features, so that the gate varies without saturating
        x = random_case(gen, SHAPE, [(5.0, 8.0, 10.0, 1)], [(0, 5), (1, 11)])[3]
        z = att.pool(model.feature_extractor.compute_hrnet_feats(x[:, :3], model.maps_transform(x[:, 3:])), x[:, 6:8])
        att.fc1.weight.copy_(torch.randn(att.fc1.weight.shape, generator=gen) / (z.norm() + 1e-6))
        att.fc1.bias.copy_(0.3 * torch.randn(att.fc1.bias.shape, generator=gen))
        att.fc2.weight.copy_(torch.randn(att.fc2.weight.shape, generator=gen) * 0.6 / att.fc2.weight.shape[1] ** 0.5)
        att.fc2.bias.copy_(0.3 * torch.randn(att.fc2.bias.shape, generator=gen))

    save_converted(model, "snc_models.GuidedHRNetModel", CONFIG, os.path.join(args.out, "guided3d.safetensors"), "--guided")

    from safetensors import safe_open
    with safe_open(os.path.join(args.out, "guided3d.safetensors"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, os.path.join(args.out, "bad_2d.safetensors"), metadata={**meta, "acs": "0"})
    net = json.loads(meta["network"])
    del net["mask_attention_hidden"]
    save_file(tensors, os.path.join(args.out, "bad_hidden.safetensors"), metadata={**meta, "network": json.dumps(net)})
    # a valid plain ACS RITM network: the guided one without the attention and the two guide channels
    net = {**json.loads(meta["network"]), "snc_guided": False, "coord_channels": 3}
    del net["mask_attention_hidden"]
    plain = {k: v for k, v in tensors.items() if not k.startswith("mask_attention.")}
    plain["maps_transform.0.weight"] = plain["maps_transform.0.weight"][:, :3].contiguous()
    save_file(plain, os.path.join(args.out, "plain3d.safetensors"), metadata={**meta, "network": json.dumps(net)})

    # clicks: fractional, both signs, one on a border; masks: axial, coronal, sagittal crossing, and a later
    # axial one on the border
    clicks = [(9.0, 10.0, 12.0, 1), (4.5, 17.25, 6.0, 0), (17.0, 3.0, 20.0, 1)]
    slices = [(0, 9), (1, 10), (2, 12), (0, 17)]
    volume, prev, masks, x = random_case(gen, SHAPE, clicks, slices)
    assert torch.equal(x[0, 4:6], dist_maps(points(clicks), SHAPE, 5, True, torch.float32)[0])
    gates = []  # the attention's gate input g, caught on the way (one float64 forward)
    model = model.double()
    model.mask_attention.fc2.register_forward_hook(lambda module, args, out: gates.append(out))
    with torch.no_grad():
        low = model.forward_guided(x.double())[0]
        up = interpolate(low, SHAPE)  # as forward_encoded
    g = gates[0]
    io = {"volume": volume, "prev": prev, "clicks": torch.tensor(clicks, dtype=torch.float32),
          "mask_slices": torch.tensor([[a, i] for a, i, _ in masks], dtype=torch.float32), "input": x,
          "logits_low": low.float(), "logits": up.float()}
    for i, (_, _, m) in enumerate(masks):
        io[f"mask_{i}"] = m.float()
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(args.out, "io.safetensors"))
    gate = 2 * torch.sigmoid(g)
    print(f"io: input {list(x.shape)}, logits_low {list(low.shape)} max |.| {low.abs().max():.3g}, "
          f"logits in [{up.min():.3g}, {up.max():.3g}], gate in [{gate.min():.3g}, {gate.max():.3g}]")


if __name__ == "__main__":
    main()
