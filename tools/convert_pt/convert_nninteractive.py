#!/usr/bin/env python3
"""Converts an nnInteractive model folder into an i3rt model folder.

    convert_nninteractive.py MODEL_FOLDER --out DIR [--folds 0 ...] [--checkpoint-name checkpoint_final.pth]
                             [--dtype f32|f16|bf16]

MODEL_FOLDER is what nnInteractiveInferenceSession.initialize_from_trained_model_folder opens:
inference_info.json (or the legacy inference_session_class.json), plans.json, dataset.json and
fold_K/checkpoint_final.pth (network_weights, trainer_name, init_args.configuration). DIR receives
fold_K.safetensors per fold (format: docs/weights-format.md), plans.json and dataset.json unchanged,
inference_info.json (copied; a legacy inference_session_class.json is rewritten as the inference_info.json
holding the values the session reads from it) and LICENSE if the folder has one.

The network is checked against the one the Python session builds: the checkpoint's trainer class (found
as the session finds it) instantiated from the plans with image channels + interaction channels in
(interaction channels as the session derives them from the capability metadata, prev_seg included) and
2 outputs. Tensor names and alias removal are convert_nnunet.py's.
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_nnunet import (check_against_module, describe_network, drop_deep_supervision, find_folds,  # noqa: E402
                            for_each_fold, plans_errors, read_checkpoint, read_model_texts)
from i3rt_format import ConversionError, run_main, write_weights  # noqa: E402

INFO = "inference_info.json"
LEGACY_INFO = "inference_session_class.json"
# nnInteractive networks always predict background/object, whatever dataset.json lists.
NUM_OUTPUTS = 2


def bare_session():
    """An nnInteractiveInferenceSession without __init__ (no worker threads, no torch thread setting): only
    its capability methods are used, so the converter reads the metadata exactly as the session does."""
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    return nnInteractiveInferenceSession.__new__(nnInteractiveInferenceSession)


def read_capability(model_dir):
    """(session with the capability applied, text of the inference_info.json to write)."""
    session = bare_session()
    path = os.path.join(model_dir, INFO if os.path.isfile(os.path.join(model_dir, INFO)) else LEGACY_INFO)
    try:
        capability, radius, thickness, decay, pad_mode = session._load_capability_and_runtime_defaults(model_dir)
        session._apply_capability(capability)
    except FileNotFoundError as e:
        raise ConversionError(f"{model_dir}: neither {INFO} nor {LEGACY_INFO} found") from e
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:  # bad JSON, class, version or mapping
        raise ConversionError(f"{path}: {e}") from e
    if os.path.basename(path) == INFO:
        with open(path, encoding="utf-8") as f:
            return session, f.read()
    # A legacy file only sets the runtime values; the capability is the session's legacy default.
    info = {"inference_class": type(session).__name__, "point_radius": radius,
            "preferred_scribble_thickness": thickness, "interaction_decay": decay, "pad_mode_image": pad_mode,
            **session._legacy_default_capability()}
    return session, json.dumps(info, indent=4) + "\n"


def find_trainer_class(trainer_name):
    """The trainer class the session builds the network with: nnInteractive.trainer, then nnunetv2's
    trainers, else nnInteractiveTrainer_stub (initialize_from_trained_model_folder's order)."""
    import nnInteractive.trainer
    import nnunetv2
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(nnInteractive.trainer.__path__[0], trainer_name, "nnInteractive.trainer")
    if found is None:
        found = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"),
                                            trainer_name, "nnunetv2.training.nnUNetTrainer")
    if found is None:
        print(f"  trainer {trainer_name} not found: nnInteractiveTrainer_stub builds the network, as in the session")
        found = nnInteractiveTrainer_stub
    return found


def convert_fold(model_dir, fold, args, plans_manager, texts, info_text, interaction_channels):
    import torch

    ckpt_path = os.path.join(model_dir, f"fold_{fold}", args.checkpoint_name)
    ckpt, configuration, tensors = read_checkpoint(ckpt_path)
    dataset_json = json.loads(texts["dataset"])
    with plans_errors(ckpt_path, configuration):
        network, (_, input_channels, _) = describe_network(plans_manager, configuration, dataset_json,
                                                           interaction_channels, NUM_OUTPUTS)
        trainer = find_trainer_class(ckpt["trainer_name"])
        with torch.device("meta"):  # shapes only
            net = trainer.build_network_architecture(plans_manager, plans_manager.get_configuration(configuration),
                                                     input_channels, NUM_OUTPUTS, enable_deep_supervision=False)
    print(f"  {input_channels} input channels ({interaction_channels} interaction channels incl. prev_seg), "
          f"{NUM_OUTPUTS} outputs, trainer {ckpt['trainer_name']}")
    tensors = drop_deep_supervision(tensors)
    check_against_module(tensors, net)
    metadata = {
        "network": network,
        "plans": texts["plans"],
        "dataset": texts["dataset"],
        "inference_info": info_text,
        "configuration": str(configuration),
        "fold": str(fold),
        "trainer": str(ckpt["trainer_name"]),
        "mirror_axes": "[]",  # the session never mirrors
        "source": ckpt_path,
    }
    out = write_weights(os.path.join(args.out, f"fold_{fold}.safetensors"), tensors, metadata, args.dtype)
    print(f"  wrote {out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values, {args.dtype}")


def write_text_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_folder", help="nnInteractive model folder (inference_info.json, plans.json, "
                                         "dataset.json, fold_K/)")
    ap.add_argument("--out", required=True, help="output i3rt model folder")
    ap.add_argument("--folds", nargs="+", help="folds to convert (0 1 ... or all); default: every fold_* found")
    ap.add_argument("--checkpoint-name", default="checkpoint_final.pth")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32", help="storage type of the weights")
    args = ap.parse_args(argv)

    model_dir = args.model_folder
    texts = read_model_texts(model_dir)
    session, info_text = read_capability(model_dir)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(json.loads(texts["plans"]))
    folds = args.folds or find_folds(model_dir, args.checkpoint_name)
    for_each_fold(model_dir, folds, args.checkpoint_name,
                  lambda fold: convert_fold(model_dir, fold, args, plans_manager, texts, info_text,
                                            session.num_interaction_channels))
    # The json files after the weights: a folder with inference_info.json has its fold files.
    for key, name in (("plans", "plans.json"), ("dataset", "dataset.json")):
        write_text_atomic(os.path.join(args.out, name), texts[key])
    write_text_atomic(os.path.join(args.out, INFO), info_text)
    if os.path.isfile(os.path.join(model_dir, "LICENSE")):
        shutil.copyfile(os.path.join(model_dir, "LICENSE"), os.path.join(args.out, "LICENSE"))
    print(f"wrote {args.out}: {', '.join(f'fold_{f}.safetensors' for f in folds)}, plans.json, dataset.json, {INFO}"
          f"{', LICENSE' if os.path.isfile(os.path.join(args.out, 'LICENSE')) else ''}")


if __name__ == "__main__":
    run_main(main)
