#!/usr/bin/env python3
"""Baselines without training for `i3rt i3deep evaluate`, on exactly the same corrected slices.

    tools/i3deep_baselines.py EVAL_OUTDIR [--markdown FILE] [--margin 8]

Reads EVAL_OUTDIR/evaluation.tsv (written by `i3rt i3deep evaluate`): per case the image, the truth and
NAME_corrections.nii.gz (float32 on the image's grid: the class the simulated expert gave a voxel of a
corrected slice, -1 on every voxel of no corrected slice). From the corrected slices alone, two classic
seeded segmentations of scikit-image 0.26 (the paper compares i3Deep with such methods):

  random walker   skimage.segmentation.random_walker(image, markers, beta=130, mode="cg_j", spacing=voxel size)
  watershed       skimage.segmentation.watershed(|sobel(image)|, markers): the gradient magnitude flooded
                  from the markers

markers = corrections + 1 (background slices are marker 1, class k is k + 1; 0 = not corrected). Both run
on the box around the corrected foreground voxels grown by --margin voxels (clipped to the volume; random
walker on a whole 181 x 217 x 181 volume does not fit this machine's time), and everything outside the
box is background. Image intensities are clipped to their 0.5-99.5th percentiles inside the box.

Writes EVAL_OUTDIR/NAME_randomwalker.nii.gz, NAME_watershed.nii.gz, EVAL_OUTDIR/baselines.tsv (the columns
of evaluation.tsv; "waiting_seconds" is the baseline's own run time in Python) and prints the markdown
table of evaluate with the baselines' rows added (also to FILE). Python here is an evaluation reference,
never part of i3rt's run time (docs/i3deep.md, "Baselines").
"""
import argparse
import csv
import math
import os
import time

import nibabel as nib
import numpy as np
from skimage.filters import sobel
from skimage.segmentation import random_walker, watershed

METHOD_TITLES = {"presegmentation": "pre-segmentation", "refinement": "i3Deep refinement",
                 "randomwalker": "random walker (same slices)", "watershed": "watershed (same slices)"}


def dice_per_class(seg, truth, classes):
    out = []
    for k in range(classes):
        a, b = seg == k, truth == k
        total = int(a.sum()) + int(b.sum())
        out.append(2.0 * float((a & b).sum()) / total if total else math.nan)
    return out


def foreground_box(corrections, margin):
    fg = np.argwhere(corrections > 0)
    if fg.size == 0:
        return tuple(slice(0, n) for n in corrections.shape)
    lo = np.maximum(fg.min(0) - margin, 0)
    hi = np.minimum(fg.max(0) + margin + 1, corrections.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def run_baselines(image_path, corrections_path, margin):
    image = nib.load(image_path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    corrections = np.asarray(nib.load(corrections_path).dataobj, dtype=np.float32)
    markers = np.rint(corrections).astype(np.int32) + 1
    box = foreground_box(corrections, margin)
    crop = data[box]
    lo, hi = np.percentile(crop, [0.5, 99.5])
    crop = np.clip((crop - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
    results = {}
    for method in ("randomwalker", "watershed"):
        t0 = time.perf_counter()
        if method == "randomwalker":
            labels = random_walker(crop, markers[box], beta=130, mode="cg_j", spacing=spacing)
        else:
            labels = watershed(sobel(crop), markers[box])
        seconds = time.perf_counter() - t0
        seg = np.zeros(data.shape, np.uint8)
        seg[box] = np.maximum(labels - 1, 0)
        results[method] = (seg, seconds)
    return image, results


def number(value):
    return math.nan if value in ("nan", "") else float(value)


def markdown(rows, classes):
    cols = [f"dice_{k}" for k in range(1, classes)] + ["mean_dice", "annotation_ratio", "slices", "waiting_seconds"]
    lines = ["| case | method | " + " | ".join(f"Dice {k}" for k in range(1, classes)) +
             " | mean Dice | annotation ratio | slices | waiting (s) |",
             "|---|---|" + "---|" * len(cols)]

    def cells(values):
        out = []
        for j, v in enumerate(values):
            if math.isnan(v):
                out.append("-")
            else:
                out.append(f"{v:.3f}" if j == len(values) - 1 else f"{v:.4g}" if j == len(values) - 2 else f"{v:.4f}")
        return " | ".join(out)

    for method in METHOD_TITLES:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        for r in mine:
            lines.append(f"| {r['case']} | {METHOD_TITLES[method]} | " + cells([number(r[c]) for c in cols]) + " |")
        means = []
        for c in cols:
            values = [number(r[c]) for r in mine if not math.isnan(number(r[c]))]
            means.append(sum(values) / len(values) if values else math.nan)
        lines.append(f"| **mean** | {METHOD_TITLES[method]} | " + cells(means) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir")
    ap.add_argument("--markdown", help="also write the table here")
    ap.add_argument("--margin", type=int, default=8, help="voxels around the corrected foreground (default 8)")
    args = ap.parse_args()
    with open(os.path.join(args.eval_dir, "evaluation.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    classes = 1 + sum(1 for c in rows[0] if c.startswith("dice_"))
    added = []
    for r in [r for r in rows if r["method"] == "refinement"]:
        image, results = run_baselines(r["image"], r["corrections"], args.margin)
        truth = np.rint(np.asarray(nib.load(r["truth"]).dataobj)).astype(np.int32)
        for method, (seg, seconds) in results.items():
            path = os.path.join(args.eval_dir, f"{r['case']}_{method}.nii.gz")
            out = nib.Nifti1Image(seg, image.affine, image.header)
            out.set_data_dtype(np.uint8)
            out.header["scl_slope"], out.header["scl_inter"] = 1, 0
            nib.save(out, path)
            dice = dice_per_class(seg, truth, classes)
            fg = [d for d in dice[1:] if not math.isnan(d)]
            row = dict(r, method=method, mean_dice=f"{sum(fg) / len(fg) if fg else math.nan:.6g}",
                       waiting_seconds=f"{seconds:.6g}", segmentation=path)
            row.update({f"dice_{k}": f"{dice[k]:.6g}" for k in range(1, classes)})
            added.append(row)
            print(f"i3deep_baselines: {r['case']} {method}: mean Dice {row['mean_dice']} in {seconds:.1f} s",
                  flush=True)
    with open(os.path.join(args.eval_dir, "baselines.tsv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(added)
    table = markdown(rows + added, classes)
    print(table, end="")
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            f.write(table)
        os.replace(args.markdown + ".tmp", args.markdown)


if __name__ == "__main__":
    main()
