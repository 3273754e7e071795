#!/usr/bin/env python3
"""Fixture for tests/test_cli.c: a tiny nnU-Net v2 model converted to i3rt, two input channel files
and PyTorch's logits for them.

Writes into --out:
  model/fold_0.safetensors     tests/gen_weights.py's 3-stage 3D PlainConvUNet (2 channels in, 3 classes,
                               total stride 2 x 4 x 4), random weights, converted by convert_nnunet.py
  case_0000.nii.gz, case_0001.nii.gz   float32 13 x 10 x 5 (x, y, z): no axis a multiple of the stride,
                               so the CLI must pad and crop; an oblique sform to check the output keeps it
  reference.f32                PyTorch's logits [3, z, y, x] for the same zero-padded input, cropped back
"""
import argparse
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_weights import ARCH, build_network, save_model_folder  # noqa: E402

CONVERTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "convert_pt",
                         "convert_nnunet.py")


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
    print(f"gen_cli: model, inputs {shape} (x, y, z) and PyTorch logits {list(y.shape)} in {out}")


if __name__ == "__main__":
    main()
