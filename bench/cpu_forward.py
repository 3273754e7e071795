#!/usr/bin/env python3
"""CPU forward benchmark: i3rt against PyTorch on nnU-Net's default 3d_fullres PlainConvUNet.

    python bench/cpu_forward.py --build build [--sizes 64 96 128] [--threads 2] [--runs 3]

The network is nnU-Net v2's default 3d_fullres PlainConvUNet: 6 stages, features 32 64 128 256 320 320,
3x3x3 kernels, strides 1 2 2 2 2 2, 2 convs per stage (encoder and decoder), conv bias, instance norm
(affine, eps 1e-5), LeakyReLU 0.01; 1 input channel, 2 classes. It is built by
dynamic_network_architectures (through nnunetv2's get_network_from_plans) with random weights, saved as
an nnU-Net model folder (plans.json, dataset.json, fold_0/checkpoint_final.pth) and converted by
tools/convert_pt/convert_nnunet.py; i3rt runs the converted file (build/bench/bench_forward), PyTorch
the same network object (torch.set_num_threads(threads), eval, no_grad, fp32). Each side: one
warm-up, then the median of --runs timed forwards on a [1, 1, s, s, s] input. Both run in this same
process sequence on this machine, one after the other, so they see the same conditions. Prints a table
and the ratio PyTorch time / i3rt time (> 1: i3rt is faster). Also checks once, at the smallest size,
that both give the same logits (max abs error / max |logit| <= 1e-4).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERTER = os.path.join(ROOT, "tools", "convert_pt", "convert_nnunet.py")

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
        "n_conv_per_stage": [2] * 6,
        "n_conv_per_stage_decoder": [2] * 5,
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

DATASET = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "foreground": 1}, "numTraining": 1,
           "file_ending": ".nii.gz"}


def plans():
    fullres = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": [128, 128, 128], "median_image_size_in_voxels": [160, 160, 160], "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": ARCH, "batch_dice": False}
    return {"dataset_name": "Dataset998_Bench", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": [160, 160, 160], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": fullres}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                "percentile_99_5": 1.0, "std": 1.0}}}


def build_network():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    torch.manual_seed(0)
    return get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                  input_channels=1, output_channels=2, deep_supervision=True)


def save_and_convert(net, work):
    model = os.path.join(work, "nnunet_model")
    os.makedirs(os.path.join(model, "fold_0"), exist_ok=True)
    p = plans()
    with open(os.path.join(model, "plans.json"), "w") as f:
        json.dump(p, f, indent=2)
    with open(os.path.join(model, "dataset.json"), "w") as f:
        json.dump(DATASET, f, indent=2)
    torch.save({"network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
                "logging": {}, "_best_ema": None, "current_epoch": 0,
                "init_args": {"plans": p, "configuration": "3d_fullres", "fold": 0, "dataset_json": DATASET,
                              "device": torch.device("cpu")},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
               os.path.join(model, "fold_0", "checkpoint_final.pth"))
    subprocess.run([sys.executable, CONVERTER, model, "--out", os.path.join(work, "i3rt")], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(work, "i3rt", "fold_0.safetensors")


def time_torch(net, size, runs):
    x = torch.rand(1, 1, size, size, size) * 2 - 1
    times = []
    with torch.no_grad():
        net(x)  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_i3rt(bench, weights, size, threads, runs):
    r = subprocess.run([bench, weights, str(size), str(size), str(size), "--threads", str(threads), "--runs",
                        str(runs)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench_forward failed at {size}^3:\n{r.stderr}")
    fields = r.stdout.split()
    return float(fields[fields.index("median") + 1]), float(fields[fields.index("peak") + 1])


def check_same_logits(net, weights, work, build, size):
    """i3rt forward on a small NIfTI through the CLI vs PyTorch: the benchmark times the right network."""
    import nibabel as nib
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size, size)).astype(np.float32)  # x, y, z
    nib.save(nib.Nifti1Image(x, np.eye(4)), os.path.join(work, "check_in.nii.gz"))
    out = os.path.join(work, "check_out.nii.gz")
    subprocess.run([os.path.join(build, "i3rt"), "forward", weights, os.path.join(work, "check_in.nii.gz"), out,
                    "--threads", "2"], check=True, stdout=subprocess.DEVNULL)
    got = np.asarray(nib.load(out).dataobj).transpose(3, 2, 1, 0)
    with torch.no_grad():
        ref = net(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 1, 0)))[None, None])[0].numpy()
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"check: i3rt vs PyTorch logits at {size}^3: max abs err / max |logit| = {rel:.3g}")
    if not rel <= 1e-4:
        sys.exit("check failed: the benchmarked networks differ")


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="CMake build folder (with bench/)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for the model files (default: a temporary one)")
    args = ap.parse_args()
    bench = os.path.join(args.build, "bench", "bench_forward")
    if not os.access(bench, os.X_OK):
        sys.exit(f"{bench} not found: build first (cmake -S . -B {args.build} -G Ninja && ninja -C {args.build})")

    torch.set_num_threads(args.threads)
    work = args.work or tempfile.mkdtemp(prefix="i3rt_bench_")
    os.makedirs(work, exist_ok=True)
    net = build_network()
    weights = save_and_convert(net, work)
    net.decoder.deep_supervision = False
    net.eval()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; PyTorch {torch.__version__}; "
          f"{args.threads} threads each; median of {args.runs} after 1 warm-up")
    print("network: nnU-Net default 3d_fullres PlainConvUNet, 6 stages, features 32-320, "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, 1 -> 2 channels")
    print("load average (1, 5, 15 min) before: %.1f %.1f %.1f (more than the thread count: the timings are "
          "contended)" % os.getloadavg())
    check_same_logits(net, weights, work, args.build, min(args.sizes))
    print(f"{'size':>8} {'PyTorch s':>10} {'i3rt s':>8} {'PyTorch/i3rt':>13} {'i3rt peak MiB':>14}")
    for s in args.sizes:
        t_i3rt, peak = time_i3rt(bench, weights, s, args.threads, args.runs)
        t_torch = time_torch(net, s, args.runs)
        print(f"{str(s) + '^3':>8} {t_torch:>10.3f} {t_i3rt:>8.3f} {t_torch / t_i3rt:>12.2f}x {peak:>14.1f}", flush=True)
    print("load average after: %.1f %.1f %.1f" % os.getloadavg())


if __name__ == "__main__":
    main()
