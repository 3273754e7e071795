#!/usr/bin/env python3
"""i3Deep's expert waiting time (corrections in -> refined segmentation out): i3rt vs nnU-Net in one run.

    bench/i3deep_waiting.py -m weights/brain_3d_fullres -r weights/brain_refine_3d_fullres
                            [--cases DIR] [--large] [--threads 2] [--repeat 3] [--i3rt build/i3rt]
                            [--device cpu|cuda] [--precision f32|tf32|f16|bf16] [--json FILE]

For every case (NAME<TAB>IMAGE<TAB>TRUTH rows of DIR/cases.tsv, as scripts/i3deep_cases.py writes them;
--large adds a ~512 x 512 x 100 volume: the Colin27 T1 resampled to 0.4 x 0.4 x 1.5 mm, the size the
issue's < 1 s GPU target names):
  i3rt:   `i3rt i3deep simulate IMAGE TRUTH -m PRESEG -r REFINE --json`, --repeat times; the waiting time
          it reports (stages corrections + refine-input + refine: reading and checking the corrected
          slices, building the refinement input, the refinement nnU-Net's whole-case prediction) and the
          pre-segmentation time. The refinement model is loaded before the corrections, so loading is
          not part of the wait. --precision is i3rt's (default: f16 on cuda, as nnUNetPredictor's
          autocast; f32 on the CPU).
  nnU-Net: the same step the way a PyTorch i3Deep does it, in a child process with the model loaded
          first: the refinement input built from the same corrected slices (simulate's
          NAME_corrections.nii.gz: -1 = not corrected -> 0, the paper's encoding) and
          nnUNetPredictor.predict_single_npy_array on it (same folds, same mirroring, same threads),
          --repeat times.
Prints a row per case with the medians and the ratio nnU-Net / i3rt (> 1: i3rt waits less).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NNUNET_CHILD = r"""
import json, sys, time
import nibabel as nib, numpy as np, torch
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                    perform_everything_on_device=a["device"] == "cuda", device=torch.device(a["device"]),
                    verbose=False, allow_tqdm=False)
p.initialize_from_trained_model_folder(a["model"], use_folds=None)
img = nib.load(a["image"])
image = np.asarray(img.dataobj, dtype=np.float32)  # [x, y, z]
spacing = [float(s) for s in img.header.get_zooms()[:3]][::-1]
corrections = np.asarray(nib.load(a["corrections"]).dataobj, dtype=np.float32)
times = []
for _ in range(a["repeat"]):
    t0 = time.time()
    x = np.stack([image, np.where(corrections >= 0, corrections, 0)]).transpose(0, 3, 2, 1)  # (c, z, y, x)
    seg = p.predict_single_npy_array(np.ascontiguousarray(x), {"spacing": spacing}, None, None, False)
    if a["device"] == "cuda":
        torch.cuda.synchronize()
    times.append(time.time() - t0)
print("BENCH " + json.dumps({"seconds": times}))
"""


def make_large_case(folder, cases_dir):
    """The Colin27 case resampled to 0.4 x 0.4 x 1.5 mm (x, y, z): about 450 x 540 x 120 voxels."""
    from scipy import ndimage as ndi
    img = nib.load(os.path.join(cases_dir, "images", "colin27.nii.gz"))
    lab = nib.load(os.path.join(cases_dir, "labels", "colin27.nii.gz"))
    old = np.array(img.header.get_zooms()[:3], float)
    new = np.array([0.4, 0.4, 1.5])
    zoom = old / new
    image = ndi.zoom(np.asarray(img.dataobj, np.float32), zoom, order=1)
    labels = ndi.zoom(np.asarray(lab.dataobj, np.uint8), zoom, order=0)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / old * new
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    paths = (os.path.join(folder, "images", "colin27_large.nii.gz"), os.path.join(folder, "labels", "colin27_large.nii.gz"))
    for arr, path, dtype in ((image, paths[0], np.float32), (labels, paths[1], np.uint8)):
        out = nib.Nifti1Image(arr.astype(dtype), affine)
        out.header.set_zooms(tuple(new))
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
        nib.save(out, path)
    return ("colin27_large",) + paths


def read_cases(cases_dir):
    rows = []
    with open(os.path.join(cases_dir, "cases.tsv")) as f:
        next(f)
        for line in f:
            name, image, truth = line.rstrip("\n").split("\t")
            rows.append((name, os.path.join(cases_dir, image), os.path.join(cases_dir, truth)))
    return rows


def run_i3rt(args, name, image, truth, out):
    runs = []
    for _ in range(args.repeat):
        cmd = [args.i3rt, "i3deep", "simulate", image, truth, "-m", args.preseg, "-r", args.refine, "-o", out,
               "--name", name, "--threads", str(args.threads), "--json"]
        if args.device != "cpu":
            cmd += ["--device", args.device, "--precision", args.precision]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"i3deep_waiting: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        runs.append(json.loads(proc.stdout))
    return runs


def run_nnunet(args, image, corrections):
    a = dict(model=os.path.abspath(args.refine), image=image, corrections=corrections, repeat=args.repeat,
             threads=args.threads, device=args.device)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), nnUNet_def_n_proc=str(args.threads),
               nnUNet_results="/tmp", nnUNet_raw="/tmp", nnUNet_preprocessed="/tmp")
    proc = subprocess.run([sys.executable, "-c", NNUNET_CHILD, json.dumps(a)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"i3deep_waiting: nnUNetPredictor failed ({proc.returncode}):\n{proc.stderr}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
    return json.loads(line[6:])["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--preseg", required=True, help="pre-segmentation model folder")
    ap.add_argument("-r", "--refine", required=True, help="refinement model folder")
    ap.add_argument("--cases", help="a folder from scripts/i3deep_cases.py (default: made here, Colin27 only)")
    ap.add_argument("--large", action="store_true", help="add the Colin27 volume resampled to ~512 x 512 x 100")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", choices=("f32", "tf32", "f16", "bf16"),
                    help="i3rt's convolutions (default: f16 on cuda, as nnUNetPredictor's autocast; f32 on the CPU)")
    ap.add_argument("--i3rt", default=os.path.join(ROOT, "build", "i3rt"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    args.precision = args.precision or ("f16" if args.device == "cuda" else "f32")
    if args.precision != "f32" and args.device == "cpu":
        ap.error("--precision other than f32 needs --device cuda")

    with tempfile.TemporaryDirectory() as tmp:
        cases_dir = args.cases
        if not cases_dir:
            cases_dir = os.path.join(tmp, "cases")
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "i3deep_cases.py"), "--out", cases_dir,
                            "--n", "0"], check=True, capture_output=True)
        cases = read_cases(cases_dir)
        if args.large:
            cases.append(make_large_case(os.path.join(tmp, "large"), cases_dir))
        results = {}
        print(f"{'case':16} {'shape (x y z)':>16} {'preseg s':>9} {'i3rt wait s':>12} {'nnU-Net s':>10} {'ratio':>7}"
              f"   {'i3rt refine: preprocessing / network / export s':>48}   (medians of {args.repeat}; "
              f"{args.threads} threads, {args.device}, i3rt {args.precision})")
        for name, image, truth in cases:
            out = os.path.join(tmp, "out", name)
            runs = run_i3rt(args, name, image, truth, out)
            base = run_nnunet(args, image, os.path.join(out, f"{name}_corrections.nii.gz"))
            wait = statistics.median(r["waiting_seconds"] for r in runs)
            pre = statistics.median(r["stage_seconds"]["presegmentation"] for r in runs)
            shape = "x".join(str(s) for s in nib.load(image).shape[:3])
            ratio = statistics.median(base) / wait
            parts = " / ".join(f"{statistics.median(r['refine_seconds'][k] for r in runs):.3f}"
                               for k in ("preprocessing", "network", "export"))
            print(f"{name:16} {shape:>16} {pre:9.2f} {wait:12.3f} {statistics.median(base):10.3f} {ratio:6.2f}x"
                  f"   {parts:>48}")
            results[name] = dict(shape=shape, i3rt=runs, nnunet_seconds=base, ratio=ratio,
                                 dice=(runs[0]["mean_foreground_dice_presegmentation"],
                                       runs[0]["mean_foreground_dice_refined"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
