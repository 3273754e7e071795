#!/usr/bin/env python3
"""Fixtures for tests/test_predict.c: nnUNetPredictor's predictions of evaluation cases with the small real
nnU-Net models in weights/ (scripts/train_models.py trained them; weights/README.md), plus bad inputs.

    gen_predict.py --out DIR [--weights weights]

DIR/manifest.json lists the runs (DIR/run_<name>.json each; --only regenerates some of them and keeps the
others). Each run is one model folder (its fold_K/checkpoint_final.pth for
nnunetv2, fold_K.safetensors for i3rt), folds, mirroring on/off and one case; for each it holds two
references made by nnunetv2 2.8.1's nnUNetPredictor.predict_single_npy_array on the CPU
(images read with SimpleITKIO, as nnUNetv2_predict reads them):
  fp16  nnUNetPredictor as it is: sliding-window sums (and fold average) in fp16
  fp32  the same with its two fp16 accumulators switched to float32 (torch.half -> torch.float32 while it
        runs; the fp16 Gaussian map is unchanged), which is what i3rt computes by default
Segmentations are DIR/<run>_<acc>_seg.u8, probabilities DIR/<run>_<acc>_prob.f32 ([classes, z, y, x]).
Evaluation cases come from scripts/train_models.py make_eval_cases (seeds never used for training).
Bad inputs for the error tests are under DIR/bad/.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import time

import nibabel as nib
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNS = [  # name, model folder, folds, mirroring, dataset of the case
    ("brain3d_f0_notta", "brain_3d_fullres", [0], False, 501),
    ("brain3d_f01_tta", "brain_3d_fullres", [0, 1], True, 501),
    ("brain2d_f01_tta", "brain_2d", [0, 1], True, 501),
    ("headct_f0_tta", "headct_3d_fullres_aniso", [0], True, 502),
    ("headct_f01_notta", "headct_3d_fullres_aniso", [0, 1], False, 502),
]


def load_train_models():
    spec = importlib.util.spec_from_file_location("train_models", os.path.join(ROOT, "scripts", "train_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def accumulate(mode):
    """fp32: nnUNetPredictor's fp16 accumulators (torch.half at call time) become float32."""
    half = torch.half
    if mode == "fp32":
        torch.half = torch.float32
    try:
        yield
    finally:
        torch.half = half


def predict(model_dir, folds, tta, files, mode):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=tuple(folds))
    img, props = SimpleITKIO().read_images(files)
    with accumulate(mode):
        seg, prob = predictor.predict_single_npy_array(img, props, None, None, True)
    return np.asarray(seg), np.asarray(prob, dtype=np.float32)


def write_bad_inputs(out, cases, tm, weights):
    bad = os.path.join(out, "bad")
    shutil.rmtree(bad, ignore_errors=True)
    brain = cases[501]
    ct = cases[502]

    def folder(name):
        d = os.path.join(bad, name)
        os.makedirs(d)
        return d

    # the two-channel CT model given only channel 0
    shutil.copy(ct[0], os.path.join(folder("missing_channel"), "case_0000.nii.gz"))
    # the one-channel brain model given two channel files
    d = folder("extra_channel")
    shutil.copy(brain[0], os.path.join(d, "case_0000.nii.gz"))
    shutil.copy(brain[0], os.path.join(d, "case_0001.nii.gz"))
    # channel 1 on another grid than channel 0
    d = folder("geometry")
    shutil.copy(ct[0], os.path.join(d, "case_0000.nii.gz"))
    img = nib.load(ct[1])
    arr = np.asarray(img.dataobj)[:, :-2, :]
    tm.save_nifti(os.path.join(d, "case_0001.nii.gz"), arr, tuple(float(z) for z in img.header.get_zooms()),
                  np.float32)
    # channel 1 with another spacing
    d = folder("spacing")
    shutil.copy(ct[0], os.path.join(d, "case_0000.nii.gz"))
    zooms = tuple(float(z) * 1.1 for z in img.header.get_zooms())
    tm.save_nifti(os.path.join(d, "case_0001.nii.gz"), np.asarray(img.dataobj), zooms, np.float32)
    # NaN and Inf voxels
    b = nib.load(brain[0])
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        arr = np.asarray(b.dataobj).astype(np.float32).copy()
        arr[10, 11, 12] = value
        tm.save_nifti(os.path.join(folder(name), "case_0000.nii.gz"), arr,
                      tuple(float(z) for z in b.header.get_zooms()), np.float32)
    # a model folder without weights (what an unconverted nnU-Net folder looks like to i3rt)
    d = folder("model_without_weights")
    for f in ("plans.json", "dataset.json"):
        shutil.copy(os.path.join(weights, "brain_3d_fullres", f), d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default=os.environ.get("I3RT_PREDICT_WEIGHTS", os.path.join(ROOT, "weights")))
    ap.add_argument("--only", nargs="+", help="run names to (re)generate; the others are kept as they are")
    args = ap.parse_args()
    args.out, args.weights = os.path.abspath(args.out), os.path.abspath(args.weights)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    tm = load_train_models()

    cases = {}
    for ds in (501, 502):  # deterministic: regenerating gives the same files
        folder = os.path.join(args.out, "cases", str(ds))
        shutil.rmtree(folder, ignore_errors=True)
        (name,) = tm.make_eval_cases(ds, 1, folder)
        cases[ds] = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(name))

    for name, model, folds, tta, ds in RUNS:
        if args.only and name not in args.only:
            continue
        model_dir = os.path.join(args.weights, model)
        entry = dict(name=name, model_dir=model_dir, folds=folds, mirroring=tta, case_dir=os.path.dirname(cases[ds][0]),
                     case=os.path.basename(cases[ds][0])[:-len("_0000.nii.gz")], references={})
        for mode in ("fp16", "fp32"):
            t0 = time.time()
            seg, prob = predict(model_dir, folds, tta, cases[ds], mode)
            secs = time.time() - t0
            seg.astype(np.uint8).tofile(os.path.join(args.out, f"{name}_{mode}_seg.u8"))
            prob.tofile(os.path.join(args.out, f"{name}_{mode}_prob.f32"))
            entry["references"][mode] = dict(seg=f"{name}_{mode}_seg.u8", prob=f"{name}_{mode}_prob.f32",
                                             shape=list(prob.shape), seconds=round(secs, 3))
            print(f"gen_predict: {name} {mode}: nnUNetPredictor {secs:.2f} s, shape {list(prob.shape)}, "
                  f"labels {np.bincount(seg.ravel()).tolist()}", flush=True)
        with open(os.path.join(args.out, f"run_{name}.json"), "w") as f:
            json.dump(entry, f, indent=1)
    write_bad_inputs(args.out, cases, tm, args.weights)
    runs = []
    for name, *_ in RUNS:
        path = os.path.join(args.out, f"run_{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append(json.load(f))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
