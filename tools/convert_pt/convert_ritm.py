#!/usr/bin/env python3
"""Converts a RITM HRNet-18 interactive-segmentation checkpoint into an i3rt weight file.

    convert_ritm.py CHECKPOINT.pth --out FILE.safetensors [--acs] [--guided] [--dtype f32|f16|bf16]

CHECKPOINT is what RITM's isegm/utils/misc.py:save_checkpoint writes: torch.save({'state_dict':
net.state_dict(), 'config': net._config}) for an isegm HRNetModel (width 18). Tensor names stay the
state-dict keys (maps_transform.*, feature_extractor.*); batch-norm tensors are kept as they are (i3rt folds
them into the preceding convolution when it loads the file); `num_batches_tracked` counters are dropped.
--acs records that the 2D weights are to be run as ACS convolutions on 3D volumes (metadata "acs": "1").
A checkpoint of Slice-and-Conquer's guided 3D model (tools/snc_models.py GuidedHRNetModel: mask_attention.*
tensors, maps_transform.0 taking 5 channels) is recognized by its tensors and needs --acs (--guided: the same,
and refuse a checkpoint that is not one); it gets
network "snc_guided": true and "mask_attention_hidden", and its training-only attention head
(mask_attention.head.*, the L_attn prediction) is dropped.
Format: docs/weights-format.md.
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from i3rt_format import (ConversionError, drop_aliases, load_torch_checkpoint, network_json, run_main,  # noqa: E402
                         write_weights)

FE = "feature_extractor."


def state_dict_and_config(ckpt, path):
    if isinstance(ckpt, (list, tuple)):
        raise ConversionError(f"{path}: a list of per-click models; convert one model at a time")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConversionError(f"{path}: not a RITM checkpoint (expected a dict with 'state_dict' and 'config')")
    return ckpt["state_dict"], ckpt.get("config") or {}


def config_params(config):
    """{'class': ..., 'params': {name: {'type', 'value', 'specified'}}} -> {name: value} (JSON-safe)."""
    params = config.get("params", {}) if isinstance(config, dict) else {}
    out = {}
    for name, entry in params.items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[name] = value
    return out


def describe_hrnet(state, path):
    """Reads the architecture off the tensor shapes, and refuses anything but an HRNet-18 RITM model."""
    def shape(key):
        if key not in state:
            raise ConversionError(f"{path}: tensor {key} missing: not a RITM HRNet checkpoint")
        return tuple(state[key].shape)

    coord_channels = shape("maps_transform.0.weight")[1]
    guided = "mask_attention.fc1.weight" in state
    width = shape(FE + "transition1.0.0.weight")[0]
    if width != 18:
        raise ConversionError(f"{path}: HRNet width {width} (tensor {FE}transition1.0.0.weight); only HRNet-18 "
                              f"is supported")
    ocr_mid = shape(FE + "conv3x3_ocr.0.weight")[0]
    ocr_key = shape(FE + "ocr_distri_head.object_context_block.f_down.0.weight")[0]
    blocks = 1 + max(int(m.group(1)) for k in state
                     if (m := re.match(re.escape(FE) + r"stage2\.0\.branches\.0\.(\d+)\.", k)))
    arch = {"width": width, "ocr_width": ocr_key, "ocr_mid_channels": ocr_mid, "small": blocks == 2,
            "coord_channels": coord_channels, "with_prev_mask": coord_channels == 3 + 2 * guided}
    if guided:
        hidden, pooled = shape("mask_attention.fc1.weight")
        if coord_channels != 5 or pooled != 2 * 15 * width or shape("mask_attention.fc2.weight") != (15 * width, hidden):
            raise ConversionError(f"{path}: a guided 3D model needs maps_transform.0 with 5 input channels and "
                                  f"mask_attention.fc1/fc2 of [{hidden}, {2 * 15 * width}] / [{15 * width}, {hidden}]; "
                                  f"got {coord_channels}, {(hidden, pooled)}, {shape('mask_attention.fc2.weight')}")
        arch.update(snc_guided=True, mask_attention_hidden=hidden)
    return arch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="RITM .pth (torch.save dict with state_dict and config)")
    ap.add_argument("--out", required=True, help="output .safetensors file")
    ap.add_argument("--acs", action="store_true", help="mark the weights for ACS convolution on 3D volumes")
    ap.add_argument("--guided", action="store_true",
                    help="the checkpoint must be Slice-and-Conquer's guided 3D model (implies --acs)")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32", help="storage type of the weights")
    args = ap.parse_args(argv)
    args.acs = args.acs or args.guided

    ckpt = load_torch_checkpoint(args.checkpoint)
    state, config = state_dict_and_config(ckpt, args.checkpoint)
    print(f"{args.checkpoint}:")
    counters = [k for k in state if k.endswith(".num_batches_tracked")]
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    print(f"  dropped {len(counters)} num_batches_tracked counters")
    try:
        tensors = drop_aliases(state, lambda name, keys: [])  # RITM has no aliases: this checks for shared memory
    except ConversionError as e:
        raise ConversionError(f"{args.checkpoint}: {e}") from e
    arch = describe_hrnet(tensors, args.checkpoint)
    if args.guided and not arch.get("snc_guided"):
        raise ConversionError(f"{args.checkpoint}: --guided, but no mask_attention.* tensors: not a guided 3D model")
    if arch.get("snc_guided"):
        if not args.acs:
            raise ConversionError(f"{args.checkpoint}: a guided 3D model (mask_attention.* tensors) runs on volumes: "
                                  f"convert it with --acs")
        head = [k for k in tensors if k.startswith("mask_attention.head.")]
        tensors = {k: v for k, v in tensors.items() if k not in head}
        print(f"  guided 3D model: dropped the training-only attention head ({len(head)} tensors)")
    kwargs = config_params(config)
    network = network_json("RITM-HRNet18", 2, 3, 1, **arch, arch_kwargs=kwargs)
    metadata = {
        "network": network,
        "acs": "1" if args.acs else "0",
        "ritm_class": str(config.get("class", "")) if isinstance(config, dict) else "",
        "source": args.checkpoint,
    }
    write_weights(args.out, tensors, metadata, args.dtype)
    n_params = sum(t.numel() for t in tensors.values())
    print(f"  wrote {args.out}: {len(tensors)} tensors, {n_params} values, {args.dtype}, acs {metadata['acs']}")


if __name__ == "__main__":
    run_main(main)
