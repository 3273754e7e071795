#!/usr/bin/env python3
"""Fixtures for tests/test_i3deep.c and tests/test_api_i3deep.c: evaluation cases of the brain task for
i3Deep's end-to-end check (pre-segmentation -> uncertainty -> slices -> simulated expert -> refinement).

    gen_i3deep.py --out DIR [--cases N (8)] [--weights DIR (weights)]

Cases are scripts/train_models.py's brain cases with the evaluation seeds (EVAL_SEED + 100 * 501 + i, the
seeds of make_eval_cases(501, ...)): neither the pre-segmentation model (weights/brain_3d_fullres, seeds
TRAIN_SEED + 100 * 501 + i) nor the refinement model (weights/brain_refine_3d_fullres, TRAIN_SEED + 100 * 503
+ i) saw them. For each case i it writes into DIR:
  eval501_<i>_0000.nii.gz   the T1 image (float32), as make_eval_cases writes it
  eval501_<i>_truth.nii.gz  its labels (uint8; 0 background, 1 caudate, 2 putamen, 3 thalamus), same affine
and DIR/cases.txt with one case name per line.

The refinement reference (stage 4 against nnunetv2): for the first case, ground-truth slices through the
structures (the middle and a quarter-way foreground slice of each axis) in an otherwise zero volume as the
second channel, the way scripts/train_models.py builds the refinement model's training input; nnunetv2 2.8.1's
nnUNetPredictor (tests/gen_predict.py's predict, float32 accumulation, no mirroring) runs the refinement
model (--weights/brain_refine_3d_fullres) on image + that channel:
  refine_slices.txt     the slices, "axial|coronal|sagittal index" (i3rt's axes: axial fixes z, coronal y,
                        sagittal x)
  refine_ref_seg.u8     its segmentation, [z, y, x]
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


def refinement_reference(out, name, image, labels, spacing, weights, tm):
    """Picks the slices, writes the two-channel input and nnUNetPredictor's segmentation of it."""
    spec = importlib.util.spec_from_file_location("gen_predict", os.path.join(ROOT, "tests", "gen_predict.py"))
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)
    guide = np.zeros_like(labels)
    lines = []
    for axis, axis_name in ((0, "sagittal"), (1, "coronal"), (2, "axial")):  # array axes x, y, z
        fg = np.flatnonzero(np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).any(1))
        for index in sorted({int(fg[len(fg) // 2]), int(fg[len(fg) // 4])}):
            at = [slice(None)] * 3
            at[axis] = index
            guide[tuple(at)] = labels[tuple(at)]
            lines.append(f"{axis_name} {index}\n")
    folder = os.path.join(out, "refine_input")
    tm.write_case(folder, name, [image, guide.astype(np.float32)], spacing)
    files = [os.path.join(folder, f"{name}_{c:04d}.nii.gz") for c in range(2)]
    seg, _ = gp.predict(os.path.join(weights, "brain_refine_3d_fullres"), [0], False, files, "fp32")
    seg.astype(np.uint8).tofile(os.path.join(out, "refine_ref_seg.u8"))  # [z, y, x]
    with open(os.path.join(out, "refine_slices.txt"), "w") as f:
        f.write("".join(lines))
    print(f"{name}: refinement reference with {len(lines)} slices, {int((seg > 0).sum())} foreground voxels")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights"))
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
        if i == 0:
            refinement_reference(args.out, name, image, labels, spacing, args.weights, tm)
        names.append(name)
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))


if __name__ == "__main__":
    main()
