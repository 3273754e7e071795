#!/usr/bin/env python3
"""Fixtures for tests/test_i3deep.c and tests/test_api_i3deep.c: evaluation cases of the brain task for
i3Deep's end-to-end check (pre-segmentation -> uncertainty -> slices -> simulated expert -> refinement).

    gen_i3deep.py --out DIR [--cases N]

Cases are scripts/train_models.py's brain cases with the evaluation seeds (EVAL_SEED + 100 * 501 + i, the
seeds of make_eval_cases(501, ...)): neither the pre-segmentation model (weights/brain_3d_fullres, seeds
TRAIN_SEED + 100 * 501 + i) nor the refinement model (weights/brain_refine_3d_fullres, TRAIN_SEED + 100 * 503
+ i) saw them. For each case i it writes into DIR:
  eval501_<i>_0000.nii.gz   the T1 image (float32), as make_eval_cases writes it
  eval501_<i>_truth.nii.gz  its labels (uint8; 0 background, 1 caudate, 2 putamen, 3 thalamus), same affine
and DIR/cases.txt with one case name per line.
"""
import argparse
import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRAIN = 501


def load_train_models():
    spec = importlib.util.spec_from_file_location("train_models", os.path.join(ROOT, "scripts", "train_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", type=int, default=3)
    args = ap.parse_args()
    tm = load_train_models()
    os.makedirs(args.out, exist_ok=True)
    names = []
    for i in range(args.cases):
        image, labels, spacing = tm.make_brain_case(tm.EVAL_SEED + BRAIN * 100 + i)
        name = f"eval{BRAIN}_{i:03d}"
        tm.write_case(args.out, name, [image], spacing)
        tm.save_nifti(os.path.join(args.out, f"{name}_truth.nii.gz"), labels, spacing, np.uint8)
        counts = np.bincount(labels.ravel(), minlength=4)
        print(f"{name}: {image.shape} voxels (x, y, z), spacing {spacing}, labels per class {counts.tolist()}")
        names.append(name)
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))


if __name__ == "__main__":
    main()
