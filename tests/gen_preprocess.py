#!/usr/bin/env python3
"""Fixtures for tests/test_preprocess.c: nnunetv2's own preprocessing and sliding-window building blocks
on random inputs of odd shapes, written as raw little-endian arrays plus a manifest.

    gen_preprocess.py --out DIR

DIR/manifest.json lists the cases; each array is DIR/<name>.f32 (float32) or .u8 (uint8), C order.
References (nnunetv2 2.8.1 and the scipy/skimage it calls):
  resample   nnunetv2.preprocessing.resampling.default_resampling.resample_data_or_seg_to_shape
             (skimage resize order 3 / 1, separate z with map_coordinates order 0 / 1)
  labels     the same with is_seg=True (batchgenerators' resize_segmentation, order 1, order_z 0)
  spline     skimage.transform.resize(order=3, mode="edge", anti_aliasing=False) of one 2D/3D array
  mask       nnunetv2.preprocessing.cropping.cropping.crop_to_nonzero (binary_fill_holes, bounding box)
  norm       ZScoreNormalization (with / without use_mask_for_norm), CTNormalization, RescaleTo01
  transpose  numpy transpose of (c, x, y, z) with [0] + [1 + p for p in perm]
  gaussian   nnunetv2.inference.sliding_window_prediction.compute_gaussian(sigma 1/8, scale 10, fp16)
  steps      compute_steps_for_sliding_window
"""
import argparse
import json
import os

import numpy as np
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (CTNormalization,
                                                                                 RescaleTo01Normalization,
                                                                                 ZScoreNormalization)
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from skimage.transform import resize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261125)
    cases = []

    def save(name, arr):
        arr = np.ascontiguousarray(arr)
        ext = {np.dtype(np.float32): "f32", np.dtype(np.uint8): "u8"}[arr.dtype]
        arr.tofile(os.path.join(args.out, f"{name}.{ext}"))
        return f"{name}.{ext}"

    def smooth_random(shape, scale=100.0):
        """Random data with structure (so splines matter) plus noise."""
        x = rng.normal(size=shape)
        for ax in range(len(shape)):
            x = (x + np.roll(x, 1, ax) + np.roll(x, -1, ax)) / 3
        return (x * scale + rng.normal(size=shape) * scale * 0.1).astype(np.float32)

    # ---- resample_data_or_seg_to_shape: (channels, in, out, current spacing, new spacing, order, force)
    resample_cases = [
        ((2, 13, 17, 11), (20, 9, 15), (1.0, 1.0, 1.0), (0.65, 1.9, 0.7), 3, None),     # up and down, 3D
        ((1, 7, 30, 31), (7, 45, 19), (4.0, 1.0, 1.0), (4.0, 0.66, 1.6), 3, None),      # separate z, axis 0 kept
        ((1, 9, 30, 31), (20, 45, 19), (4.0, 1.0, 1.0), (1.8, 0.66, 1.6), 3, None),     # separate z, axis 0 changes
        ((1, 31, 12, 29), (31, 12, 40), (1.0, 1.0, 5.0), (1.0, 1.0, 3.6), 3, None),     # separate axis 2
        ((1, 15, 22, 9), (15, 30, 7), (1.0, 1.0, 1.0), (1.0, 0.73, 1.3), 3, None),      # one axis equal
        ((1, 12, 10, 14), (24, 10, 14), (1.0, 1.0, 1.0), (0.5, 1.0, 1.0), 3, True),     # forced separate z
        ((1, 16, 10, 14), (8, 20, 14), (1.0, 1.0, 1.0), (2.0, 0.5, 1.0), 3, False),     # forced not separate
        ((3, 13, 17, 11), (20, 9, 15), (1.0, 1.0, 1.0), (0.65, 1.9, 0.7), 1, None),     # logits export, order 1
        ((2, 8, 30, 31), (17, 45, 19), (1.9, 0.66, 1.6), (4.0, 1.0, 1.0), 1, None),     # order 1, separate z
        ((1, 1, 40, 37), (1, 29, 50), (3.0, 1.0, 1.0), (3.0, 1.4, 0.74), 3, None),      # a single slice
        ((2, 20, 30, 31), (11, 45, 62), (1.0, 1.0, 1.0), (1.8, 0.66, 0.5), 1, None),    # export: z down, from new
        ((1, 30, 9, 31), (45, 5, 19), (1.0, 4.0, 1.0), (0.66, 7.2, 1.6), 3, None),      # separate axis 1, down
    ]
    for i, (shape, out, cur, new, order, force) in enumerate(resample_cases):
        x = smooth_random(shape)
        ref = resample_data_or_seg_to_shape(x, out, cur, new, is_seg=False, order=order, order_z=0,
                                            force_separate_z=force).astype(np.float32)
        name = f"resample{i}"
        cases.append(dict(kind="resample", name=name, input=save(name + "_in", x), expected=save(name + "_ref", ref),
                          shape=list(shape), out_shape=list(out), current_spacing=list(cur), new_spacing=list(new),
                          order=order, order_z=0, force_separate_z=-1 if force is None else int(force)))

    # ---- resample_data_or_seg_to_shape(is_seg=True): label maps (-1 outside the nonzero mask, as
    # crop_to_nonzero writes) resized per label with the argmax / nearest-neighbour tie-break; float32 in
    # and out, as nnUNetPredictor gives a cascade's previous stage (SimpleITKIO.read_seg)
    def blobs(shape, n_labels):
        fields = np.stack([smooth_random(shape, 1.0) for _ in range(n_labels)])
        seg = np.argmax(fields, axis=0).astype(np.float32)
        seg[..., :2] = np.where(seg[..., :2] == 0, -1, seg[..., :2])  # a border strip outside the mask
        return seg

    label_cases = [  # (in, out, current spacing, new spacing, random voxels instead of blobs)
        ((9, 10, 11), (18, 20, 22), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), False),     # x2: exact ties everywhere
        ((20, 17, 15), (13, 11, 9), (1.0, 1.0, 1.0), (1.54, 1.55, 1.67), False),  # down
        ((13, 17, 11), (20, 9, 15), (1.0, 1.0, 1.0), (0.65, 1.9, 0.7), False),    # up and down
        ((6, 7, 8), (12, 14, 6), (1.0, 1.0, 1.0), (0.5, 0.5, 1.4), True),         # noise: ties of 3+ labels
        ((9, 30, 31), (20, 45, 19), (4.0, 1.0, 1.0), (1.8, 0.66, 1.6), False),    # separate z, axis 0 changes
        ((7, 30, 31), (7, 45, 19), (4.0, 1.0, 1.0), (4.0, 0.66, 1.6), True),      # separate z, axis 0 kept
        ((31, 12, 29), (31, 24, 40), (1.0, 1.0, 5.0), (1.0, 0.5, 3.6), False),    # separate axis 2
    ]
    for i, (shape, out, cur, new, noise) in enumerate(label_cases):
        seg = rng.integers(-1, 4, size=shape).astype(np.float32) if noise else blobs(shape, 4)
        ref = resample_data_or_seg_to_shape(seg[None], out, cur, new, is_seg=True, order=1, order_z=0,
                                            force_separate_z=None)[0].astype(np.float32)
        name = f"labels{i}"
        cases.append(dict(kind="labels", name=name, input=save(name + "_in", seg), expected=save(name + "_ref", ref),
                          shape=list(shape), out_shape=list(out), current_spacing=list(cur), new_spacing=list(new)))

    # ---- skimage resize alone (what resample calls per channel / per slice), 2D and 3D, odd shapes
    for i, (shape, out) in enumerate([((5, 7, 9), (11, 3, 17)), ((23, 6, 1), (9, 13, 1)), ((2, 3, 4), (5, 2, 7))]):
        x = smooth_random(shape)
        ref = resize(x.astype(np.float64), out, 3, mode="edge", anti_aliasing=False).astype(np.float32)
        name = f"spline{i}"
        cases.append(dict(kind="resample", name=name, input=save(name + "_in", x[None]),
                          expected=save(name + "_ref", ref[None]), shape=[1, *shape], out_shape=list(out),
                          current_spacing=[1.0, 1.0, 1.0], new_spacing=[1.0, 1.0, 1.0], order=3, order_z=0,
                          force_separate_z=0))

    # ---- crop_to_nonzero: masks with holes (filled), touching borders, empty, one slice
    for i, shape in enumerate([(2, 17, 19, 23), (1, 9, 8, 7), (1, 1, 20, 21), (1, 6, 7, 5)]):
        x = np.zeros(shape, np.float32)
        if i != 3:  # case 3 stays empty: bbox = whole image
            c = [s // 2 for s in shape[1:]]
            r = [max(1, s // 3) for s in shape[1:]]
            zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape[1:]], indexing="ij")
            ball = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
            shell = ball & ~(((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 0.3)
            x[0][shell] = rng.uniform(1, 5, shell.sum())          # a hollow ball: its inside is a hole
            if shape[0] > 1:
                x[1, 0, 0, :3] = 2.0                              # another channel touching the border
            if i == 2:
                x[0, 0, 10, 15:] = 0.0
        mask_ref = np.zeros(shape[1:], np.uint8)
        _, seg, bbox = crop_to_nonzero(x.copy())
        mask_ref[tuple(slice(a, b) for a, b in bbox)] = (seg[0] >= 0).astype(np.uint8)
        name = f"mask{i}"
        cases.append(dict(kind="mask", name=name, input=save(name + "_in", x), expected=save(name + "_ref", mask_ref),
                          shape=list(shape), bbox=[list(map(int, b)) for b in bbox]))

    # ---- normalization schemes
    x = smooth_random((1, 11, 13, 9)) + 40.0
    mask = (rng.uniform(size=x.shape[1:]) > 0.3).astype(np.uint8)
    x[0][mask == 0] = 0.0
    props = {"mean": 35.5, "std": 61.25, "percentile_00_5": -80.0, "percentile_99_5": 150.0}
    seg = np.where(mask, 0, -1)
    norms = [("zscore", ZScoreNormalization(False, props), 0), ("zscore_mask", ZScoreNormalization(True, props), 1),
             ("ct", CTNormalization(False, props), 0), ("rescale", RescaleTo01Normalization(False, props), 0)]
    for scheme, normalizer, use_mask in norms:
        ref = normalizer.run(x[0].copy(), seg)
        name = f"norm_{scheme}"
        cases.append(dict(kind="norm", name=name, scheme=scheme, use_mask=use_mask, props=props,
                          input=save(name + "_in", x[0]), mask=save(name + "_mask", mask),
                          expected=save(name + "_ref", ref.astype(np.float32)), shape=list(x.shape[1:])))

    # ---- transposes
    x = smooth_random((2, 3, 4, 5))
    for perm in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
        ref = x.transpose([0] + [1 + p for p in perm])
        name = "transpose_" + "".join(map(str, perm))
        cases.append(dict(kind="transpose", name=name, perm=perm, input=save(name + "_in", x),
                          expected=save(name + "_ref", ref), shape=list(x.shape)))

    # ---- Gaussian importance map (fp16, as nnUNetPredictor uses it) and sliding-window steps
    for patch in ([40, 48, 40], [16, 48, 48], [64, 48], [5, 7, 9]):
        g = compute_gaussian(tuple(patch), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))
        ref = g.float().numpy()
        name = "gaussian_" + "x".join(map(str, patch))
        cases.append(dict(kind="gaussian", name=name, patch=patch, expected=save(name + "_ref", ref.astype(np.float32))))
    steps = []
    for image, tile, step in [(110, 64, 0.5), (64, 64, 0.5), (45, 40, 0.5), (200, 48, 0.5), (97, 16, 0.33),
                              (500, 128, 1.0), (129, 128, 0.5), (301, 7, 0.25)]:
        steps.append(dict(image=image, tile=tile, step=step,
                          steps=[int(s) for s in compute_steps_for_sliding_window((image,), (tile,), step)[0]]))
    cases.append(dict(kind="steps", name="steps", steps=steps))

    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print(f"gen_preprocess: {len(cases)} cases in {args.out}")


if __name__ == "__main__":
    main()
