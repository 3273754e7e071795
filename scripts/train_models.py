#!/usr/bin/env python3
"""Trains the small real nnU-Net v2 models that i3rt's prediction tests use (weights/README.md).

    scripts/train_models.py [--work DIR] [--out weights] [--models NAME...] [--reuse]

What it does, all with nnunetv2 itself (its fingerprint extractor, planner, preprocessor and trainer) on the CPU:
  1. Makes two raw datasets from real volumes (Debian packages mricron-data and invesalius-examples):
     - Dataset501_I3rtBrain: the Colin27 T1 (ch2bet.nii.gz, skull-stripped so the zero background exercises
       crop-to-nonzero and use_mask_for_norm) with labels from the AAL atlas drawn on this subject:
       1 caudate, 2 putamen, 3 thalamus (left and right merged). ~3 mm, nearly isotropic.
     - Dataset502_I3rtHeadCT: the InVesalius head CT (Cranium.inv3) in two channels, "CT" (CTNormalization)
       and a derived soft-tissue contrast "T2like" (ZScoreNormalization); labels 1 soft tissue
       (-150..250 HU), 2 bone (>= 250 HU). Anisotropic: ~6 mm along the NIfTI x axis, ~1.8 mm in-plane,
       so nnU-Net transposes the axes (transpose_forward [2, 0, 1]) and resamples with a separate z axis.
     Every case is a seeded random deformation of the subject: rotation, scaling, shift of the field of
     view, per-case voxel spacing, gamma/bias-field/noise intensity changes. Training cases use seeds
     1000 + i, evaluation cases (never seen in training, see make_eval_cases) 900000 + i.
  2. Plans with ExperimentPlanner, then shrinks the plans (small patch, 4 stages of 8..64 features) so
     training fits a CPU, and preprocesses with the shrunk plans ("i3rtTinyPlans").
  3. Trains folds 0 and 1 of: Brain 3d_fullres, Brain 2d, HeadCT 3d_fullres (anisotropic), with a
     subclass of nnUNetTrainer that only changes the epoch count and iterations per epoch. The saved
     checkpoint's trainer_name is then set to "nnUNetTrainer" (the subclass does not change the network,
     and nnUNetPredictor must find the trainer class inside nnunetv2), and the optimizer state is dropped
     (inference does not read it), which keeps each checkpoint small.
  4. Copies each trained-model folder to OUT/<name>/ (dataset.json, plans.json, fold_K/checkpoint_final.pth)
     and converts it with tools/convert_pt/convert_nnunet.py to OUT/<name>/fold_K.safetensors.

Deterministic data; training itself is seeded (torch/numpy/random) but nnU-Net's augmentation threads are
not, so a rerun gives a different (equally valid) model. The tests compare i3rt with nnUNetPredictor on the
committed models, so they do not depend on reproducing the training bit for bit.
"""
import argparse
import json
import os
import plistlib
import shutil
import subprocess
import sys
import tarfile
import time

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MRICRON = "/usr/share/mricron/templates"
CRANIUM = "/usr/share/doc/invesalius-examples/examples/Cranium.inv3"

BRAIN_LABELS = {"background": 0, "caudate": 1, "putamen": 2, "thalamus": 3}
BRAIN_AAL = {1: (71, 72), 2: (73, 74), 3: (77, 78)}
CT_LABELS = {"background": 0, "soft_tissue": 1, "bone": 2}

TRAIN_SEED, EVAL_SEED = 1000, 900000


# ---- sources -----------------------------------------------------------------------------------------

def load_brain():
    """Colin27 skull-stripped T1 and the deep grey labels, arrays indexed [x, y, z] (1 mm)."""
    t1 = nib.load(os.path.join(MRICRON, "ch2bet.nii.gz")).get_fdata().astype(np.float32)
    aal = np.asarray(nib.load(os.path.join(MRICRON, "aal.nii.gz")).dataobj).astype(np.int16)
    labels = np.zeros(aal.shape, np.uint8)
    for lab, regions in BRAIN_AAL.items():
        labels[np.isin(aal, regions)] = lab
    return t1, labels, (1.0, 1.0, 1.0)


def load_ct():
    """The InVesalius head CT in HU, array indexed [x, y, z], spacing (0.957, 0.957, 1.5) mm."""
    with tarfile.open(CRANIUM) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers()}
        main = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        raw = tar.extractfile(members["matrix.dat"]).read()
    shape = tuple(main["matrix"]["shape"])  # (z, y, x)
    ct = np.frombuffer(raw, dtype="<i2").reshape(shape).astype(np.float32)
    return np.ascontiguousarray(ct.transpose(2, 1, 0)), tuple(float(s) for s in main["spacing"])


# ---- random deformations -----------------------------------------------------------------------------

def rotation(rng, max_deg):
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_case(rng, volumes, src_spacing, center_mm, out_shape, out_spacing, max_deg, scale_range, shift_mm):
    """Resamples source volumes (list of (array, order, cval)) onto a rotated/scaled/shifted grid of
    out_shape voxels of out_spacing mm centred near center_mm. Returns the resampled arrays [x, y, z]."""
    rot = rotation(rng, max_deg) * rng.uniform(*scale_range)
    center = np.asarray(center_mm) + rng.uniform(-shift_mm, shift_mm, 3)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(out_shape, out_spacing)],
                                indexing="ij"), 0).reshape(3, -1)
    world = rot @ grid + center[:, None]
    src = world / np.asarray(src_spacing)[:, None]
    out = []
    for arr, order, cval in volumes:
        r = ndi.map_coordinates(arr, src, order=order, mode="constant", cval=cval, prefilter=False)
        out.append(r.reshape(out_shape))
    return out


def bias_field(rng, shape, strength):
    """A smooth multiplicative field 1 + strength * (random quadratic polynomial in normalized coords)."""
    c = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*c, indexing="ij")
    terms = [x, y, z, x * y, y * z, x * z, x * x, y * y, z * z]
    field = sum(rng.uniform(-1, 1) * t for t in terms) / len(terms)
    return 1.0 + strength * field


def make_brain_case(seed):
    """One brain case: (T1 [x, y, z] float32, labels uint8, spacing (x, y, z))."""
    rng = np.random.default_rng(seed)
    t1, labels, sp = load_brain_cached()
    spacing = tuple(float(s) for s in np.round(rng.uniform(2.7, 3.3) * rng.uniform(0.95, 1.05, 3), 3))
    fov_mm = np.array([135.0, 165.0, 132.0])  # x, y, z
    out_shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing))
    center = np.array([90.0, 110.0, 75.0])   # near the deep grey structures of ch2 (voxel = mm)
    img, lab = sample_case(rng, [(t1, 1, 0.0), (labels, 0, 0)], sp, center, out_shape, spacing, 10,
                           (0.92, 1.08), 8.0)
    brain = img > 0.5
    gamma = rng.uniform(0.8, 1.25)
    img = 100.0 * np.clip(img / 133.0, 0, None) ** gamma * bias_field(rng, out_shape, 0.3)
    img += rng.normal(0, rng.uniform(1.0, 4.0), out_shape)
    img[~brain] = 0.0  # skull-stripped: exact zeros outside the brain
    return img.astype(np.float32), lab.astype(np.uint8), spacing


def make_ct_case(seed):
    """One head CT case: ([CT, T2like] each [x, y, z] float32, labels uint8, spacing (x, y, z))."""
    rng = np.random.default_rng(seed)
    ct, sp = load_ct_cached()
    spacing = (float(np.round(rng.uniform(5.8, 6.4), 3)),) + tuple(
        float(s) for s in np.round(rng.uniform(1.7, 1.9) * rng.uniform(0.98, 1.02, 2), 3))
    fov_mm = np.array([150.0, 120.0, 118.0])
    out_shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing))
    center = np.array([128 * sp[0], 120 * sp[1], 60 * sp[2]])
    (hu,) = sample_case(rng, [(ct, 1, -1024.0)], sp, center, out_shape, spacing, 8, (0.95, 1.05), 6.0)
    labels = np.zeros(out_shape, np.uint8)
    labels[(hu >= -150) & (hu < 250)] = 1
    labels[hu >= 250] = 2
    ct_out = hu * rng.uniform(0.97, 1.03) + rng.uniform(-15, 15) + rng.normal(0, rng.uniform(5, 15), out_shape)
    t2 = 800.0 * np.exp(-((hu - 40.0) / 120.0) ** 2) * bias_field(rng, out_shape, 0.2)
    t2 = ndi.gaussian_filter(t2, 0.7) + rng.normal(0, 10.0, out_shape) + 50.0
    return [ct_out.astype(np.float32), t2.astype(np.float32)], labels, spacing


_cache = {}


def load_brain_cached():
    if "brain" not in _cache:
        _cache["brain"] = load_brain()
    return _cache["brain"]


def load_ct_cached():
    if "ct" not in _cache:
        _cache["ct"] = load_ct()
    return _cache["ct"]


def affine_for(spacing, shape):
    """A qform/sform with the voxel spacing, an oblique-free orientation and the volume centred at 0."""
    aff = np.diag(list(spacing) + [1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return aff


def save_nifti(path, arr, spacing, dtype):
    img = nib.Nifti1Image(arr.astype(dtype), affine_for(spacing, arr.shape))
    img.header.set_zooms(spacing)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, path)


def write_case(folder, name, channels, spacing):
    """Writes name_0000.nii.gz, name_0001.nii.gz, ... (float32) into folder."""
    os.makedirs(folder, exist_ok=True)
    for c, arr in enumerate(channels):
        save_nifti(os.path.join(folder, f"{name}_{c:04d}.nii.gz"), arr, spacing, np.float32)


def training_slices(rng, labels):
    """i3Deep's refinement training input (paper Sec. 3.1): ground-truth slices chosen at random along the
    three axes keep their labels, every other voxel is 0 (docs/i3deep.md, "Stage 4"). 1 to 4 slices per
    axis, each through the foreground with probability 0.8 (the recommender picks uncertain slices, which
    lie on the structures), else anywhere. Axes are the array's [x, y, z] = i3rt's sagittal, coronal, axial."""
    out = np.zeros_like(labels)
    for axis in range(3):
        fg = np.flatnonzero(np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).any(1))
        for _ in range(rng.integers(1, 5)):
            pool = fg if fg.size and rng.random() < 0.8 else np.arange(labels.shape[axis])
            index = [slice(None)] * 3
            index[axis] = int(rng.choice(pool))
            out[tuple(index)] = labels[tuple(index)]
    return out


def make_refine_case(seed):
    """One refinement case: the brain case of this seed plus its corrected-slice channel."""
    img, lab, spacing = make_brain_case(seed)
    slices = training_slices(np.random.default_rng(seed + 7), lab)
    return [img, slices.astype(np.float32)], lab, spacing


DATASETS = {
    501: dict(name="Dataset501_I3rtBrain", make=lambda s: (lambda r: ([r[0]], r[1], r[2]))(make_brain_case(s)),
              channels={"0": "T1"}, labels=BRAIN_LABELS, n_train=12),
    502: dict(name="Dataset502_I3rtHeadCT", make=make_ct_case, channels={"0": "CT", "1": "T2like"},
              labels=CT_LABELS, n_train=10),
    # i3Deep's refinement network: image + corrected slices (class labels, 0 elsewhere), left unnormalized.
    503: dict(name="Dataset503_I3rtBrainRefine", make=make_refine_case,
              channels={"0": "T1", "1": "noNorm"}, labels=BRAIN_LABELS, n_train=36),
}


def make_eval_cases(dataset_id, n, out_folder):
    """Evaluation cases (seeds EVAL_SEED + i, disjoint from training) as nnU-Net input files; returns names."""
    d = DATASETS[dataset_id]
    names = []
    for i in range(n):
        channels, _, spacing = d["make"](EVAL_SEED + dataset_id * 100 + i)
        name = f"eval{dataset_id}_{i:03d}"
        write_case(out_folder, name, channels, spacing)
        names.append(name)
    return names


def make_raw_dataset(raw_root, dataset_id):
    d = DATASETS[dataset_id]
    folder = os.path.join(raw_root, d["name"])
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(d["n_train"]):
        channels, labels, spacing = d["make"](TRAIN_SEED + dataset_id * 100 + i)
        name = f"case_{i:03d}"
        write_case(os.path.join(folder, "imagesTr"), name, channels, spacing)
        os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
        save_nifti(os.path.join(folder, "labelsTr", f"{name}.nii.gz"), labels, spacing, np.uint8)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": d["channels"], "labels": d["labels"], "numTraining": d["n_train"],
                   "file_ending": ".nii.gz",
                   "description": "i3rt test dataset derived from real volumes, see scripts/train_models.py"},
                  f, indent=2)
    print(f"  {d['name']}: {d['n_train']} training cases")


# ---- plans ---------------------------------------------------------------------------------------------

def tiny_architecture(arch, dims, kernels, strides):
    kw = arch["arch_kwargs"]
    n = len(strides)
    kw.update(n_stages=n, features_per_stage=[min(8 * 2 ** i, 64) for i in range(n)], kernel_sizes=kernels,
              strides=strides, n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
    return arch


TINY = {
    # dataset: {configuration: (patch, batch, kernels, strides)}
    501: {
        "3d_fullres": ([40, 48, 40], 2, [[3, 3, 3]] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
        "2d": ([64, 48], 12, [[3, 3]] * 4, [[1, 1], [2, 2], [2, 2], [2, 2]]),
    },
    503: {
        "3d_fullres": ([40, 48, 40], 2, [[3, 3, 3]] * 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
    },
    502: {
        "3d_fullres": ([16, 48, 48], 2, [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
                       [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]),
    },
}


def shrink_plans(preprocessed_root, dataset_id):
    d = DATASETS[dataset_id]
    src = os.path.join(preprocessed_root, d["name"], "nnUNetPlans.json")
    with open(src) as f:
        plans = json.load(f)
    plans["plans_name"] = "i3rtTinyPlans"
    configs = {}
    for cfg, (patch, batch, kernels, strides) in TINY[dataset_id].items():
        c = plans["configurations"][cfg]
        c["patch_size"] = patch
        c["batch_size"] = batch
        c["architecture"] = tiny_architecture(c["architecture"], len(patch), kernels, strides)
        c["data_identifier"] = f"i3rtTinyPlans_{cfg}"
        configs[cfg] = c
    plans["configurations"] = configs
    with open(os.path.join(preprocessed_root, d["name"], "i3rtTinyPlans.json"), "w") as f:
        json.dump(plans, f, indent=2)
    print(f"  {d['name']}: transpose_forward {plans['transpose_forward']}, " + ", ".join(
        f"{k}: spacing {v['spacing']} patch {v['patch_size']} norm {v['normalization_schemes']} "
        f"mask {v['use_mask_for_norm']}" for k, v in configs.items()))


# ---- training -------------------------------------------------------------------------------------------

def warm_start(network, checkpoint, axes):
    """Initializes `network` from another model's checkpoint of the same architecture. The first
    convolution keeps the input channels the two share (the refinement model has one more: the corrected
    slices), every other tensor must match in shape. axes[i]: the source network's spatial axis that is
    the target's axis i (the two plans may transpose the images differently); 3D kernels are permuted so
    that each keeps its orientation in the image."""
    import torch
    src = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    dst = network.state_dict()
    for k, v in dst.items():
        w = src[k]
        if w.dim() == 5:
            w = w.permute(0, 1, *(2 + a for a in axes))
        if w.shape != v.shape:
            if w.dim() != v.dim() or w.shape[0] != v.shape[0] or w.shape[2:] != v.shape[2:]:
                raise ValueError(f"warm start from {checkpoint}: {k} is {tuple(w.shape)}, needs {tuple(v.shape)}")
            w = w[:, :v.shape[1]]
        dst[k] = w
    network.load_state_dict(dst)


def train(dataset_id, configuration, fold, epochs, iterations, init_checkpoint=None):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.paths import nnUNet_preprocessed

    class nnUNetTrainer_i3rtTiny(nnUNetTrainer):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = 1
            self.save_every = 10 ** 6

        def plot_network_architecture(self):
            pass

    d = DATASETS[dataset_id]
    with open(os.path.join(nnUNet_preprocessed, d["name"], "i3rtTinyPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(nnUNet_preprocessed, d["name"], "dataset.json")) as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False  # run_training.py sets this key; the trainer pops it
    torch.manual_seed(fold)
    np.random.seed(fold)
    trainer = nnUNetTrainer_i3rtTiny(plans, configuration, fold, dataset_json, device=torch.device("cpu"))
    if init_checkpoint:
        trainer.initialize()
        with open(os.path.join(os.path.dirname(os.path.dirname(init_checkpoint)), "plans.json")) as f:
            src_transpose = json.load(f)["transpose_forward"]
        axes = [src_transpose.index(a) for a in plans["transpose_forward"]]
        warm_start(trainer.network, init_checkpoint, axes)
    t0 = time.time()
    trainer.run_training()
    print(f"  trained {d['name']} {configuration} fold {fold} in {time.time() - t0:.0f} s")
    return trainer.output_folder_base


def slim_checkpoint(path):
    import torch
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    keep = {k: ckpt[k] for k in ("network_weights", "init_args", "trainer_name",
                                 "inference_allowed_mirroring_axes", "current_epoch")}
    keep["trainer_name"] = "nnUNetTrainer"
    torch.save(keep, path)


def export_model(model_dir, out_dir, folds):
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for name in ("dataset.json", "plans.json"):
        shutil.copy(os.path.join(model_dir, name), out_dir)
    for fold in folds:
        os.makedirs(os.path.join(out_dir, f"fold_{fold}"))
        dst = os.path.join(out_dir, f"fold_{fold}", "checkpoint_final.pth")
        shutil.copy(os.path.join(model_dir, f"fold_{fold}", "checkpoint_final.pth"), dst)
        slim_checkpoint(dst)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools/convert_pt/convert_nnunet.py"), out_dir,
                    "--out", out_dir], check=True)


MODELS = {  # output name: (dataset, configuration, epochs, iterations per epoch, folds, warm start from)
    # epochs as a tuple: successive runs, each started from the previous one's checkpoint with a fresh
    # learning-rate schedule.
    # i3Deep's refinement network (trained first: the pre-segmentation starts from it). After 60 epochs
    # it refined to a lower Dice than the pre-segmentation ensemble had; 25 more epochs fixed that.
    "brain_refine_3d_fullres": (503, "3d_fullres", (60, 25), 25, [0], None),
    # i3Deep's pre-segmentation ensemble (two folds) and the prediction parity tests. From random
    # initialization, 40 x 25 iterations (one try) left it predicting background only (the small structures make
    # the loss collapse to background first); started from the refinement network's weights (T1 input
    # channel of its first convolution) it segments after a few epochs.
    "brain_3d_fullres": (501, "3d_fullres", 20, 25, [0, 1], "brain_refine_3d_fullres"),
    # parity tests only: learned something, not good segmenters
    "brain_2d": (501, "2d", 4, 12, [0, 1], None),
    "headct_3d_fullres_aniso": (502, "3d_fullres", 4, 12, [0, 1], None),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/i3rt/nnunet-train"))
    ap.add_argument("--out", default=os.path.join(ROOT, "weights"))
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                    help="which models to train (default: all; each with its schedule in MODELS)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep the raw and preprocessed data of an earlier run")
    args = ap.parse_args()

    for k in ("raw", "preprocessed", "results"):
        os.makedirs(os.path.join(args.work, k), exist_ok=True)
    os.environ.update(nnUNet_raw=os.path.join(args.work, "raw"),
                      nnUNet_preprocessed=os.path.join(args.work, "preprocessed"),
                      nnUNet_results=os.path.join(args.work, "results"),
                      nnUNet_n_proc_DA=str(args.threads), nnUNet_compile="false", nnUNet_def_n_proc=str(args.threads),
                      OMP_NUM_THREADS=str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    t0 = time.time()
    datasets = sorted({MODELS[m][0] for m in args.models})
    if not args.reuse:
        print("== raw datasets")
        for ds in datasets:
            make_raw_dataset(os.environ["nnUNet_raw"], ds)
        print("== fingerprint, plans, preprocessing")
        extract_fingerprints(datasets, num_processes=args.threads, check_dataset_integrity=True)
        plan_experiments(datasets)
        for ds in datasets:
            shrink_plans(os.environ["nnUNet_preprocessed"], ds)
            cfgs = list(TINY[ds])
            preprocess([ds], "i3rtTinyPlans", cfgs, [args.threads] * len(cfgs), verbose=False)
        print(f"   ({time.time() - t0:.0f} s)")
    print("== training")
    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in the main process: no worker processes on 2 cores
    for name in args.models:
        ds, cfg, epochs, iterations, folds, init = MODELS[name]
        init_checkpoint = os.path.join(args.out, init, "fold_0", "checkpoint_final.pth") if init else None
        model_dir = None
        for fold in folds:
            start = init_checkpoint
            for run_epochs in epochs if isinstance(epochs, tuple) else (epochs,):
                model_dir = train(ds, cfg, fold, run_epochs, iterations, start)
                start = os.path.join(model_dir, f"fold_{fold}", "checkpoint_final.pth")
        export_model(model_dir, os.path.join(args.out, name), folds)
    print(f"== done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
