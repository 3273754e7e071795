#!/usr/bin/env python3
"""Fixtures for tests/test_tvl1.c: scikit-image's TV-L1 optical flow on real and synthetic image pairs,
and Slice-and-Conquer's post-processing computed with skimage's flow and warp.

    gen_tvl1.py --out DIR

DIR/flow_<i>.safetensors: float32 tensors "reference" and "moving" [rows, cols] and "flow" [2, rows, cols]
= skimage.registration.optical_flow_tvl1(reference, moving, **params); metadata "params" (JSON) holds
rows, cols, the solver parameters and a label.
DIR/post_0.safetensors: "prediction" [d, h, w] before and "expected" after the post-processing of one
annotated slice, "mask" [rows, cols]; params axis, index, gamma, d, h, w.
References: scikit-image 0.26 (skimage/registration/_optical_flow.py), scipy 1.17.
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
from safetensors.numpy import save_file
from scipy import ndimage as ndi
from skimage.registration import optical_flow_tvl1
from skimage.transform import warp

DEFAULTS = dict(attachment=15.0, tightness=0.3, num_warp=5, num_iter=10, tol=1e-4)
CH2BET = "/usr/share/mricron/templates/ch2bet.nii.gz"


def deform(image, shift, amplitude, period):
    """image(r + shift_r + a sin(2 pi c / period), c + shift_c + a cos(2 pi r / period)), bilinear, edge."""
    r, c = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    coords = np.array([r + shift[0] + amplitude * np.sin(2 * np.pi * c / period),
                       c + shift[1] + amplitude * np.cos(2 * np.pi * r / period)])
    return ndi.map_coordinates(image, coords, order=1, mode="nearest").astype(np.float32)


def disk(shape, center, radius):
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return ((r - center[0]) ** 2 + (c - center[1]) ** 2 <= radius ** 2).astype(np.float32)


def blobs(shape, shift):
    """Two Gaussian blobs moved by shift (rows, cols): small shifts make skimage stop a level's warps early."""
    r, c = np.meshgrid(np.arange(shape[0]) - shift[0], np.arange(shape[1]) - shift[1], indexing="ij")
    return (0.6 * np.exp(-((r - 30) ** 2 + (c - 25) ** 2) / 120) +
            0.4 * np.exp(-((r - 18) ** 2 + (c - 45) ** 2) / 60)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261125)

    brain = np.asarray(nib.load(CH2BET).dataobj, dtype=np.float32)  # (x 181, y 217, z 181)
    brain /= brain.max()
    axial = np.ascontiguousarray(brain[:, :, 90].T)     # [y, x] = [217, 181]: a slice [h, w] of a [z, y, x] volume
    coronal = np.ascontiguousarray(brain[:, 120, :].T)  # [z, x] = [181, 181]

    cases = [
        ("ch2bet axial 90 vs shifted and waved", axial, deform(axial, (2.5, -1.5), 1.5, 60.0), DEFAULTS),
        ("ch2bet coronal 120 brain mask vs shifted mask", (coronal > 0.1).astype(np.float32),
         deform((coronal > 0.1).astype(np.float32), (-3.0, 2.0), 1.0, 45.0), DEFAULTS),
        ("disk r 14 at (40, 44) vs r 12 at (37, 48) on 77 x 90", disk((77, 90), (40, 44), 14),
         disk((77, 90), (37, 48), 12), DEFAULTS),
        ("smooth noise 23 x 30 (one level) shifted by (1, -2)", None, None, DEFAULTS),
        ("ch2bet axial 60 crop, lambda 5 theta 0.5 3 warps 7 iters tol 0",
         np.ascontiguousarray(brain[30:150, 40:140, 60].T), None,
         dict(attachment=5.0, tightness=0.5, num_warp=3, num_iter=7, tol=0.0)),
        ("blobs 70 x 80 moved by (0.2, 0.1): the stopping test ends the finest level after one warp",
         blobs((70, 80), (0, 0)), blobs((70, 80), (0.2, 0.1)), DEFAULTS),
    ]
    for i, (label, ref, mov, params) in enumerate(cases):
        if ref is None:  # reference(r, c) = moving(r + 1, c - 2): the flow is (1, -2) away from the borders
            big = ndi.gaussian_filter(rng.random((24, 32)), 1.5).astype(np.float32)
            ref, mov = big[1:24, 0:30], big[0:23, 2:32]
        if mov is None:
            mov = deform(ref, (-1.0, 2.0), 2.0, 50.0)
        ref = np.ascontiguousarray(ref, dtype=np.float32)
        mov = np.ascontiguousarray(mov, dtype=np.float32)
        flow = optical_flow_tvl1(ref, mov, **params).astype(np.float32)
        meta = dict(label=label, rows=ref.shape[0], cols=ref.shape[1], **params)
        save_file({"reference": ref, "moving": mov, "flow": np.ascontiguousarray(flow)},
                  os.path.join(args.out, f"flow_{i}.safetensors"), metadata={"params": json.dumps(meta)})
        print(f"flow_{i}: {label}: {ref.shape}, |flow| max {np.abs(flow).max():.3f}")

    # Post-processing: a soft 3D prediction [d, h, w] (an ellipsoid), an accurate mask on axial slice 12
    # that is the prediction's slice moved and shrunk; slices 12 + k get warped with (1 - gamma |k|) flow.
    d, h, w = 24, 40, 36
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    dist = ((z - 11.5) / 9.0) ** 2 + ((y - 20.0) / 13.0) ** 2 + ((x - 17.0) / 11.0) ** 2
    prediction = (1.0 / (1.0 + np.exp(8.0 * (dist - 1.0)))).astype(np.float32)
    axis, index, gamma = 0, 12, 0.3
    mask = disk((h, w), (22, 19), 9)
    flow = optical_flow_tvl1(mask, prediction[index], **DEFAULTS)
    expected = prediction.copy()
    grid = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij", sparse=True)
    for j in range(d):
        alpha = max(1.0 - gamma * abs(j - index), 0.0)
        if alpha > 0.0:
            coords = np.float32(alpha) * flow
            coords[0] += grid[0]
            coords[1] += grid[1]
            expected[j] = warp(prediction[j], coords, mode="edge")
    meta = dict(axis=axis, index=index, gamma=gamma, d=d, h=h, w=w)
    save_file({"prediction": prediction, "mask": mask, "expected": expected},
              os.path.join(args.out, "post_0.safetensors"), metadata={"params": json.dumps(meta)})
    print(f"post_0: {d} x {h} x {w}, axial {index}, gamma {gamma}")


if __name__ == "__main__":
    main()
