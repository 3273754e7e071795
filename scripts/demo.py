#!/usr/bin/env python3
"""The Python side of scripts/demo.sh (reference only: i3rt itself runs without Python).

    demo.py make-model --work DIR
        Makes a real-format nnU-Net v2 model from the Colin27 T1 (mricron-data's ch2.nii.gz, brain mask
        from ch2bet.nii.gz > 0): an nnU-Net raw dataset of a few crops/flips of it, nnunetv2's own
        fingerprint extraction and ExperimentPlanner, the 3d_fullres network built from those plans by
        dynamic_network_architectures with RANDOM weights (no training yet), saved as nnU-Net's trainer
        saves it: DIR/model/{plans.json, dataset.json, fold_0/checkpoint_final.pth}. Also writes
        DIR/input.nii.gz: a crop of ch2 around the brain, z-scored (nnU-Net's ZScoreNormalization).

    demo.py compare --model DIR/model --input IN.nii.gz --i3rt-output OUT.nii.gz [--threads 2]
                    [--i3rt-seconds S] [--runs 3]
        Runs the same forward in PyTorch (same zero padding to the total stride, crop back), prints the
        max abs and relative error of i3rt's logits against it and both timings. Fails (exit 1) if the
        relative error is above 1e-4.

Axes: i3rt maps NIfTI (x, y, z) to (W, H, D); the reference does the same (nibabel array transposed
to [C, z, y, x]), so both see the identical array. """
import argparse
import json
import os
import statistics
import sys
import time

import nibabel as nib
import numpy as np

CH2 = "/usr/share/mricron/templates/ch2.nii.gz"
CH2_BRAIN = "/usr/share/mricron/templates/ch2bet.nii.gz"
DATASET_ID, DATASET_NAME = 500, "Dataset500_Colin27Brain"


def zscore(a, mask=None):
    vals = a[mask] if mask is not None else a
    return ((a - vals.mean()) / max(vals.std(), 1e-8)).astype(np.float32)


def make_model(work):
    image = nib.load(CH2)
    data = np.asarray(image.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(CH2_BRAIN).dataobj) > 0
    raw = os.path.join(work, "nnUNet_raw")
    os.environ["nnUNet_raw"] = raw
    os.environ["nnUNet_preprocessed"] = os.path.join(work, "nnUNet_preprocessed")
    os.environ["nnUNet_results"] = os.path.join(work, "nnUNet_results")
    ds = os.path.join(raw, DATASET_NAME)
    os.makedirs(os.path.join(ds, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(ds, "labelsTr"), exist_ok=True)

    # A few cases from the one subject: the full volume, a crop and a left-right flip (seeded, so the
    # planner's numbers are the same on every machine).
    rng = np.random.default_rng(27)
    cases = [(slice(None), slice(None), slice(None), False)]
    for _ in range(2):
        lo = rng.integers(0, 20, size=3)
        cases.append((slice(lo[0], lo[0] + 150), slice(lo[1], lo[1] + 180), slice(lo[2], lo[2] + 150), True))
    for i, (sx, sy, sz, flip) in enumerate(cases):
        img, lab = data[sx, sy, sz], brain[sx, sy, sz].astype(np.uint8)
        if flip:
            img, lab = img[::-1].copy(), lab[::-1].copy()
        nib.save(nib.Nifti1Image(img, image.affine), os.path.join(ds, "imagesTr", f"colin_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, image.affine), os.path.join(ds, "labelsTr", f"colin_{i:03d}.nii.gz"))
    dataset_json = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1},
                    "numTraining": len(cases), "file_ending": ".nii.gz"}
    with open(os.path.join(ds, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)

    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=True, clean=True, verbose=False)
    plans_id = plan_experiments([DATASET_ID])
    with open(os.path.join(os.environ["nnUNet_preprocessed"], DATASET_NAME, plans_id + ".json")) as f:
        plans = json.load(f)
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg["architecture"]
    torch.manual_seed(0)
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 input_channels=1, output_channels=2, deep_supervision=True)

    model = os.path.join(work, "model")
    os.makedirs(os.path.join(model, "fold_0"), exist_ok=True)
    with open(os.path.join(model, "plans.json"), "w") as f:
        json.dump(plans, f, indent=2)
    with open(os.path.join(model, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    checkpoint = {  # the keys nnUNetTrainer.save_checkpoint writes
        "network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None, "logging": {},
        "_best_ema": None, "current_epoch": 0,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}
    torch.save(checkpoint, os.path.join(model, "fold_0", "checkpoint_final.pth"))

    # The demo input: a 96 x 112 x 96 crop (x, y, z) around the brain's centre, z-scored.
    centre = np.round(np.argwhere(brain).mean(axis=0)).astype(int)
    size = np.array([96, 112, 96])
    lo = np.clip(centre - size // 2, 0, np.array(data.shape) - size)
    crop = data[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]]
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ lo + image.affine[:3, 3]
    out = nib.Nifti1Image(zscore(crop), affine)
    out.header.set_qform(affine, code=1)
    out.header.set_sform(affine, code=1)
    nib.save(out, os.path.join(work, "input.nii.gz"))
    print(f"demo: nnU-Net plans for {DATASET_NAME}: 3d_fullres patch {cfg['patch_size']}, spacing {cfg['spacing']}, "
          f"{arch['arch_kwargs']['n_stages']} stages, features {arch['arch_kwargs']['features_per_stage']}")
    print(f"demo: saved the model folder {model} (random weights) and the input crop "
          f"{os.path.join(work, 'input.nii.gz')} {tuple(int(s) for s in size)} (x, y, z) at {tuple(int(v) for v in lo)}")


def load_reference_network(model):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    ckpt = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    with open(os.path.join(model, "plans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(model, "dataset.json")) as f:
        dataset_json = json.load(f)
    arch = plans["configurations"][ckpt["init_args"]["configuration"]]["architecture"]
    n_in = len(dataset_json["channel_names"])
    n_out = len(dataset_json["labels"])
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 input_channels=n_in, output_channels=n_out, deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])
    net.eval()
    stride = np.prod(np.array(arch["arch_kwargs"]["strides"]), axis=0)
    return net, stride


def compare(args):
    import torch
    torch.set_num_threads(args.threads)
    net, stride = load_reference_network(args.model)
    x = np.asarray(nib.load(args.input).dataobj, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    x = np.ascontiguousarray(x.transpose(3, 2, 1, 0))  # [C, z, y, x] = i3rt's [C, D, H, W]
    spatial = np.array(x.shape[1:])
    padded = (spatial + stride - 1) // stride * stride
    xp = np.zeros((x.shape[0], *padded), dtype=np.float32)
    xp[:, :spatial[0], :spatial[1], :spatial[2]] = x
    inp = torch.from_numpy(xp)[None]
    times = []
    with torch.no_grad():
        ref = net(inp)  # warm-up
        for _ in range(args.runs):
            t = time.perf_counter()
            ref = net(inp)
            times.append(time.perf_counter() - t)
    ref = ref[0, :, :spatial[0], :spatial[1], :spatial[2]].numpy()

    got = np.asarray(nib.load(args.i3rt_output).dataobj, dtype=np.float32)
    if got.ndim == 3:
        got = got[..., None]
    got = got.transpose(3, 2, 1, 0)
    if got.shape != ref.shape:
        sys.exit(f"demo: i3rt output {args.i3rt_output} has shape {got.shape} [C, z, y, x], PyTorch {ref.shape}")
    err = np.abs(got.astype(np.float64) - ref)
    max_abs = float(err.max())
    rel = max_abs / float(np.abs(ref).max())
    agree = float((got.argmax(0) == ref.argmax(0)).mean())
    t_torch = statistics.median(times)
    print(f"compare     i3rt vs PyTorch {torch.__version__} logits {list(ref.shape)}: max abs err {max_abs:.3g}, "
          f"max rel err {rel:.3g} (max abs err / max |logit|), argmax agreement {100 * agree:.4f} %")
    line = f"timing      PyTorch forward {t_torch:.3f} s (median of {args.runs}, {args.threads} threads, padded input " \
           f"{[int(v) for v in padded]})"
    if args.i3rt_seconds:
        line += f"; i3rt forward {args.i3rt_seconds:.3f} s: PyTorch / i3rt = {t_torch / args.i3rt_seconds:.2f}x"
    print(line)
    if not rel <= 1e-4:
        sys.exit(f"demo: relative error {rel:.3g} is above the 1e-4 tolerance")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--work", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--model", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--i3rt-output", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--i3rt-seconds", type=float, default=0.0)
    args = ap.parse_args()
    if args.cmd == "make-model":
        make_model(args.work)
    else:
        compare(args)


if __name__ == "__main__":
    main()
