#!/usr/bin/env python3
"""Fixtures for tests/test_hrnet.c: RITM's HRNet-18 + OCR interactive network (HRNetModel), 2D and ACS 3D.

RITM is not installable and its released checkpoints were not reachable, so tools/snc_models.py holds a
re-implementation of the inference path of RITM's model (shared with the training scripts), written from the source of
SamsungLabs/ritm_interactive_segmentation @ b9b44603672e15aa0be878b54fd26e7e1c5d2311:
  isegm/model/is_model.py (ISModel: prepare_input, get_coord_features, maps_transform, forward),
  isegm/model/is_hrnet_model.py (HRNetModel), isegm/model/modeling/hrnet_ocr.py (HighResolutionModule,
  HighResolutionNet), isegm/model/modeling/ocr.py (SpatialGather_Module, SpatialOCR_Module,
  ObjectAttentionBlock2D), isegm/model/modeling/resnetv1b.py (BasicBlockV1b, BottleneckV1b),
  isegm/model/ops.py (DistMaps GPU path, ScaleLayer, BatchImageNormalize).
Module names, order and arguments follow those files, so the state-dict keys are RITM's: the script
asserts that they and their shapes equal tests/support/weights_ritm_hrnet18_keys.txt (dumped from RITM's
own HRNetModel) exactly. Configuration: models/iter_mask/hrnet18_cocolvis_itermask_3p.py, i.e.
HRNetModel(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
use_disks=True, norm_radius=5, with_prev_mask=True), small=False; the aux output is not part of inference.

The ACS 3D network is this model converted by ACSConv's rules (M3DV/ACSConv @ 95dc860, converters/
base_converter.py, operators/acsconv.py, operators/functional.py acs_conv_f): every Conv2d becomes an ACS
convolution with the same 2D weight (output channels split axial/coronal/sagittal), BatchNorm2d becomes
BatchNorm3d with the same tensors, and the bilinear interpolations trilinear (RITM calls F.interpolate,
which ACSConverter does not convert: the ports below pick the mode from the tensor's rank, as
Slice-and-Conquer had to). The spatial softmax of the OCR head then runs over the volume, and DistMaps
gives balls (the z distance added).

Weights: seeded random (conv weights He-normal, biases and BN affine random, smaller gains on the BNs that
close residual branches, ScaleLayer scale -0.3 so that |scale| matters); BN running statistics measured
on 12 random images with clicks (train-mode forward, cumulative average) and then perturbed, so that they
are non-trivial but keep activations of order one through the ~300 layers and the test logits straddle 0
(about -2.4..0.9) as a segmentation's do. (Without this conditioning PyTorch's own float32 forward was
5e-5 off its float64 one, relative to the largest logit.) Saved as RITM's save_checkpoint does ({'state_dict', 'config'}), converted with
tools/convert_pt/convert_ritm.py (2D, and --acs). The references run in float64 on those float32 weights.

Writes into --out:
  hrnet2d.safetensors, hrnet3d.safetensors   the converted weights (acs "0" / "1")
  io2d.safetensors, io3d.safetensors         "image" [3, d, h, w] in [0, 1], "prev_mask" [d, h, w],
      "clicks" [n, 4] (z, y, x, positive), "input" [1, 6, d, h, w] (the encoded network input),
      "logits_low" [1, 1, d', h', w'] (cls_head output), "logits" [1, 1, d, h, w] (upsampled);
      2D: d = 1, 64 x 80; 3D: 24 x 32 x 40.
  bad_missing, bad_acs, bad_rgb_conv, bad_coord .safetensors: hrnet2d with a BN tensor removed, metadata
      "acs": "2", arch_kwargs.use_rgb_conv true, coord_channels 2 with with_prev_mask true.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
KEYS = os.path.join(ROOT, "tests", "support", "weights_ritm_hrnet18_keys.txt")

from snc_models import HRNetModel, to_acs  # noqa: E402  (tools/ on sys.path above)


# ---- fixtures ----------------------------------------------------------------------------------------

HRNET_CLASS = "isegm.model.is_hrnet_model.HRNetModel"  # RITM's class name in a checkpoint's config
HRNET18_PARAMS = dict(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
                      use_disks=True, norm_radius=5, with_prev_mask=True)


def spread_clicks(i):
    """Calibration case i's clicks (z, y, x, positive): one positive, one negative, spread over 4 cases."""
    return [(0, 10.0 + 15 * i, 50.0 - 9 * i, 1), (0, 60.0 - 7 * i, 20.0 + 11 * i, 0)]


def read_key_list():
    keys = []
    for line in open(KEYS):
        name, shape = line.rstrip("\n").split("\t")
        keys.append((name, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return keys


def randomize(model, gen):
    """Conv weights He-normal, conv biases N(0, 0.2), BN weight U(0.5, 1.5) (U(0.2, 0.6) closing a residual
    branch) and bias N(0, 0.2), scale -0.3."""
    with torch.no_grad():
        model.maps_transform[3].scale.fill_(-0.3)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                # the BN closing a residual branch gets a smaller gain, as trained ResNets/HRNets have:
                # otherwise the residual streams grow through the ~100 blocks and every later BN subtracts
                # a large mean, so float32 results (PyTorch's as well as i3rt's) lose digits to cancellation
                last = name.endswith(".bn3") or (name.endswith(".bn2") and ".branches." in name)
                lo, hi = (0.2, 0.6) if last else (0.5, 1.5)
                m.weight.copy_(lo + (hi - lo) * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


def calibrate_bn(model, gen, inputs):
    """Running statistics measured on random inputs, then perturbed (non-trivial but sane); 2D or 3D (ACS)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in inputs:
            model.forward_encoded(x)
    model.eval()
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
            with torch.no_grad():
                if ".f_object." in name or ".f_down." in name or ".f_up." in name:
                    # these see one context vector per image: a variance over the few calibration
                    # images would blow any other image up; the second moment keeps them of order one
                    m.running_var.add_(m.running_mean ** 2 + 1e-2)
                c = m.num_features
                m.running_mean.add_(0.1 * torch.randn(c, generator=gen) * m.running_var.sqrt())
                m.running_var.mul_(0.8 + 0.4 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(1000)


def random_case(gen, shape, clicks):
    """Image in [0, 1], a soft previous mask, clicks (z, y, x, positive) -> RITM's points tensor."""
    image = torch.rand((3, *shape), generator=gen)
    prev = torch.sigmoid(3 * torch.randn(shape, generator=gen))
    pos = [c[:3] for c in clicks if c[3]]
    neg = [c[:3] for c in clicks if not c[3]]
    n = max(len(pos), len(neg), 1)
    nd = len(shape)
    pts = torch.full((1, 2 * n, nd), -1.0)
    for i, c in enumerate(pos):
        pts[0, i] = torch.tensor(c[3 - nd:])
    for i, c in enumerate(neg):
        pts[0, n + i] = torch.tensor(c[3 - nd:])
    return image, prev, pts


def run_case(model, gen, shape, clicks):
    image, prev, pts = random_case(gen, shape, clicks)
    full = torch.cat([image, prev[None]], 0)[None]
    x = model.encode(full, pts)  # float32, as RITM computes it
    with torch.no_grad():
        low, up = model.double().forward_encoded(x.double())
    model.float()
    d = [1] if len(shape) == 2 else []
    five = lambda t: t.reshape(t.shape[0], t.shape[1], *d, *t.shape[2:]).float().contiguous()  # noqa: E731
    return {"image": image.reshape(3, *d, *shape).contiguous(), "prev_mask": prev.reshape(*d, *shape).contiguous(),
            "clicks": torch.tensor(clicks, dtype=torch.float32), "input": five(x), "logits_low": five(low),
            "logits": five(up)}


def random_calibrated(model, gen, sizes, clicks):
    """randomize, then calibrate_bn on one batch per size of 4 random 2D cases, case i clicked at clicks(i)."""
    randomize(model, gen)
    calib = []
    for size in sizes:
        cases = [random_case(gen, size, clicks(i)) for i in range(4)]
        calib.append(torch.cat([model.encode(torch.cat([img, prev[None]], 0)[None], pts) for img, prev, pts in cases]))
    calibrate_bn(model, gen, calib)


def save_converted(model, class_name, params, out, *flags):
    """The model as a RITM checkpoint ({'state_dict' in float32, 'config' of params}) converted by
    tools/convert_pt/convert_ritm.py (with flags such as --acs) into out."""
    config = {"class": class_name,
              "params": {k: {"type": "builtin", "value": v, "specified": True} for k, v in params.items()}}
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pth")
        torch.save({"state_dict": state, "config": config}, ckpt)
        cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_pt", "convert_ritm.py"), ckpt, "--out", out]
        subprocess.run(cmd + list(flags), check=True, stdout=subprocess.DEVNULL)


def write_bad_files(out):
    """Broken variants of hrnet2d.safetensors for the error messages (tests/test_hrnet.c, bad_files)."""
    from safetensors import safe_open
    with safe_open(os.path.join(out, "hrnet2d.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    net = json.loads(meta["network"])
    missing = dict(tensors)
    del missing["feature_extractor.stage4.2.fuse_layers.3.0.2.1.running_var"]
    save_file(missing, os.path.join(out, "bad_missing.safetensors"), metadata=meta)
    save_file(tensors, os.path.join(out, "bad_acs.safetensors"), metadata={**meta, "acs": "2"})
    rgb = json.loads(meta["network"])
    rgb["arch_kwargs"]["use_rgb_conv"] = True
    save_file(tensors, os.path.join(out, "bad_rgb_conv.safetensors"), metadata={**meta, "network": json.dumps(rgb)})
    net["coord_channels"] = 2  # says no previous mask, while maps_transform.0.weight takes 3 channels
    save_file(tensors, os.path.join(out, "bad_coord.safetensors"), metadata={**meta, "network": json.dumps(net)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="dropout2d: Received a 5-D input")  # eval: identity anyway
    gen = torch.Generator().manual_seed(18)

    model = HRNetModel()
    expected = read_key_list()
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected, "state-dict keys/shapes differ from RITM's: " + str(
        [a for a in zip(got, expected) if a[0] != a[1]][:3] + [len(got), len(expected)])

    random_calibrated(model, gen, ((96, 112), (64, 80), (80, 96)), spread_clicks)
    for name, flags in (("hrnet2d", ()), ("hrnet3d", ("--acs",))):
        save_converted(model, HRNET_CLASS, HRNET18_PARAMS, os.path.join(args.out, name + ".safetensors"), *flags)

    write_bad_files(args.out)

    # clicks (z, y, x, positive): fractional coordinates (zoom-in), two of one sign, one near a border
    io2d = run_case(model, gen, (64, 80), [(0, 20.0, 30.0, 1), (0, 40.5, 61.25, 1), (0, 3.0, 77.0, 0)])
    save_file(io2d, os.path.join(args.out, "io2d.safetensors"))
    acs = to_acs(model)
    io3d = run_case(acs, gen, (24, 32, 40), [(10.0, 12.0, 20.0, 1), (4.5, 25.0, 7.0, 0), (20.0, 5.0, 33.0, 1)])
    save_file(io3d, os.path.join(args.out, "io3d.safetensors"))
    for name, io in (("2d", io2d), ("3d", io3d)):
        print(f"io{name}: input {list(io['input'].shape)}, logits_low {list(io['logits_low'].shape)} "
              f"max |.| {io['logits_low'].abs().max():.3g}, logits std {io['logits'].std():.3g}")


if __name__ == "__main__":
    main()
