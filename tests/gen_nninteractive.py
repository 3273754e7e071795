#!/usr/bin/env python3
"""Fixture for tests/test_nninteractive.c: nnInteractive's own session on a small model, prompt by prompt.

    gen_nninteractive.py --out DIR

Also read by tests/serve_client.py (the real client against i3rt serve). DIR receives:
  model_src/     an nnInteractive model folder (inference_info.json with the default capability mapping,
                 plans.json made like nnunetv2's ResEnc plans but tiny, dataset.json,
                 fold_0/checkpoint_final.pth with trainer nnInteractiveTrainer_stub) of a ResidualEncoderUNet
                 (5 stages, 8..64 features, patch 64^3; 1 image + 7 interaction channels in, 2 out)
  model/         the same converted by tools/convert_pt/convert_nninteractive.py (checked here against the
                 network's parameters; the converter's errors and legacy rewrite are checked on copies)
  image.f32      a 40 x 72 x 48 crop of the Colin27 T1 (mricron-data's ch2bet.nii.gz, 3 mm block means),
                 float32, C order
  steps.json     {"shape", "patch_size", "seed", "sequences": [{"name", "do_autozoom", "steps": [...]}]}: per
                 step the prompt, numpy's seed set right before it (rng_seed), what the session returned
                 (ran_prediction, changed_bbox), the zoom factor of its prediction and the files below
  SEQ_stepK_mask.u8        the scribble, lasso or initial-segmentation mask (the region's shape, or the image's)
  SEQ_stepK_target.u8      the target buffer after step K
  SEQ_stepK_interactions.f32  the session's interaction tensor after step K ([7, n0, n1, n2], its fp16 values)
Reference: nnInteractive 2.6.0's nnInteractiveInferenceSession on the CPU (no torch.compile, dense interaction
storage, undo on, one thread) loaded from model_src/ with initialize_from_trained_model_folder.

The patch is 64^3 because nnInteractive's refinement tiles leave a margin of 24 voxels on each side: with a
patch of 48 or less a refinement covers nothing and the session fails. The weights are random (seeded He
initialization, random norm affines) except for the two paths shape_network describes, which make the
masks persist between steps and AutoZoom zoom out only where the previous segmentation crosses the patch
border; the output bias makes about an eighth of a fresh patch foreground. The script asserts that every
predicted mask is neither empty nor full and differs from the one before.
"""
import argparse
import contextlib
import io
import json
import os
import re
import sys
import time

import nibabel as nib
import numpy as np
import torch
from skimage.draw import line, polygon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "convert_pt"))
import convert_nninteractive  # noqa: E402
CH2BET = "/usr/share/mricron/templates/ch2bet.nii.gz"
SEED = 20251126
CONFIGURATION = "3d_fullres_ps64"
# nnInteractive's refinement tiles keep a 24-voxel margin on each side: a patch of 48 or less covers nothing.
PATCH = [64, 64, 64]
N_STAGES = 5

ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": {
        "n_stages": N_STAGES,
        "features_per_stage": [8, 16, 32, 64, 64],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * N_STAGES,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (N_STAGES - 1),
        "n_blocks_per_stage": [1, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [1] * (N_STAGES - 1),
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

PLANS = {  # the layout of nnunetv2's nnUNetPlannerResEncM output, shrunk
    "dataset_name": "Dataset990_nnInteractiveTiny",
    "plans_name": "nnUNetResEncUNetPlans",
    "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
    "original_median_shape_after_transp": [40, 72, 48],
    "image_reader_writer": "NibabelIOWithReorient",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {
        CONFIGURATION: {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": PATCH,
            "median_image_size_in_voxels": [40, 72, 48],
            "spacing": [1.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False],
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
    },
    "experiment_planner_used": "nnUNetPlannerResEncM",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        "0": {"max": 133.0, "mean": 60.0, "median": 60.0, "min": 0.0, "percentile_00_5": 5.0,
              "percentile_99_5": 120.0, "std": 25.0}},
}

DATASET = {
    "channel_names": {"0": "T1"},
    "labels": {"background": 0, "object": 1},
    "numTraining": 1,
    "file_ending": ".nii.gz",
}

INFERENCE_INFO = {  # nnInteractive's default capability mapping, written out
    "inference_class": "nnInteractiveInferenceSession",
    "point_radius": 4,
    "preferred_scribble_thickness": [2, 2, 2],
    "interaction_decay": 0.98,
    "pad_mode_image": "constant",
    "supported_interactions": {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False},
    "supports_initial_label": True,
    "supports_zero_shot_label_refinement": True,
    "interaction_channels": 6,
    "channel_mapping": {"prev_seg": 0, "bbox2d": [1, 2], "bbox3d": [1, 2], "lasso": [1, 2], "points": [3, 4],
                        "scribble": [5, 6]},
}
FOREGROUND_FRACTION = 0.12
EDGE_WEIGHT = 4.0
ECHO_WEIGHT = 2.0
# Network input channels: 0 image, 1 prev_seg, 2/3 bbox and lasso +/-, 4/5 points +/-, 6/7 scribbles +/-.
PROMPT_SIGNS = {1: 1.0, 2: 1.0, 3: -1.0, 4: 1.0, 5: -1.0, 6: 1.0, 7: -1.0}


def load_image():
    """Colin27's brain (ch2bet), 3 x 3 x 3 block means, cropped to 40 x 72 x 48: longer than the patch on the
    second axis, with zero background around the brain there."""
    ch2 = np.asarray(nib.load(CH2BET).dataobj, dtype=np.float32)[:180, :216, :180]
    small = ch2.reshape(60, 3, 72, 3, 60, 3).mean(axis=(1, 3, 5))
    return np.ascontiguousarray(small[10:50, :, 4:52], dtype=np.float32)


def shape_network(net):
    """Two hand-set paths through the random network, so that it behaves like a trained nnInteractive where
    the tests need it (every other weight stays random):
    - echo: the stem's channel E sums the previous segmentation and the positive prompts minus the negative
      ones (centre tap); the last decoder convolution passes it on and the head adds it to the foreground
      logit, so the object persists from step to step and follows the prompts (else every prediction of a
      random network differs everywhere and each refinement needs dozens of tiles);
    - edge: the stem's channel K is the constant 1 (zero weights, bias 1, norm shift 1), which the last
      decoder convolution sums with weight -1 over its 3x3x3 window: zero padding makes it higher on the
      outer voxel layer of the patch only, where the head turns it into background. A random network
      predicts something everywhere, so AutoZoom would always zoom out to the limit; now it zooms out where
      the previous segmentation crosses the patch border, as for an object larger than the patch.
    Stage 0's residual blocks add nothing to E and K (their last norm scale is 0)."""
    stem = net.encoder.stem.convs[0]
    features = stem.conv.out_channels
    echo, edge = features - 2, features - 1
    stem.conv.weight[echo] = 0.0
    stem.conv.weight[edge] = 0.0
    for channel, sign in PROMPT_SIGNS.items():
        stem.conv.weight[echo, channel, 1, 1, 1] = sign
    stem.conv.bias[echo] = 0.0
    stem.conv.bias[edge] = 1.0
    stem.norm.weight[echo] = 1.0
    stem.norm.bias[echo] = 0.0
    stem.norm.bias[edge] = 1.0
    for block in net.encoder.stages[0].blocks:
        block.conv2.norm.weight[[echo, edge]] = 0.0
        block.conv2.norm.bias[[echo, edge]] = 0.0
    last = net.decoder.stages[-1].convs[0]
    last.conv.weight[:2] *= 0.1
    last.conv.weight[0, features + edge] = -1.0  # the skip connection's channels follow the up-sampled ones
    last.conv.weight[1, features + echo, 1, 1, 1] = 1.0
    head = net.decoder.seg_layers[-1]
    head.weight[:, 0, 0, 0, 0] = torch.tensor([EDGE_WEIGHT, -EDGE_WEIGHT])
    head.weight[:, 1, 0, 0, 0] = torch.tensor([-ECHO_WEIGHT, ECHO_WEIGHT])


def build_network(image):
    """Random ResidualEncoderUNet as nnInteractive builds it, made to answer to prompts (see the docstring)."""
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(SEED)
    plans_manager = PlansManager(PLANS)
    net = nnInteractiveTrainer_stub.build_network_architecture(
        plans_manager, plans_manager.get_configuration(CONFIGURATION), 1 + 7, 2, enable_deep_supervision=True)
    with torch.no_grad():
        for name, p in net.named_parameters():  # affine norms start at 1/0: make them distinctive
            if ".norm." in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
        shape_network(net)
        # Bias: FOREGROUND_FRACTION of a patch around the image centre with one point prompt is foreground.
        x = torch.zeros([1, 8, *PATCH])
        norm = (image - image.mean()) / image.std()
        crop = [slice(max(0, (s - p) // 2), max(0, (s - p) // 2) + min(s, p)) for s, p in zip(image.shape, PATCH)]
        x[(0, 0, *[slice(0, c.stop - c.start) for c in crop])] = torch.from_numpy(norm[tuple(crop)])
        x[0, 4, 28:37, 28:37, 28:37] = 1.0
        net.eval()
        net.decoder.deep_supervision = False
        logits = net(x)[0]
        margin = (logits[1] - logits[0]).flatten()
        net.decoder.seg_layers[-1].bias[1] -= torch.quantile(margin, 1 - FOREGROUND_FRACTION)
        net.decoder.deep_supervision = True
    return net


def write_model_folder(folder, net):
    os.makedirs(os.path.join(folder, "fold_0"), exist_ok=True)
    for name, content in (("plans.json", PLANS), ("dataset.json", DATASET), ("inference_info.json", INFERENCE_INFO)):
        with open(os.path.join(folder, name), "w") as f:
            json.dump(content, f, indent=4)
    checkpoint = {  # what nnInteractive's trainer saves, as nnUNetTrainer.save_checkpoint
        "network_weights": net.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1000,
        "init_args": {"plans": PLANS, "configuration": CONFIGURATION, "fold": 0, "dataset_json": DATASET,
                      "device": torch.device("cpu")},
        "trainer_name": "nnInteractiveTrainer_stub",
        "inference_allowed_mirroring_axes": None,
    }
    torch.save(checkpoint, os.path.join(folder, "fold_0", "checkpoint_final.pth"))


def check_converted(folder, net):
    """The converted tensors are the network's parameters and buffers minus the deep-supervision heads."""
    from safetensors.torch import load_file

    got = load_file(os.path.join(folder, "fold_0.safetensors"))
    last = N_STAGES - 2
    want = {k: v for k, v in net.state_dict(keep_vars=False).items()
            if not (k.startswith("decoder.seg_layers.") and not k.startswith(f"decoder.seg_layers.{last}."))}
    want = {k: v for k, v in want.items() if not k.startswith("decoder.encoder.") and ".all_modules." not in k}
    assert got.keys() == want.keys(), f"converted names differ: {sorted(set(got) ^ set(want))[:6]}"
    assert all(torch.equal(got[k], want[k]) for k in got), "converted values differ"
    for name in ("plans.json", "dataset.json", "inference_info.json"):
        assert os.path.isfile(os.path.join(folder, name)), name


def check_converter_errors(out, model_src):
    """The converter refuses a folder without capability metadata and one whose metadata gives the network
    another number of input channels, naming the file; a legacy inference_session_class.json holding a
    plain string becomes an inference_info.json with the values the session reads from it (decay 0.9)."""
    import shutil

    scratch = os.path.join(out, "converter_checks")
    shutil.rmtree(scratch, ignore_errors=True)
    cases = {"no_info": None, "channels": dict(INFERENCE_INFO, interaction_channels=8), "legacy": None}
    for name, info in cases.items():
        folder = os.path.join(scratch, name)
        shutil.copytree(model_src, folder)
        os.unlink(os.path.join(folder, "inference_info.json"))
        if info is not None:
            with open(os.path.join(folder, "inference_info.json"), "w") as f:
                json.dump(info, f)
        if name == "legacy":
            with open(os.path.join(folder, "inference_session_class.json"), "w") as f:
                json.dump("nnInteractiveInferenceSessionV3", f)
            convert_nninteractive.main([folder, "--out", os.path.join(folder, "out")])
            with open(os.path.join(folder, "out", "inference_info.json")) as f:
                info = json.load(f)
            assert info["interaction_decay"] == 0.9 and info["interaction_channels"] == 6, info
            continue
        must_say = {"no_info": f"{folder}: neither inference_info.json nor inference_session_class.json",
                    "channels": "tensor encoder.stem.convs.0.conv.weight has shape [8, 8, 3, 3, 3], the network "
                                "in the plans needs [8, 10, 3, 3, 3]"}[name]
        try:
            convert_nninteractive.main([folder, "--out", os.path.join(folder, "out")])
        except convert_nninteractive.ConversionError as e:
            assert must_say in str(e), f"converter error {e!r} does not say {must_say!r}"
            print(f"refused as expected: {e}")
            assert not os.path.exists(os.path.join(folder, "out", "inference_info.json"))
            continue
        sys.exit(f"converter on {folder}: expected an error saying {must_say!r}")
    shutil.rmtree(scratch)


# ---- prompts, as the clients send them --------------------------------------------------------------------

def slice_mask(shape, axis, index, draw):
    """A whole-volume uint8 mask with draw(plane_shape) -> (rows, cols) set in the plane `index` of `axis`,
    the way napari-nninteractive rasterizes a 2D scribble or lasso on the slice being viewed."""
    mask = np.zeros(shape, np.uint8)
    plane = np.zeros([s for d, s in enumerate(shape) if d != axis], np.uint8)
    rr, cc = draw(plane.shape)
    plane[rr, cc] = 1
    at = [slice(None)] * 3
    at[axis] = index
    mask[tuple(at)] = plane
    return mask


def lasso(points):
    """A closed contour filled (skimage.draw.polygon, as the client fills the lasso)."""
    return lambda plane_shape: polygon([p[0] for p in points], [p[1] for p in points], plane_shape)


def scribble(points, thickness=2):
    """A polyline `thickness` voxels wide (the model's preferred scribble thickness)."""
    def draw(plane_shape):
        rr, cc = [], []
        for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
            r, c = line(r0, c0, r1, c1)
            for dr in range(thickness):
                for dc in range(thickness):
                    rr.append(np.clip(r + dr, 0, plane_shape[0] - 1))
                    cc.append(np.clip(c + dc, 0, plane_shape[1] - 1))
        return np.concatenate(rr), np.concatenate(cc)
    return draw


def bbox_of(mask, pad=0):
    nz = np.nonzero(mask)
    return [[max(0, int(a.min()) - pad), min(s, int(a.max()) + 1 + pad)] for a, s in zip(nz, mask.shape)]


def ellipsoid(shape, center, radii):
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1).astype(np.uint8)


def sequences(shape):
    """Without AutoZoom: every prompt kind once or twice, a prompt large enough to zoom out by itself (then
    refined in tiles), undo twice (the second has nothing to undo), queued prompts and predict, an initial
    segmentation, reset. With AutoZoom: prompts whose predictions zoom out to the limit and are refined in
    tiles, before and after an initial segmentation, and an undo of a zoomed prediction."""
    no_autozoom = [
        dict(kind="point", positive=True, coords=[20, 34, 24]),
        dict(kind="point", positive=False, coords=[16, 41, 27]),
        dict(kind="box", positive=True, box=[[10, 30], [26, 48], [24, 25]]),
        dict(kind="scribble", positive=True, mask=slice_mask(shape, 0, 20, scribble([(22, 14), (32, 24), (44, 26)]))),
        dict(kind="lasso", positive=False, crop=True,
             mask=slice_mask(shape, 2, 26, lasso([(12, 44), (20, 56), (28, 48), (22, 40)]))),
        dict(kind="box", positive=False, box=[[26, 27], [32, 44], [16, 30]]),
        dict(kind="scribble", positive=False, crop=True,
             mask=slice_mask(shape, 1, 34, scribble([(6, 6), (10, 16), (18, 20)]))),
        dict(kind="lasso", positive=True,  # 1 x 60 x 40: zooms out to 1.3 without AutoZoom
             mask=slice_mask(shape, 0, 22, lasso([(6, 4), (64, 8), (60, 44), (10, 40)]))),
        dict(kind="undo"),
        dict(kind="undo"),
        dict(kind="point", positive=True, coords=[26, 30, 20], run_prediction=False),
        dict(kind="box", positive=True, box=[[16, 26], [28, 29], [16, 28]], run_prediction=False),
        dict(kind="predict"),
        dict(kind="initial_seg", mask=ellipsoid(shape, (20, 36, 24), (7, 9, 8)), run_prediction=True),
        dict(kind="point", positive=False, coords=[20, 44, 24]),
        dict(kind="reset"),
        dict(kind="point", positive=True, coords=[24, 38, 26]),
    ]
    autozoom = [
        dict(kind="point", positive=True, coords=[20, 36, 24]),
        dict(kind="undo"),
        dict(kind="initial_seg", mask=ellipsoid(shape, (20, 40, 24), (14, 26, 18)), run_prediction=False),
        dict(kind="point", positive=True, coords=[20, 20, 24]),
        dict(kind="scribble", positive=False, mask=slice_mask(shape, 2, 20, scribble([(8, 10), (20, 30), (30, 60)]))),
        dict(kind="undo"),
        dict(kind="box", positive=True, box=[[4, 36], [60, 61], [6, 44]]),
        # 11 x 47 x 11: zooms out to 1.06 by itself; a predicted initial segmentation refines all of itself
        dict(kind="initial_seg", mask=ellipsoid(shape, (20, 36, 24), (5, 23, 5)), run_prediction=True),
        dict(kind="point", positive=False, coords=[20, 30, 24]),
    ]
    return [("no_autozoom", False, no_autozoom), ("autozoom", True, autozoom)]


# ---- running the session -------------------------------------------------------------------------------

def run_step(session, step):
    """Applies one step; returns (ran_prediction, changed_bbox)."""
    kind, run = step["kind"], step.get("run_prediction", True)
    if kind == "point":
        return finished(session.add_point_interaction(step["coords"], step["positive"], run_prediction=run), run)
    if kind == "box":
        return finished(session.add_bbox_interaction(step["box"], step["positive"], run_prediction=run), run)
    if kind in ("scribble", "lasso"):
        add = session.add_scribble_interaction if kind == "scribble" else session.add_lasso_interaction
        region = step.get("region")
        mask = step["mask"][tuple(slice(lo, hi) for lo, hi in region)] if region else step["mask"]
        return finished(add(np.ascontiguousarray(mask), step["positive"], run_prediction=run,
                            interaction_bbox=region), run)
    if kind == "initial_seg":
        return finished(session.add_initial_seg_interaction(step["mask"].copy(), run_prediction=run), run)
    if kind == "predict":
        return finished(session._predict(force_full_refine=False), True)  # what the server's /predict calls
    if kind == "undo":
        undone = session.undo()
        return undone, (session._clipped_last_paste_bbox() if undone else None)
    if kind == "reset":
        session.reset_interactions()
        return False, None
    raise ValueError(kind)


def finished(bbox, run):
    return (bbox is not None) if run else False, bbox


def last_zoom(log):
    """The zoom factor of the step's prediction, read off the session's log (it keeps no attribute)."""
    if "for initial prediction at zoom out factor" not in log:
        return None
    m = re.findall(r"max zoom out factor ([0-9.]+)", log)
    return float(m[-1]) if m else 1.0


def run_sequences(out, model_src, image):
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(device=torch.device("cpu"), use_torch_compile=False, verbose=False,
                                            torch_n_threads=1, interactions_storage="tensor", enable_undo=True)
    with contextlib.redirect_stdout(io.StringIO()):
        session.initialize_from_trained_model_folder(model_src, use_fold=0)
    assert session.num_interaction_channels == 7
    result = []
    for s_index, (name, autozoom, steps) in enumerate(sequences(image.shape)):
        session.set_do_autozoom(autozoom)
        session.set_image(image[None])
        target = np.zeros(image.shape, np.uint8)
        session.set_target_buffer(target)
        previous = target.copy()
        recorded = []
        result.append({"name": name, "do_autozoom": autozoom, "steps": recorded})
        for k, step in enumerate(steps):
            entry = {key: v for key, v in step.items() if key not in ("mask", "crop")}
            if step["kind"] in ("point", "box", "scribble", "lasso", "initial_seg", "predict"):
                entry.setdefault("run_prediction", True)
            if "mask" in step:
                if step.get("crop"):
                    entry["region"] = step["region"] = bbox_of(step["mask"], pad=2)
                else:
                    entry["region"] = None
                region = step.get("region")
                mask = step["mask"][tuple(slice(lo, hi) for lo, hi in region)] if region else step["mask"]
                entry["mask"] = f"{name}_step{k}_mask.u8"
                np.ascontiguousarray(mask, dtype=np.uint8).tofile(os.path.join(out, entry["mask"]))
            entry["rng_seed"] = SEED % 100000 + 1000 * s_index + k
            np.random.seed(entry["rng_seed"])
            log = io.StringIO()
            t0 = time.time()
            with contextlib.redirect_stdout(log):
                ran, bbox = run_step(session, step)
            fresh = np.random.RandomState(entry["rng_seed"]).get_state()
            rng_draws = np.random.get_state()[2] != fresh[2] or not np.array_equal(np.random.get_state()[1], fresh[1])
            entry["ran_prediction"] = bool(ran)
            entry["changed_bbox"] = [[int(lo), int(hi)] for lo, hi in bbox] if bbox is not None else None
            entry["zoom"] = last_zoom(log.getvalue())
            entry["target"] = f"{name}_step{k}_target.u8"
            entry["interactions"] = f"{name}_step{k}_interactions.f32"
            target.tofile(os.path.join(out, entry["target"]))
            session.interactions.float().numpy().tofile(os.path.join(out, entry["interactions"]))
            tiles = re.findall(r"refining the segmentation with (\d+) bounding boxes", log.getvalue())
            print(f"{name} step {k} {step['kind']:11s} ran {int(ran)} zoom {entry['zoom']} "
                  f"tiles {tiles[-1] if tiles else '-'}{' (random cover)' if rng_draws else ''} fg {int(target.sum())} "
                  f"({time.time() - t0:.1f} s)")
            if step["kind"] not in ("undo", "reset") and entry["ran_prediction"]:
                assert 0 < target.mean() < 1, f"{name} step {k}: predicted mask is empty or full"
                assert not np.array_equal(previous, target), f"{name} step {k}: the prediction did not change"
            previous = target.copy()
            recorded.append(entry)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.time()
    image = load_image()
    net = build_network(image)
    model_src, model = os.path.join(out, "model_src"), os.path.join(out, "model")
    write_model_folder(model_src, net)
    convert_nninteractive.main([model_src, "--out", model])
    check_converted(model, net)
    check_converter_errors(out, model_src)
    image.tofile(os.path.join(out, "image.f32"))
    seqs = run_sequences(out, model_src, image)
    with open(os.path.join(out, "steps.json"), "w") as f:
        json.dump({"shape": list(image.shape), "patch_size": PATCH, "seed": SEED, "sequences": seqs}, f, indent=1)
    print(f"wrote {out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
