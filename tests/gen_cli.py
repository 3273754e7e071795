#!/usr/bin/env python3
"""Fixture for tests/test_cli.c: a tiny nnU-Net v2 model converted to i3rt, two input channel files
and PyTorch's logits for them.

Writes into --out:
  model/fold_0.safetensors     tests/gen_weights.py's 3-stage 3D PlainConvUNet (2 channels in, 3 classes,
                               total stride 2 x 4 x 4), random weights, converted by convert_nnunet.py
  case_0000.nii.gz, case_0001.nii.gz   float32 13 x 10 x 5 (x, y, z): no axis a multiple of the stride,
                               so the CLI must pad and crop; an oblique sform to check the output keeps it
  reference.f32                PyTorch's logits [3, z, y, x] for the same zero-padded input, cropped back
  i3deep/                      for `i3rt i3deep`: image.nii.gz (20 x 18 x 10, spacing 1 x 1 x 3 mm),
                               truth.nii.gz (labels 0..3: three boxes), and two model folders of the same
                               tiny architecture with random weights, converted: preseg/ (1 channel in, 4
                               classes) and refine/ (2 channels: image + corrected slices, 4 classes)
"""
import copy
import json
import argparse
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_weights import ARCH, DATASET, PLANS, build_network, save_model_folder  # noqa: E402

CONVERTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "convert_pt",
                         "convert_nnunet.py")


def save_i3deep_model(folder, channels, classes, seed):
    """A random-weight model folder of gen_weights' architecture with `channels` inputs, converted."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    torch.manual_seed(seed)
    net = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                 input_channels=channels, output_channels=classes, deep_supervision=True)
    plans = copy.deepcopy(PLANS)
    cfg = plans["configurations"]["3d_fullres"]
    cfg["normalization_schemes"] = ["ZScoreNormalization"] * channels
    cfg["use_mask_for_norm"] = [False] * channels
    plans["foreground_intensity_properties_per_channel"] = {
        str(c): plans["foreground_intensity_properties_per_channel"]["0"] for c in range(channels)}
    dataset = dict(DATASET, channel_names={str(c): f"ch{c}" for c in range(channels)},
                   labels={"background": 0, **{f"class_{k}": k for k in range(1, classes)}})
    raw = folder + "_nnunet"
    os.makedirs(os.path.join(raw, "fold_0"), exist_ok=True)
    for name, obj in (("plans.json", plans), ("dataset.json", dataset)):
        with open(os.path.join(raw, name), "w") as f:
            json.dump(obj, f, indent=2)
    torch.save({"network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
                "logging": {}, "_best_ema": None, "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                              "device": torch.device("cpu")},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
               os.path.join(raw, "fold_0", "checkpoint_final.pth"))
    subprocess.run([sys.executable, CONVERTER, raw, "--out", folder], check=True)


def make_i3deep(out):
    os.makedirs(out, exist_ok=True)
    shape, spacing = (20, 18, 10), (1.0, 1.0, 3.0)  # x, y, z; the plans' spacing, so no resampling
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    rng = np.random.default_rng(7)
    truth = np.zeros(shape, np.uint8)
    truth[3:9, 4:10, 2:6] = 1
    truth[11:17, 4:12, 3:8] = 2
    truth[6:14, 12:16, 1:4] = 3
    image = (truth * 40.0 + rng.normal(0, 10, shape)).astype(np.float32)
    for name, data in (("image", image), ("truth", truth)):
        img = nib.Nifti1Image(data, affine)
        img.header.set_sform(affine, code=1)
        img.header.set_qform(affine, code=1)
        nib.save(img, os.path.join(out, f"{name}.nii.gz"))
    save_i3deep_model(os.path.join(out, "preseg"), 1, 4, seed=1)
    save_i3deep_model(os.path.join(out, "refine"), 2, 4, seed=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    net = build_network()
    save_model_folder(os.path.join(out, "nnunet_model"), net)
    subprocess.run([sys.executable, CONVERTER, os.path.join(out, "nnunet_model"), "--out", os.path.join(out, "model")],
                   check=True)

    rng = np.random.default_rng(11)
    shape = (13, 10, 5)
    affine = np.array([[0.9, 0.1, 0.0, -20.0], [-0.1, 0.9, 0.0, 10.0], [0.0, 0.0, 2.5, 4.0], [0, 0, 0, 1]])
    channels = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    for c, data in enumerate(channels):
        img = nib.Nifti1Image(data, affine)
        img.header.set_sform(affine, code=2)
        img.header.set_qform(affine, code=1)
        nib.save(img, os.path.join(out, f"case_{c:04d}.nii.gz"))

    x = np.stack([d.transpose(2, 1, 0) for d in channels])  # [C, z, y, x] = i3rt's [C, D, H, W]
    stride = np.prod(np.array(ARCH["arch_kwargs"]["strides"]), axis=0)  # 2 x 4 x 4
    padded = (np.array(x.shape[1:]) + stride - 1) // stride * stride
    xp = np.zeros((2, *padded), dtype=np.float32)
    xp[:, :x.shape[1], :x.shape[2], :x.shape[3]] = x
    net.decoder.deep_supervision = False
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(xp)[None])[0, :, :x.shape[1], :x.shape[2], :x.shape[3]]
    np.ascontiguousarray(y.numpy(), dtype=np.float32).tofile(os.path.join(out, "reference.f32"))
    make_i3deep(os.path.join(out, "i3deep"))
    print(f"gen_cli: model, inputs {shape} (x, y, z) and PyTorch logits {list(y.shape)}, i3deep cases and models in {out}")


if __name__ == "__main__":
    main()
