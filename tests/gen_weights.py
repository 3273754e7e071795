#!/usr/bin/env python3
"""Fixture for tests/test_weights.c: a tiny nnU-Net v2 model folder converted by convert_nnunet.py.

Writes into --out:
  nnunet_model/       dataset.json, plans.json, fold_0/checkpoint_final.pth: a 3-stage 3D PlainConvUNet
                      (2 input channels, 3 labels, deep supervision on, as trained) with random weights,
                      saved the way nnUNetTrainer.save_checkpoint does
  model_f32/ model_f16/ model_bf16/   fold_0.safetensors from convert_nnunet.py --dtype f32|f16|bf16
  model_cloned/       the same checkpoint re-saved with every tensor cloned (no shared storage), converted:
                      alias detection must then work by value; the test needs nothing from it but
                      this script checks it equals model_f32
  reference.safetensors  the canonical tensors written by the safetensors library directly, named from
                      the module structure (named_parameters) minus decoder.seg_layers.0, independent of
                      the converter's alias logic
It also checks that the converter fails with a message naming the missing folder/file.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERTER = os.path.join(ROOT, "tools", "convert_pt", "convert_nnunet.py")

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}

PLANS = {
    "dataset_name": "Dataset999_Tiny",
    "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [3.0, 1.0, 1.0],
    "original_median_shape_after_transp": [16, 32, 32],
    "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {
        "3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": [8, 16, 16],
            "median_image_size_in_voxels": [16, 32, 32],
            "spacing": [3.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"],
            "use_mask_for_norm": [False, False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": ARCH,
            "batch_dice": False,
        },
        "3d_lowres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres"},
    },
    "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        c: {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0,
            "std": 1.0} for c in ("0", "1")},
}

DATASET = {
    "channel_names": {"0": "T2", "1": "ADC"},
    "labels": {"background": 0, "zone_a": 1, "zone_b": 2},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}


def build_network():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    torch.manual_seed(0)
    net = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                 input_channels=2, output_channels=3, deep_supervision=True)
    with torch.no_grad():  # affine norm params are 1/0 after init: make every tensor distinctive
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net


def save_model_folder(folder, net, clone=False):
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    with open(os.path.join(folder, "plans.json"), "w") as f:
        json.dump(PLANS, f, indent=4)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(DATASET, f, indent=4)
    weights = net.state_dict()
    if clone:
        weights = {k: v.clone() for k, v in weights.items()}
    checkpoint = {  # the keys nnUNetTrainer.save_checkpoint writes
        "network_weights": weights,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1000,
        "init_args": {"plans": PLANS, "configuration": "3d_fullres", "fold": 0, "dataset_json": DATASET,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, os.path.join(folder, "fold_0", "checkpoint_final.pth"))


def run_converter(*args, expect_ok=True):
    r = subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)
    print(r.stdout, end="")
    if expect_ok and r.returncode != 0:
        sys.exit(f"convert_nnunet.py {' '.join(args)} failed:\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    net = build_network()
    model = os.path.join(out, "nnunet_model")
    save_model_folder(model, net)
    for dtype in ("f32", "f16", "bf16"):
        run_converter(model, "--out", os.path.join(out, f"model_{dtype}"), "--dtype", dtype)

    cloned = os.path.join(out, "nnunet_model_cloned")
    save_model_folder(cloned, net, clone=True)
    run_converter(cloned, "--out", os.path.join(out, "model_cloned"), "--folds", "0")
    a = load_file(os.path.join(out, "model_f32", "fold_0.safetensors"))
    b = load_file(os.path.join(out, "model_cloned", "fold_0.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "cloned checkpoint converts differently"

    reference = {k: v.detach().clone() for k, v in net.named_parameters()
                 if not k.startswith("decoder.seg_layers.0.")}
    save_file(reference, os.path.join(out, "reference.safetensors"))
    print(f"reference: {len(reference)} tensors")

    for bad_args, must_name in (([os.path.join(out, "no_such_model")], "no_such_model: model folder not found"),
                                ([out], "plans.json: plans.json not found"),
                                ([model, "--folds", "7"], os.path.join("fold_7", "checkpoint_final.pth"))):
        r = run_converter(*bad_args, "--out", os.path.join(out, "unused"), expect_ok=False)
        if r.returncode == 0 or must_name not in r.stderr or "Traceback" in r.stderr:
            sys.exit(f"converter on {bad_args}: expected a clear error naming {must_name!r}, got rc {r.returncode}:\n"
                     f"{r.stderr}")


if __name__ == "__main__":
    main()
