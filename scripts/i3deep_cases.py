#!/usr/bin/env python3
"""Cases for `i3rt i3deep evaluate` and the demo (docs/i3deep.md, "Command line").

    scripts/i3deep_cases.py --out DIR [--n 5] [--no-colin]

Writes into DIR:
  images/evalNNN.nii.gz, labels/evalNNN.nii.gz   N brain evaluation cases made by scripts/train_models.py's
      make_brain_case with the evaluation seeds (EVAL_SEED + 501 * 100 + i, the seeds make_eval_cases uses
      for Dataset501, never seen in training): a random rotation/scaling/shift, ~3 mm spacing, intensity
      changes of the Colin27 T1; labels 1 caudate, 2 putamen, 3 thalamus
  images/colin27.nii.gz, labels/colin27.nii.gz   the real Colin27 volume, unchanged (mricron-data's
      ch2bet.nii.gz, skull-stripped T1, 181 x 217 x 181 at 1 mm) and its AAL labels mapped to the same three
      classes as train_models.py's BRAIN_AAL does (left and right merged), on the same grid and header
  cases.tsv   NAME<TAB>IMAGE<TAB>TRUTH per case, paths relative to DIR (the list `evaluate --cases` reads)
"""
import argparse
import os
import shutil
import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_models import BRAIN_AAL, EVAL_SEED, MRICRON, make_brain_case, save_nifti  # noqa: E402

BRAIN_DATASET = 501  # make_eval_cases(501, ...) uses the seeds EVAL_SEED + 501 * 100 + i


def write_colin(out):
    """The real subject: ch2bet.nii.gz copied as it is, its AAL labels mapped to the three classes."""
    image = os.path.join(out, "images", "colin27.nii.gz")
    truth = os.path.join(out, "labels", "colin27.nii.gz")
    shutil.copyfile(os.path.join(MRICRON, "ch2bet.nii.gz"), image)
    aal = nib.load(os.path.join(MRICRON, "aal.nii.gz"))
    regions = np.asarray(aal.dataobj).astype(np.int16)
    labels = np.zeros(regions.shape, np.uint8)
    for label, aal_regions in BRAIN_AAL.items():
        labels[np.isin(regions, aal_regions)] = label
    ref = nib.load(image)
    if ref.shape != labels.shape or not np.allclose(ref.affine, aal.affine):
        sys.exit(f"i3deep_cases: {image} and the AAL atlas are not on the same grid")
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header["scl_slope"], header["scl_inter"] = 1, 0
    nib.save(nib.Nifti1Image(labels, ref.affine, header), truth)
    return "colin27", labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=5, help="evaluation cases (default 5)")
    ap.add_argument("--no-colin", action="store_true", help="leave out the Colin27 case")
    args = ap.parse_args()
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    rows = []
    for i in range(args.n):
        name = f"eval{i:03d}"
        image, labels, spacing = make_brain_case(EVAL_SEED + BRAIN_DATASET * 100 + i)
        save_nifti(os.path.join(args.out, "images", f"{name}.nii.gz"), image, spacing, np.float32)
        save_nifti(os.path.join(args.out, "labels", f"{name}.nii.gz"), labels, spacing, np.uint8)
        rows.append((name, labels))
    if not args.no_colin:
        rows.append(write_colin(args.out))
    with open(os.path.join(args.out, "cases.tsv"), "w") as f:
        f.write("name\timage\ttruth\n")
        for name, _ in rows:
            f.write(f"{name}\timages/{name}.nii.gz\tlabels/{name}.nii.gz\n")
    for name, labels in rows:
        counts = ", ".join(f"{k} {int((labels == k).sum())}" for k in sorted(BRAIN_AAL))
        print(f"i3deep_cases: {name} {labels.shape} (x, y, z), voxels per class: {counts}")
    print(f"i3deep_cases: {len(rows)} cases, list {os.path.join(args.out, 'cases.tsv')}")


if __name__ == "__main__":
    main()
