#!/usr/bin/env python3
"""Fixture for tests/test_weights.c: a tiny nnU-Net v2 model folder converted by convert_nnunet.py.

Writes into --out:
  nnunet_model/       dataset.json, plans.json, fold_0/checkpoint_final.pth: a 3-stage 3D PlainConvUNet
                      (2 input channels, 3 labels, deep supervision on, as trained) with random weights,
                      saved the way nnUNetTrainer.save_checkpoint does
  model_f32/ model_f16/ model_bf16/   fold_0.safetensors from convert_nnunet.py --dtype f32|f16|bf16
  model_cloned/       the same checkpoint re-saved with every tensor cloned (no shared storage), converted:
                      alias detection must then work by value; this script checks it equals model_f32
  reference.safetensors  the canonical tensors written by the safetensors library directly, named from
                      the module structure (named_parameters) minus decoder.seg_layers.0, independent of
                      the converter's alias logic
  ritm/hrnet18_acs.safetensors, ritm_reference.safetensors
                      from a synthetic RITM HRNet-18 checkpoint (every key and shape of the real state dict,
                      tests/support/weights_ritm_hrnet18_keys.txt, random values; no real RITM checkpoint is
                      reachable here), its conversion with --acs, and its tensors minus the
                      num_batches_tracked counters written directly
It also checks that the converters refuse bad input with a message naming the folder, file or tensor:
missing folder / plans.json / fold, an `.all_modules.N` tensor that differs from its `.norm` twin, a
region-based dataset whose regions do not match the network's outputs (one with matching regions converts).
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERTER = os.path.join(ROOT, "tools", "convert_pt", "convert_nnunet.py")
sys.path.insert(0, os.path.dirname(CONVERTER))
import convert_nnunet  # noqa: E402
import convert_ritm  # noqa: E402
from i3rt_format import ConversionError  # noqa: E402

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


def save_model_folder(folder, net, clone=False, corrupt=None, labels=None):
    """Writes plans.json, dataset.json and fold_0/checkpoint_final.pth. clone: no shared storage between
    aliases; corrupt: a state-dict key whose tensor is changed; labels: replaces dataset.json's labels."""
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    with open(os.path.join(folder, "plans.json"), "w") as f:
        json.dump(PLANS, f, indent=4)
    order = [int(max(np.atleast_1d(v))) for k, v in (labels or {}).items() if k != "background"]
    dataset = dict(DATASET, **({"labels": labels, "regions_class_order": order} if labels else {}))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset, f, indent=4)
    weights = net.state_dict()
    if clone:
        weights = {k: v.clone() for k, v in weights.items()}
    if corrupt:
        weights[corrupt] = weights[corrupt] + 1
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


RITM_KEYS = os.path.join(ROOT, "tests", "support", "weights_ritm_hrnet18_keys.txt")
RITM_CONFIG = {  # the layout of isegm's serialize() config for models/iter_mask/hrnet18_cocolvis_itermask_3p.py
    "class": "isegm.model.is_hrnet_model.HRNetModel",
    "params": {name: {"type": "builtin", "value": value, "specified": True} for name, value in (
        ("width", 18), ("ocr_width", 64), ("with_aux_output", True), ("use_leaky_relu", True),
        ("use_rgb_conv", False), ("use_disks", True), ("norm_radius", 5), ("with_prev_mask", True))},
}


def synthetic_ritm_state_dict():
    gen = torch.Generator().manual_seed(1)
    state = {}
    with open(RITM_KEYS) as f:
        for line in f:
            name, shape = line.rstrip("\n").split("\t")
            shape = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
            if name.endswith("num_batches_tracked"):
                state[name] = torch.tensor(1000, dtype=torch.int64)
            elif name.endswith("running_var"):
                state[name] = torch.rand(shape, generator=gen) + 0.5
            else:
                state[name] = torch.randn(shape, generator=gen) * 0.1
    return state


def make_ritm(out):
    state = synthetic_ritm_state_dict()
    ckpt = os.path.join(out, "ritm_hrnet18.pth")
    torch.save({"state_dict": state, "config": RITM_CONFIG}, ckpt)
    convert_ritm.main([ckpt, "--out", os.path.join(out, "ritm", "hrnet18_acs.safetensors"), "--acs"])
    reference = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(reference, os.path.join(out, "ritm_reference.safetensors"))
    print(f"ritm reference: {len(reference)} tensors")

    listed = os.path.join(out, "ritm_list.pth")
    torch.save([{"state_dict": {}, "config": RITM_CONFIG}], listed)
    for bad, must_say in ((listed, "list of per-click models"), (os.path.join(out, "nnunet_model", "fold_0",
                                                                             "checkpoint_final.pth"), "not a RITM")):
        try:
            convert_ritm.main([bad, "--out", os.path.join(out, "unused", "x.safetensors")])
        except ConversionError as e:
            if bad not in str(e) or must_say not in str(e):
                sys.exit(f"convert_ritm on {bad}: error {e!r} does not name the file and say {must_say!r}")
            print(f"refused as expected: {e}")
            continue
        sys.exit(f"convert_ritm on {bad}: expected an error")
    for scratch in (ckpt, listed):  # 40 MB the test does not read
        os.unlink(scratch)


def run_converter_cli(*args):
    """The converter as a user runs it; returns the completed process."""
    r = subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True)
    print(r.stdout, end="")
    return r


def expect_conversion_error(args, must_say):
    """In-process (no second torch start-up): the converter must refuse with a message containing must_say."""
    try:
        convert_nnunet.main(args)
    except ConversionError as e:
        if must_say not in str(e):
            sys.exit(f"converter on {args}: error {e!r} does not say {must_say!r}")
        print(f"refused as expected: {e}")
        return
    sys.exit(f"converter on {args}: expected an error saying {must_say!r}, it succeeded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    net = build_network()
    model = os.path.join(out, "nnunet_model")
    save_model_folder(model, net)
    r = run_converter_cli(model, "--out", os.path.join(out, "model_f32"))
    if r.returncode != 0:
        sys.exit(f"convert_nnunet.py failed:\n{r.stderr}")
    for dtype in ("f16", "bf16"):
        convert_nnunet.main([model, "--out", os.path.join(out, f"model_{dtype}"), "--dtype", dtype])

    reference = {k: v.detach().clone() for k, v in net.named_parameters()
                 if not k.startswith("decoder.seg_layers.0.")}
    save_file(reference, os.path.join(out, "reference.safetensors"))
    print(f"reference: {len(reference)} tensors")

    # Aliases without shared storage (a re-saved checkpoint) are recognised by value: same result.
    cloned = os.path.join(out, "nnunet_model_cloned")
    save_model_folder(cloned, net, clone=True)
    convert_nnunet.main([cloned, "--out", os.path.join(out, "model_cloned"), "--folds", "0"])
    a = load_file(os.path.join(out, "model_f32", "fold_0.safetensors"))
    b = load_file(os.path.join(out, "model_cloned", "fold_0.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "cloned checkpoint converts differently"

    # Bad input: clear errors naming the folder, file or tensor.
    r = run_converter_cli(os.path.join(out, "no_such_model"), "--out", os.path.join(out, "unused"))
    if r.returncode == 0 or "no_such_model: model folder not found" not in r.stderr or "Traceback" in r.stderr:
        sys.exit(f"missing model folder: expected a one-line error naming it, got rc {r.returncode}:\n{r.stderr}")
    unused = ["--out", os.path.join(out, "unused")]
    expect_conversion_error([out, *unused], "plans.json not found")
    expect_conversion_error([model, "--folds", "7", *unused], os.path.join("fold_7", "checkpoint_final.pth"))
    bad_alias = os.path.join(out, "nnunet_model_bad_alias")
    save_model_folder(bad_alias, net, clone=True, corrupt="decoder.stages.0.convs.1.all_modules.1.weight")
    expect_conversion_error([bad_alias, *unused], "decoder.stages.0.convs.1.all_modules.1.weight looks like an alias")
    # region-based labels (3 regions: the network's 3 outputs) convert, with one output per region; the same
    # folder with 2 regions does not match the network's 3 outputs
    regions = os.path.join(out, "nnunet_model_regions")
    save_model_folder(regions, net, labels={"background": 0, "whole": [1, 2], "zone_a": 1, "zone_b": 2})
    convert_nnunet.main([regions, "--out", regions])
    with safe_open(os.path.join(regions, "fold_0.safetensors"), "pt") as f:
        network = json.loads(f.metadata()["network"])
    if network["num_classes"] != 3:
        sys.exit(f"region-based model: num_classes {network['num_classes']}, expected 3 (one per region)")
    save_model_folder(regions, net, labels={"background": 0, "whole": [1, 2], "core": 2})
    expect_conversion_error([regions, *unused], "the network in the plans needs")

    make_ritm(out)


if __name__ == "__main__":
    main()
