#!/usr/bin/env python3
"""Converts an nnU-Net v2 trained-model folder into i3rt weight files, one per fold.

    convert_nnunet.py MODEL_FOLDER --out DIR [--folds 0 1 ...] [--checkpoint-name checkpoint_final.pth]
                      [--dtype f32|f16|bf16]

MODEL_FOLDER is what nnU-Net writes for a trainer/plans/configuration (dataset.json, plans.json,
fold_K/checkpoint_final.pth). Writes DIR/fold_K.safetensors (format: docs/weights-format.md). The
checkpoint is read the way nnunetv2's predictor reads it (torch.load(weights_only=False); network_weights,
init_args.configuration, trainer_name, inference_allowed_mirroring_axes); the configuration is resolved
with nnunetv2's PlansManager (inheritance included).

Tensor names are the network's state-dict keys without the aliases dynamic_network_architectures stores
(`.all_modules.N` repeats `.conv`/`.norm`, `decoder.encoder.*` repeats `encoder.*`; each dropped one is
checked to be the same tensor) and without the deep-supervision heads `decoder.seg_layers.0..n-2`. The kept
names and shapes are then checked against the network instantiated from the plans.
"""
import argparse
import contextlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from i3rt_format import (ConversionError, drop_aliases, load_torch_checkpoint, network_json, require_file,  # noqa: E402
                         run_main, write_weights)

ALL_MODULES = re.compile(r"\.all_modules\.\d+\.")
# ConvDropoutNormReLU registers conv, dropout, norm, nonlin as attributes and again in all_modules.
BLOCK_PARTS = ("conv", "norm", "dropout", "nonlin")


def nnunet_alias_candidates(name, keys):
    """The canonical keys an nnU-Net state-dict key may repeat; [] when the key is canonical."""
    canonical = name[len("decoder."):] if name.startswith("decoder.encoder.") else name
    m = ALL_MODULES.search(canonical)
    if m:
        canonical = [canonical[:m.start()] + f".{part}." + canonical[m.end():] for part in BLOCK_PARTS]
    else:
        canonical = [canonical]
    if canonical == [name]:
        return []
    found = [c for c in canonical if c in keys]
    if not found:
        raise ConversionError(f"tensor {name} looks like an alias but none of {', '.join(canonical)} exists")
    return found


def drop_deep_supervision(tensors, log=print):
    """Keeps only the last decoder.seg_layers head (the one used at inference)."""
    heads = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.seg_layers\.(\d+)\.", k))})
    if not heads:
        raise ConversionError("no decoder.seg_layers.* tensors: not a dynamic_network_architectures UNet")
    last = heads[-1]
    kept = {k: v for k, v in tensors.items()
            if not ((m := re.match(r"decoder\.seg_layers\.(\d+)\.", k)) and int(m.group(1)) != last)}
    log(f"  deep supervision: kept decoder.seg_layers.{last}, dropped {len(tensors) - len(kept)} tensors")
    return kept


def describe_network(plans_manager, configuration, dataset_json, extra_input_channels=0, num_classes=None):
    """The "network" metadata object and the arguments to instantiate the network for the check.
    extra_input_channels: inputs besides the image channels (nnInteractive's interaction channels);
    num_classes: a fixed number of outputs (nnInteractive: always 2) instead of the dataset's labels."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    cm = plans_manager.get_configuration(configuration)
    arch = cm.configuration["architecture"]
    class_name = arch["network_class_name"].split(".")[-1]
    conv_op = str(arch["arch_kwargs"].get("conv_op", ""))
    dims = {"Conv2d": 2, "Conv3d": 3}.get(conv_op.split(".")[-1])
    if dims is None:
        raise ConversionError(f"plans configuration {configuration}: conv_op {conv_op!r} is neither Conv2d nor Conv3d")
    if num_classes is None:
        # one output per label, or per region (region-based training; dataset.json's regions_class_order)
        num_classes = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    input_channels = determine_num_input_channels(plans_manager, cm, dataset_json) + extra_input_channels
    network = network_json(class_name, dims, input_channels, num_classes, arch_kwargs=arch["arch_kwargs"])
    return network, (arch, input_channels, num_classes)


def check_against_network(tensors, arch, input_channels, num_classes):
    """check_against_module with the network instantiated from the plans."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     input_channels, num_classes, allow_init=False, deep_supervision=False)
    check_against_module(tensors, net)


def check_against_module(tensors, net):
    """The kept names and shapes must be exactly the network's own parameters and buffers, each under the
    name its module registered first (what named_parameters() yields), minus the deep-supervision heads."""
    expected = {k: tuple(v.shape) for k, v in list(net.named_parameters()) + list(net.named_buffers())}
    expected = drop_deep_supervision(expected, log=lambda *_: None)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ConversionError(f"checkpoint does not match the network in the plans: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                              f"{' ...' if len(extra) > 5 else ''}")
    for k, shape in expected.items():
        if got[k] != shape:
            raise ConversionError(f"tensor {k} has shape {list(got[k])}, the network in the plans needs {list(shape)}")


def find_folds(model_dir, checkpoint_name):
    folds = sorted(d[len("fold_"):] for d in os.listdir(model_dir)
                   if d.startswith("fold_") and os.path.isfile(os.path.join(model_dir, d, checkpoint_name)))
    if not folds:
        raise ConversionError(f"{model_dir}: no fold_*/{checkpoint_name} found")
    return folds


def for_each_fold(model_dir, folds, checkpoint_name, convert):
    """convert(fold) for each fold; every error message names the checkpoint it is about."""
    for fold in folds:
        try:
            convert(fold)
        except ConversionError as e:
            where = os.path.join(model_dir, f"fold_{fold}", checkpoint_name)
            raise (e if str(e).startswith(where) else ConversionError(f"{where}: {e}")) from e


def read_checkpoint(ckpt_path):
    """An nnU-Net v2 checkpoint as nnunetv2 reads it: (checkpoint dict, its configuration name, the state dict
    without its aliases)."""
    print(f"{ckpt_path}:")
    ckpt = load_torch_checkpoint(ckpt_path)
    for key in ("network_weights", "init_args", "trainer_name"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise ConversionError(f"{ckpt_path}: not an nnU-Net v2 checkpoint (no {key!r})")
    # nnunetv2's load_checkpoint strips a DistributedDataParallel 'module.' prefix the same way.
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in ckpt["network_weights"].items()}
    return ckpt, ckpt["init_args"].get("configuration"), drop_aliases(state, nnunet_alias_candidates)


@contextlib.contextmanager
def plans_errors(ckpt_path, configuration):
    """Turns what nnunetv2 raises on plans/dataset.json lacking what the checkpoint needs into a message."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError) as e:
        raise ConversionError(f"{ckpt_path}: configuration {configuration!r}: plans.json or dataset.json: "
                              f"{type(e).__name__}: {e}") from e


def read_model_texts(model_dir):
    """{"plans": text, "dataset": text} of the model folder's plans.json and dataset.json (checked JSON)."""
    if not os.path.isdir(model_dir):
        raise ConversionError(f"{model_dir}: model folder not found")
    texts = {}
    for key, name in (("plans", "plans.json"), ("dataset", "dataset.json")):
        path = require_file(os.path.join(model_dir, name), name)
        with open(path, encoding="utf-8") as f:
            texts[key] = f.read()
        try:
            json.loads(texts[key])
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path}: not valid JSON: {e}") from e
    return texts


def convert_fold(model_dir, fold, args, plans_manager, texts, dataset_json):
    ckpt_path = os.path.join(model_dir, f"fold_{fold}", args.checkpoint_name)
    ckpt, configuration, tensors = read_checkpoint(ckpt_path)
    with plans_errors(ckpt_path, configuration):
        network, build_args = describe_network(plans_manager, configuration, dataset_json)
    tensors = drop_deep_supervision(tensors)
    check_against_network(tensors, *build_args)
    mirror_axes = ckpt.get("inference_allowed_mirroring_axes")
    metadata = {
        "network": network,
        "plans": texts["plans"],
        "dataset": texts["dataset"],
        "configuration": str(configuration),
        "fold": str(fold),
        "trainer": str(ckpt["trainer_name"]),
        "mirror_axes": json.dumps([int(a) for a in mirror_axes] if mirror_axes is not None else []),
        "source": ckpt_path,
    }
    out = write_weights(os.path.join(args.out, f"fold_{fold}.safetensors"), tensors, metadata, args.dtype)
    n_params = sum(t.numel() for t in tensors.values())
    print(f"  wrote {out}: {len(tensors)} tensors, {n_params} values, {args.dtype}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_folder", help="nnU-Net trained-model folder (dataset.json, plans.json, fold_K/)")
    ap.add_argument("--out", required=True, help="output folder for fold_K.safetensors")
    ap.add_argument("--folds", nargs="+", help="folds to convert (0 1 ... or all); default: every fold_* found")
    ap.add_argument("--checkpoint-name", default="checkpoint_final.pth")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32", help="storage type of the weights")
    args = ap.parse_args(argv)

    model_dir = args.model_folder
    texts = read_model_texts(model_dir)

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(json.loads(texts["plans"]))
    dataset_json = json.loads(texts["dataset"])
    folds = args.folds or find_folds(model_dir, args.checkpoint_name)
    for_each_fold(model_dir, folds, args.checkpoint_name,
                  lambda fold: convert_fold(model_dir, fold, args, plans_manager, texts, dataset_json))


if __name__ == "__main__":
    run_main(main)
