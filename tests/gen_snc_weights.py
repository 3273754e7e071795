#!/usr/bin/env python3
"""Fixture for tests/test_snc_weights.c: a small real crop on which the committed Slice-and-Conquer weights
(weights/snc_brain/) must segment sanely.

Writes into --out image.nii.gz (T1, float32) and truth.nii.gz (uint8): a 40 x 40 x 40 crop (~60 mm) centred
on the right thalamus of a deformation of the Colin27 T1 that neither the training (scripts/train_snc.py,
seeds TRAIN_SEED + i) nor the documented evaluation (EVAL_SEED + 0..7, docs/snc-evaluation.md) uses:
train_snc.brain_case(EVAL_SEED + 100).
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import train_snc  # noqa: E402

SIDE, LABEL = 40, 78  # AAL 78: thalamus_R


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    img, aal, spacing = train_snc.brain_case(train_snc.EVAL_SEED + 100)
    obj = aal == LABEL
    centre = np.round(np.argwhere(obj).mean(0)).astype(int)
    box = tuple(slice(int(np.clip(c - SIDE // 2, 0, n - SIDE)), int(np.clip(c - SIDE // 2, 0, n - SIDE)) + SIDE)
                for c, n in zip(centre, obj.shape))
    train_snc.tm.save_nifti(os.path.join(args.out, "image.nii.gz"), img[box], spacing, np.float32)
    train_snc.tm.save_nifti(os.path.join(args.out, "truth.nii.gz"), obj[box], spacing, np.uint8)
    print(f"{args.out}: {img[box].shape} crop, {int(obj[box].sum())} truth voxels, spacing {spacing}")


if __name__ == "__main__":
    main()
