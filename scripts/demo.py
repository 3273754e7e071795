#!/usr/bin/env python3
"""The Python side of scripts/demo.sh (reference only: i3rt itself runs without Python).

    demo.py make-input --out IN.nii.gz
        Writes a 96 x 112 x 96 crop (x, y, z) of the Colin27 T1 (mricron-data's ch2bet.nii.gz) around the
        brain's centre, z-scored over the brain (nnU-Net's ZScoreNormalization with use_mask_for_norm), with
        the crop's world position in qform and sform.

    demo.py compare --model MODELDIR --input IN.nii.gz --i3rt-output OUT.nii.gz [--threads 2]
                    [--i3rt-seconds S] [--runs 3]
        Runs the same forward in PyTorch on MODELDIR/fold_0/checkpoint_final.pth (the network built by
        dynamic_network_architectures from the model's plans; same zero padding to the total stride, crop
        back), prints the max abs and relative error of i3rt's logits against it and both timings. Fails
        (exit 1) if the relative error is above 1e-4.

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

CH2_BRAIN = "/usr/share/mricron/templates/ch2bet.nii.gz"


def make_input(out_path):
    image = nib.load(CH2_BRAIN)
    data = np.asarray(image.dataobj, dtype=np.float32)
    brain = data > 0
    centre = np.round(np.argwhere(brain).mean(axis=0)).astype(int)
    size = np.array([96, 112, 96])
    lo = np.clip(centre - size // 2, 0, np.array(data.shape) - size)
    crop = data[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]]
    mask = crop > 0
    z = np.where(mask, (crop - crop[mask].mean()) / max(crop[mask].std(), 1e-8), 0).astype(np.float32)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ lo + image.affine[:3, 3]
    out = nib.Nifti1Image(z, affine)
    out.header.set_qform(affine, code=1)
    out.header.set_sform(affine, code=1)
    nib.save(out, out_path)
    print(f"demo: {out_path}: {tuple(int(s) for s in size)} (x, y, z) crop of {CH2_BRAIN} at "
          f"{tuple(int(v) for v in lo)}, z-scored over the brain")


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
    m = sub.add_parser("make-input")
    m.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--model", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--i3rt-output", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--i3rt-seconds", type=float, default=0.0)
    args = ap.parse_args()
    if args.cmd == "make-input":
        make_input(args.out)
    else:
        compare(args)


if __name__ == "__main__":
    main()
