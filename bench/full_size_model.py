#!/usr/bin/env python3
"""A full-size nnU-Net 3d_fullres model folder with random weights, for time and memory at real network size.

    bench/full_size_model.py --like weights/brain_3d_fullres --out DIR [--patch 128 128 128] [--spacing 1 1 1]

The committed models are small (widths 8..64, 40 x 48 x 40 patches) so that they train on a CPU; on a GPU
both i3rt and nnUNetPredictor then spend their memory on the CUDA context and little else. This takes the
--like folder's plans and dataset.json (normalization, transpose, labels, resampling) and gives its 3d_fullres
configuration the network nnU-Net's planner picks for an isotropic 128^3 patch: PlainConvUNet, 6 stages,
widths 32, 64, 128, 256, 320, 320, 3x3x3 kernels, strides 1 then 2, two convs per stage; the target spacing
is --spacing (1 mm: Colin27's own, so the case is not resampled). The network is built and randomized as
tests/gen_unet.py does (nnUNetTrainer.build_network_architecture, fixed seed), saved as a trained-model
folder (plans.json, dataset.json, fold_0/checkpoint_final.pth, for nnUNetPredictor) and converted by
tools/convert_pt/convert_nnunet.py (fold_0.safetensors, for i3rt). Its outputs mean nothing; bench/
predict_vs_nnunet.py on it compares wall time, memory and the agreement of the two segmentations.
"""
import argparse
import copy
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from gen_unet import build_network, save_model_folder  # noqa: E402  (one way to build and save a model)

CONFIGURATION = "3d_fullres"


def full_size_plans(plans, patch, spacing):
    plans = copy.deepcopy(plans)
    cfg = plans["configurations"][CONFIGURATION]
    stages = 6
    cfg["patch_size"] = list(patch)
    cfg["spacing"] = list(spacing)
    cfg["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    cfg["architecture"]["arch_kwargs"].update(
        n_stages=stages, features_per_stage=[32, 64, 128, 256, 320, 320], kernel_sizes=[[3, 3, 3]] * stages,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (stages - 1), n_conv_per_stage=[2] * stages,
        n_conv_per_stage_decoder=[2] * (stages - 1))
    return plans


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--like", required=True, help="a model folder whose plans.json and dataset.json to start from")
    ap.add_argument("--out", required=True, help="the model folder to write (replaced if it exists)")
    ap.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128))
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    args = ap.parse_args()
    if any(p % 32 for p in args.patch):
        ap.error("--patch: each side must be a multiple of 32 (five stride-2 stages)")
    with open(os.path.join(args.like, "plans.json")) as f:
        plans = full_size_plans(json.load(f), args.patch, args.spacing)
    with open(os.path.join(args.like, "dataset.json")) as f:
        dataset_json = json.load(f)
    net, _ = build_network(plans, CONFIGURATION, dataset_json, seed=27)
    shutil.rmtree(args.out, ignore_errors=True)
    save_model_folder(args.out, plans, dataset_json, CONFIGURATION, net)
    sys.path.insert(0, os.path.join(ROOT, "tools", "convert_pt"))
    import convert_nnunet

    convert_nnunet.main([args.out, "--out", args.out, "--folds", "0"])
    n_params = sum(p.numel() for p in net.parameters())
    print(f"{args.out}: PlainConvUNet widths 32..320, patch {list(args.patch)}, spacing {list(args.spacing)}, "
          f"{n_params / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
