#!/usr/bin/env python3
"""Fixtures for tests/test_unet.c: nnU-Net v2 U-Nets planned by nnunetv2 itself, run by PyTorch.

Steps (all through nnunetv2's own Python API, in a temporary nnUNet_raw / _preprocessed / _results tree):
  1. a synthetic raw dataset: 5 CT-like cases of a noisy two-label ellipsoid phantom, about 22 x 64 x 64
     voxels at an anisotropic 3.0 x 0.8 x 0.8 mm spacing (so the planners choose 1x3x3 kernels and
     (1, 2, 2) strides for the first stages);
  2. the dataset fingerprint (DatasetFingerprintExtractor), then ExperimentPlanner (nnUNetPlans:
     PlainConvUNet) and nnUNetPlannerResEncM (nnUNetResEncUNetMPlans: ResidualEncoderUNet);
  3. changes to the plans, for CI speed and fixture size (stages, kernels, strides, convs and blocks stay
     the planners'):
     - patch_size shrunk to a small multiple of the total stride (3 x in the first in-plane axis, 2 x
       elsewhere, so no two axes are alike);
     - features_per_stage divided by 4, except plain_3d which keeps the planner's widths (32..320);
     - ResidualEncoderUNet: the last stage keeps the previous stage's width (as nnU-Net's 320 / 512 cap
       does in deeper plans), so BasicBlockD's pooled skip without a projection conv is exercised;
     - plain_2d_relu: ReLU, instance norm without affine and eps 1e-3, no conv bias; resenc_2d_stem:
       LeakyReLU slope 0.1 and stem_channels 12 != features[0] (a projection skip without pooling);
  4. the network built by nnUNetTrainer.build_network_architecture (as training and nnUNetPredictor do),
     every parameter randomized with a fixed seed (conv weights by nnU-Net's He init, norm gamma in
     [0.5, 1.5], norm beta and all biases N(0, 0.2)), saved as a trained-model folder (dataset.json,
     plans.json, fold_0/checkpoint_final.pth laid out as nnUNetTrainer.save_checkpoint writes it);
  5. converted with tools/convert_pt/convert_nnunet.py, and the eval forward (fp32, 2 threads) on random
     inputs of two sizes.

Writes into --out, for NAME in plain_2d, plain_3d, resenc_2d, resenc_3d, plain_2d_relu, resenc_2d_stem:
  NAME.safetensors     the converted weights (i3rt-weights-1)
  NAME_io.safetensors  "input" [1, C, d, h, w] and "logits" [1, K, d, h, w] (2D: d = 1) on the patch size,
                       "input_b" and "logits_b" on the total stride times (2, .., 2, 3)
plain_2d_scalar.safetensors: plain_2d's tensors with network metadata that gives kernel_sizes, strides,
n_conv_per_stage(_decoder) as plain ints / one int per stage (the forms dynamic_network_architectures
accepts besides lists; same network, so plain_2d_io applies), and bad inputs derived from
plain_2d.safetensors (test_unet.c checks status and message):
  bad_shape      decoder.stages.0.convs.0.conv.weight transposed (dims 0 and 1 swapped)
  bad_missing    encoder.stages.1.0.convs.1.norm.weight removed
  bad_extra      a deep-supervision head decoder.seg_layers.0.weight added
  bad_norm       network metadata with norm_op BatchNorm2d
  bad_class      network metadata with class UNetPlusPlus
  bad_dropout    network metadata with dropout_op Dropout2d
  bad_nonlin     network metadata with nonlin GELU
  bad_nonlin_first  network metadata with nonlin_first true (conv -> nonlin -> norm)
  bad_conv_op    network metadata with conv_op Conv3d for dims 2
  bad_lengths    network metadata whose features_per_stage misses its last entry
  bad_n_stages   network metadata with n_stages 13 (more than I3_MAX_STAGES)
  bad_json       network metadata that is not JSON
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET_ID, DATASET_NAME = 987, "Dataset987_Phantom"
LABELS = {"background": 0, "organ": 1, "core": 2}
SPACING_ZYX = (3.0, 0.8, 0.8)

# fixture name -> (planner, plans identifier, configuration, features divisor, arch_kwargs changes)
NETWORKS = {
    "plain_2d": ("ExperimentPlanner", "nnUNetPlans", "2d", 4, {}),
    "plain_3d": ("ExperimentPlanner", "nnUNetPlans", "3d_fullres", 1, {}),
    "resenc_2d": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans", "2d", 4, {}),
    "resenc_3d": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans", "3d_fullres", 4, {}),
    # the options nnU-Net's planners never choose but the classes accept
    "plain_2d_relu": ("ExperimentPlanner", "nnUNetPlans", "2d", 4,
                      {"nonlin": "torch.nn.ReLU", "nonlin_kwargs": {"inplace": True}, "conv_bias": False,
                       "norm_op_kwargs": {"eps": 1e-3, "affine": False}}),
    "resenc_2d_stem": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans", "2d", 4,
                       {"nonlin_kwargs": {"negative_slope": 0.1, "inplace": True}, "stem_channels": 12}),
}


def write_raw_dataset(raw_root):
    import numpy as np
    import SimpleITK as sitk

    folder = os.path.join(raw_root, DATASET_NAME)
    os.makedirs(os.path.join(folder, "imagesTr"))
    os.makedirs(os.path.join(folder, "labelsTr"))
    rng = np.random.default_rng(0)
    n_cases = 5
    for i in range(n_cases):
        shape = (20 + i % 3, 64, 64)
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        r = ((z - 0.1 * i) / 0.8) ** 2 + (y / 0.6) ** 2 + (x / 0.5) ** 2
        label = (r < 1).astype(np.uint8) + (r < 0.3)
        image = (label * 200.0 - 100.0 + rng.normal(0, 30, shape)).astype(np.float32)
        for array, path in ((image, f"imagesTr/ph_{i:03d}_0000.nii.gz"), (label, f"labelsTr/ph_{i:03d}.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(SPACING_ZYX[::-1])  # SimpleITK spacing is (x, y, z)
            sitk.WriteImage(itk, os.path.join(folder, path))
    dataset_json = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": n_cases, "file_ending": ".nii.gz"}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    return dataset_json


def plan(preprocessed_root):
    """Fingerprint + both planners; returns {plans identifier: plans dict}."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([DATASET_ID], num_processes=1, verbose=False, show_progress_bar=False)
    plans = {}
    for planner in sorted({n[0] for n in NETWORKS.values()}):
        identifier = plan_experiments([DATASET_ID], planner)
        with open(os.path.join(preprocessed_root, DATASET_NAME, identifier + ".json")) as f:
            plans[identifier] = json.load(f)
    return plans


def shrink(plans, configuration, divisor, changes):
    """The changes to the planners' configuration listed in the module doc; returns the new patch size
    and the total stride."""
    cfg = plans["configurations"][configuration]
    arch = cfg["architecture"]
    arch["arch_kwargs"].update(changes)
    features = [f // divisor for f in arch["arch_kwargs"]["features_per_stage"]]
    if arch["network_class_name"].endswith("ResidualEncoderUNet"):
        features[-1] = features[-2]
    arch["arch_kwargs"]["features_per_stage"] = features
    strides = arch["arch_kwargs"]["strides"]
    dims = len(cfg["patch_size"])
    total = [1] * dims
    for s in strides:
        total = [t * si for t, si in zip(total, s if isinstance(s, list) else [s] * dims)]
    factor = [2] * len(total)
    factor[-2] = 3
    cfg["patch_size"] = [t * f for t, f in zip(total, factor)]
    return cfg["patch_size"], total


def build_network(plans, configuration, dataset_json, seed):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    torch.manual_seed(seed)
    net = nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, enable_deep_supervision=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 1 and ".norm." in name and name.endswith(".weight"):
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1:
                p.normal_(0.0, 0.2)
    return net.eval(), n_in


def save_model_folder(folder, plans, dataset_json, configuration, net):
    import torch

    os.makedirs(os.path.join(folder, "fold_0"))
    with open(os.path.join(folder, "plans.json"), "w") as f:
        json.dump(plans, f, indent=2)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dims = len(PlansManager(plans).get_configuration(configuration).patch_size)  # inherits_from resolved
    checkpoint = {  # the keys of nnUNetTrainer.save_checkpoint
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1000,
        "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": tuple(range(dims)),
    }
    torch.save(checkpoint, os.path.join(folder, "fold_0", "checkpoint_final.pth"))


def convert(model_folder, dest):
    sys.path.insert(0, os.path.join(ROOT, "tools", "convert_pt"))
    import convert_nnunet

    tmp = tempfile.mkdtemp(prefix="i3rt_unet_conv_")
    convert_nnunet.main([model_folder, "--out", tmp, "--folds", "0"])
    shutil.move(os.path.join(tmp, "fold_0.safetensors"), dest)
    shutil.rmtree(tmp)


def write_variants(out):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = os.path.join(out, "plain_2d.safetensors")
    with safe_open(src, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    network = json.loads(metadata["network"])

    def write(name, tensors=tensors, network=network):
        text = network if isinstance(network, str) else json.dumps(network)
        save_file(tensors, os.path.join(out, name + ".safetensors"), metadata={**metadata, "network": text})

    def with_kwargs(**changes):
        return {**network, "arch_kwargs": {**network["arch_kwargs"], **changes}}

    kw = network["arch_kwargs"]
    assert all(k == [3, 3] for k in kw["kernel_sizes"]) and len(set(kw["n_conv_per_stage"])) == 1
    write("plain_2d_scalar", network=with_kwargs(kernel_sizes=3, strides=[s[0] for s in kw["strides"]],
                                                  n_conv_per_stage=kw["n_conv_per_stage"][0],
                                                  n_conv_per_stage_decoder=kw["n_conv_per_stage_decoder"][0]))
    transposed = "decoder.stages.0.convs.0.conv.weight"
    write("bad_shape", {**tensors, transposed: tensors[transposed].transpose(0, 1).contiguous()})
    write("bad_missing", {k: v for k, v in tensors.items() if k != "encoder.stages.1.0.convs.1.norm.weight"})
    write("bad_extra", {**tensors, "decoder.seg_layers.0.weight": torch.zeros(3, network["arch_kwargs"]
                                                                              ["features_per_stage"][-2], 1, 1)})
    write("bad_norm", network=with_kwargs(norm_op="torch.nn.modules.batchnorm.BatchNorm2d"))
    write("bad_class", network={**network, "class": "UNetPlusPlus"})
    write("bad_dropout", network=with_kwargs(dropout_op="torch.nn.modules.dropout.Dropout2d",
                                             dropout_op_kwargs={"p": 0.2}))
    write("bad_nonlin", network=with_kwargs(nonlin="torch.nn.GELU", nonlin_kwargs={}))
    write("bad_nonlin_first", network=with_kwargs(nonlin_first=True))
    write("bad_conv_op", network=with_kwargs(conv_op="torch.nn.modules.conv.Conv3d"))
    write("bad_lengths", network=with_kwargs(features_per_stage=kw["features_per_stage"][:-1]))
    write("bad_n_stages", network=with_kwargs(n_stages=13))
    write("bad_json", network=json.dumps(network)[:-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="i3rt_unet_")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # read when nnunetv2 is imported
        os.environ[var] = os.path.join(work, var)
        os.makedirs(os.environ[var])
    try:
        import torch
        from safetensors.torch import save_file

        torch.set_num_threads(2)
        dataset_json = write_raw_dataset(os.environ["nnUNet_raw"])
        all_plans = plan(os.environ["nnUNet_preprocessed"])
        for seed, (name, (_, identifier, configuration, divisor, changes)) in enumerate(NETWORKS.items()):
            plans = json.loads(json.dumps(all_plans[identifier]))
            patch, total_stride = shrink(plans, configuration, divisor, changes)
            net, n_in = build_network(plans, configuration, dataset_json, seed)
            folder = os.path.join(os.environ["nnUNet_results"], DATASET_NAME, name,
                                  f"nnUNetTrainer__{identifier}__{configuration}")
            save_model_folder(folder, plans, dataset_json, configuration, net)
            convert(folder, os.path.join(args.out, name + ".safetensors"))

            # the patch, and a second size (2 x the total stride, the last axis 3 x), so that a rebuild for
            # a new size and W > H are checked too. Not smaller: instance norm over a handful of
            # bottleneck voxels magnifies rounding differences beyond what this test is about.
            second = [2 * t for t in total_stride[:-1]] + [3 * total_stride[-1]]
            io = {}
            for suffix, size in (("", patch), ("_b", second)):
                x = torch.randn(1, n_in, *size, generator=torch.Generator().manual_seed(100 + seed))
                with torch.no_grad():
                    logits = net(x)
                if len(size) == 2:  # i3rt holds 2D as depth 1
                    x, logits = x.unsqueeze(2), logits.unsqueeze(2)
                io["input" + suffix], io["logits" + suffix] = x.contiguous(), logits.contiguous()
            save_file(io, os.path.join(args.out, name + "_io.safetensors"))
            arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
            print(f"{name}: {arch['n_stages']} stages, features {arch['features_per_stage']}, kernels "
                  f"{arch['kernel_sizes']}, strides {arch['strides']}, patch {patch}, "
                  f"max |logit| {logits.abs().max().item():.3g}")
        write_variants(args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"gen_unet: wrote {args.out} in {time.time() - start:.1f} s")


if __name__ == "__main__":  # nnunetv2's fingerprint pool spawns processes that import this module
    main()
