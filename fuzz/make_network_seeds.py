#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_network into fuzz/corpus/network/ (needs the reference venv: torch and
dynamic_network_architectures).

Tiny but complete networks as tools/convert_pt writes them (the "network" metadata of convert_nnunet.py and
the state dict's tensors, float16 to keep them small): a 2D and a 3D PlainConvUNet and a 2D
ResidualEncoderUNet, two stages of 2 and 4 features. The fuzzer mutates their metadata and tensors into
every way of disagreeing with each other."""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "convert_pt"))
from convert_nnunet import drop_deep_supervision, nnunet_alias_candidates  # noqa: E402
from i3rt_format import drop_aliases, network_json, write_weights  # noqa: E402

OUT = os.path.join(HERE, "corpus", "network")


def arch_kwargs(dims, residual):
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dims}d"
    kwargs = {"n_stages": 2, "features_per_stage": [2, 4], "conv_op": conv, "kernel_sizes": [[3] * dims] * 2,
              "strides": [[1] * dims, [2] * dims], "conv_bias": True, "norm_op": norm,
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if residual:
        kwargs.update(n_blocks_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    else:
        kwargs.update(n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    return kwargs


def instantiate(dims, residual, kwargs):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    from pydoc import locate
    built = dict(kwargs)
    for key in ("conv_op", "norm_op", "nonlin"):
        built[key] = locate(built[key])
    cls = ResidualEncoderUNet if residual else PlainConvUNet
    return cls(input_channels=1, num_classes=2, deep_supervision=False, **built)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    for name, dims, residual in (("plain_2d", 2, False), ("plain_3d", 3, False), ("resenc_2d", 2, True)):
        kwargs = arch_kwargs(dims, residual)
        net = instantiate(dims, residual, kwargs)
        cls = "ResidualEncoderUNet" if residual else "PlainConvUNet"
        metadata = {"format": "i3rt-weights-1", "network": network_json(cls, dims, 1, 2, arch_kwargs=kwargs),
                    "fold": "0", "mirror_axes": "[0, 1]" if dims == 2 else "[0, 1, 2]"}
        # as convert_nnunet.py: the decoder's aliases of the encoder and unused heads go
        tensors = drop_deep_supervision(drop_aliases(net.state_dict(), nnunet_alias_candidates, log=lambda _: None),
                                        log=lambda _: None)
        path = write_weights(os.path.join(OUT, name + ".safetensors"), tensors, metadata, dtype="f16")
        print(f"{name}: {os.path.getsize(path)} bytes, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
