#!/usr/bin/env python3
"""Fixtures for tests/test_predict.c: nnUNetPredictor's predictions of evaluation cases with the small real
nnU-Net models in weights/ (scripts/train_models.py trained them; weights/README.md), plus bad inputs.

    gen_predict.py --out DIR [--weights weights]

DIR/manifest.json lists the runs (DIR/run_<name>.json each; --only regenerates some of them and keeps the
others). Each run is one model folder (its fold_K/checkpoint_final.pth for
nnunetv2, fold_K.safetensors for i3rt), folds, mirroring on/off and one case; for each it holds two
references made by nnunetv2 2.8.1's nnUNetPredictor.predict_single_npy_array on the CPU
(images read with SimpleITKIO, as nnUNetv2_predict reads them):
  fp16  nnUNetPredictor as it is: sliding-window sums (and fold average) in fp16
  fp32  the same with its two fp16 accumulators switched to float32 (torch.half -> torch.float32 while it
        runs; the fp16 Gaussian map is unchanged), which is what i3rt computes by default
Segmentations are DIR/<run>_<acc>_seg.u8, probabilities DIR/<run>_<acc>_prob.f32 ([classes, z, y, x]).
Evaluation cases come from scripts/train_models.py make_eval_cases (seeds never used for training).
Bad inputs for the error tests are under DIR/bad/.

Cascades (nnU-Net's 3d_lowres -> 3d_cascade_fullres; no trained cascade is committed, training one needs
nnU-Net's five-fold lowres predictions): make_cascade derives both stages from a trained 3d_fullres model
into DIR/cascade/: NAME_lowres is the same network under a configuration 3d_lowres whose spacing is coarser,
NAME_cascade a 3d_cascade_fullres (inherits 3d_fullres, previous_stage 3d_lowres) whose network takes the
image plus one channel per foreground label, with the trained weights and random weights (fixed seed) for
the new input channels of its first convolution, so that the one-hot labels change its output. A cascade
run predicts the case with the lowres stage first (nnUNetPredictor, fp16 sums, written by SimpleITKIO as
nnUNetv2_predict writes it) into DIR/cascade/prev_<run>/, then the cascade stage reads that file in both
nnUNetPredictor (SimpleITKIO.read_seg, as -prev_stage_predictions) and i3rt (--prev-stage-predictions).
Region-based training (make_regions, DIR/regions/): the trained brain network with its three foreground
output channels as the logits of nested regions (REGIONS), sigmoid and regions_class_order at export.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time

import nibabel as nib
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

RUNS = [  # name, model folder, folds, mirroring, dataset of the case[, the previous stage's model folder]
    ("brain3d_f0_notta", "brain_3d_fullres", [0], False, 501),
    ("brain3d_f01_tta", "brain_3d_fullres", [0, 1], True, 501),
    ("brain2d_f01_tta", "brain_2d", [0, 1], True, 501),
    ("headct_f0_tta", "headct_3d_fullres_aniso", [0], True, 502),
    ("headct_f01_notta", "headct_3d_fullres_aniso", [0, 1], False, 502),
    # cascades derived from the models above (make_cascade): 3d_lowres -> 3d_cascade_fullres
    ("brain_cascade_tta", "cascade/brain_cascade", [0], True, 501, "cascade/brain_lowres"),
    ("headct_cascade_notta", "cascade/headct_cascade", [0], False, 502, "cascade/headct_lowres"),
    # region-based (sigmoid per region, regions_class_order), derived by make_regions
    ("brain_regions_tta", "regions/brain_regions", [0], True, 501),
]
REGIONS = {  # the brain model's labels as nested regions, as BraTS' (whole, core, enhancing) are
    "labels": {"background": 0, "deep_grey": [1, 2, 3], "putamen_thalamus": [2, 3], "thalamus": 3},
    "regions_class_order": [1, 2, 3],
}
CASCADES = {  # derived name -> (trained model folder, lowres spacing factor)
    "brain": ("brain_3d_fullres", 1.5),
    "headct": ("headct_3d_fullres_aniso", 1.4),
}


def load_train_models():
    spec = importlib.util.spec_from_file_location("train_models", os.path.join(ROOT, "scripts", "train_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def accumulate(mode):
    """fp32: nnUNetPredictor's fp16 accumulators (torch.half at call time) become float32."""
    half = torch.half
    if mode == "fp32":
        torch.half = torch.float32
    try:
        yield
    finally:
        torch.half = half


def predict(model_dir, folds, tta, files, mode, prev_stage_file=None):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=tuple(folds))
    img, props = SimpleITKIO().read_images(files)
    prev = SimpleITKIO().read_seg(prev_stage_file)[0] if prev_stage_file else None  # -prev_stage_predictions
    with accumulate(mode):
        seg, prob = predictor.predict_single_npy_array(img, props, prev, None, True)
    return np.asarray(seg), np.asarray(prob, dtype=np.float32)


def predict_previous_stage(model_dir, files, out_dir, case):
    """The lowres stage's segmentation of the case as nnUNetv2_predict writes it (SimpleITKIO)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    seg, _ = predict(model_dir, [0], True, files, "fp16")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    _, props = SimpleITKIO().read_images(files)
    path = os.path.join(out_dir, case + ".nii.gz")
    SimpleITKIO().write_seg(seg, path, props)
    return path


def load_trained(weights, base):
    """A trained model folder's plans, dataset.json and fold 0's network weights."""
    with open(os.path.join(weights, base, "plans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(weights, base, "dataset.json")) as f:
        dataset_json = json.load(f)
    trained = torch.load(os.path.join(weights, base, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]
    return plans, dataset_json, trained


def write_derived(folder, plans, dataset_json, configuration, net):
    """A derived model as a trained-model folder (for nnUNetPredictor) with its fold_0.safetensors (for i3rt)."""
    from gen_unet import save_model_folder

    sys.path.insert(0, os.path.join(ROOT, "tools", "convert_pt"))
    import convert_nnunet

    shutil.rmtree(folder, ignore_errors=True)
    save_model_folder(folder, plans, dataset_json, configuration, net)
    convert_nnunet.main([folder, "--out", folder, "--folds", "0"])


def make_cascade(weights, name, out):
    """NAME_lowres and NAME_cascade model folders from the trained CASCADES[name] model."""
    from gen_unet import build_network

    base, factor = CASCADES[name]
    plans, dataset_json, trained = load_trained(weights, base)
    configs = plans["configurations"]
    configs["3d_lowres"] = {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                            "spacing": [s * factor for s in configs["3d_fullres"]["spacing"]],
                            "next_stage": "3d_cascade_fullres"}
    configs["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    for stage, configuration in (("lowres", "3d_lowres"), ("cascade", "3d_cascade_fullres")):
        net, _ = build_network(plans, configuration, dataset_json, seed=11)
        state = net.state_dict()
        g = torch.Generator().manual_seed(12)
        for key, value in state.items():
            src = trained[key]
            if value.shape == src.shape:
                value.copy_(src)
            else:  # the first convolution of the cascade: the image's channels trained, the one-hot ones new
                c = src.shape[1]
                value[:, :c] = src
                value[:, c:] = torch.randn(value[:, c:].shape, generator=g) * src.std()
        net.load_state_dict(state)
        write_derived(os.path.join(out, "cascade", f"{name}_{stage}"), plans, dataset_json, configuration, net)


def make_regions(weights, out):
    """A region-based model folder from the trained brain model: its network with the foreground classes'
    output channels as the region logits (REGIONS), so sigmoid > 0.5 paints them in regions_class_order."""
    from gen_unet import build_network

    plans, dataset_json, trained = load_trained(weights, "brain_3d_fullres")
    dataset_json.update(REGIONS)
    net, _ = build_network(plans, "3d_fullres", dataset_json, seed=13)
    state = net.state_dict()
    for key, value in state.items():  # the segmentation heads: classes 1..3 of the trained 4
        value.copy_(trained[key] if value.shape == trained[key].shape else trained[key][1:])
    net.load_state_dict(state)
    write_derived(os.path.join(out, "regions", "brain_regions"), plans, dataset_json, "3d_fullres", net)


# postprocessing.pkl's kwargs as nnUNetv2_find_best_configuration picks them: the foreground labels (a list),
# then single labels or regions (tuples; postprocessing.json writes them as lists)
POSTPROCESSING_KWARGS = [{"labels_or_regions": [1, 2, 3]}, {"labels_or_regions": 2},
                         {"labels_or_regions": (1, 3), "background_label": 0}]


def write_postprocessing(out):
    """postprocessing.json, and nnunetv2's apply_postprocessing on a fragmented label map (pp_in.u8 ->
    pp_ref.u8, [17, 19, 23]: labels 1-3 on 6 % of the voxels, many small components, some joined only
    through an edge or a corner, and two isolated cubes of label 2 tied for its largest component) and on the
    fp32 references of the brain runs (<run>_pp_seg.u8; i3rt gives those runs' segmentations exactly)."""
    from nnunetv2.postprocessing.remove_connected_components import (
        apply_postprocessing, remove_all_but_largest_component_from_segmentation)

    fns, kwargs = [remove_all_but_largest_component_from_segmentation] * len(POSTPROCESSING_KWARGS), POSTPROCESSING_KWARGS
    with open(os.path.join(out, "postprocessing.json"), "w") as f:  # as determine_postprocessing writes it
        json.dump({"postprocessing_fns": [fn.__name__ for fn in fns], "postprocessing_kwargs": kwargs}, f, indent=1)
    rng = np.random.default_rng(31)
    seg = rng.integers(1, 4, size=(17, 19, 23)).astype(np.uint8) * (rng.uniform(size=(17, 19, 23)) < 0.06)
    for lo in (1, 10):  # two isolated 3 x 3 x 3 cubes of label 2: tied for the largest label-2 component
        seg[lo:lo + 5, lo:lo + 5, lo:lo + 5] = 0
        seg[lo + 1:lo + 4, lo + 1:lo + 4, lo + 1:lo + 4] = 2
    seg.tofile(os.path.join(out, "pp_in.u8"))
    apply_postprocessing(seg.copy(), fns, kwargs).astype(np.uint8).tofile(os.path.join(out, "pp_ref.u8"))
    manifest = {"shape": list(seg.shape), "runs": {}}
    for name, *_ in RUNS:
        path = os.path.join(out, f"{name}_fp32_seg.u8")
        if not name.startswith("brain3d") or not os.path.exists(path):
            continue
        with open(os.path.join(out, f"run_{name}.json")) as f:
            shape = json.load(f)["references"]["fp32"]["shape"][1:]
        ref = np.fromfile(path, np.uint8).reshape(shape)
        apply_postprocessing(ref, fns, kwargs).astype(np.uint8).tofile(os.path.join(out, f"{name}_pp_seg.u8"))
        manifest["runs"][name] = f"{name}_pp_seg.u8"
    with open(os.path.join(out, "postprocessing_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


ENSEMBLE = ["brain3d_f0_notta", "brain2d_f01_tta"]  # 3d_fullres + 2d on one case, as find_best_configuration may pick


def write_ensemble(out, weights):
    """nnunetv2's ensemble of ENSEMBLE's fp32 references (their probabilities as npz files, average_probabilities,
    the label manager's segmentation): ensemble_seg.u8, and ensemble.json naming the runs."""
    import tempfile

    from nnunetv2.ensembling.ensemble import average_probabilities
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans, dataset_json, _ = load_trained(weights, "brain_3d_fullres")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name in ENSEMBLE:
            with open(os.path.join(out, f"run_{name}.json")) as f:
                shape = json.load(f)["references"]["fp32"]["shape"]
            files.append(os.path.join(tmp, name + ".npz"))
            np.savez(files[-1], probabilities=np.fromfile(os.path.join(out, f"{name}_fp32_prob.f32"),
                                                          np.float32).reshape(shape))
        probabilities = average_probabilities(files)
    seg = PlansManager(plans).get_label_manager(dataset_json).convert_probabilities_to_segmentation(probabilities)
    np.asarray(seg).astype(np.uint8).tofile(os.path.join(out, "ensemble_seg.u8"))
    with open(os.path.join(out, "ensemble.json"), "w") as f:
        json.dump({"runs": ENSEMBLE, "seg": "ensemble_seg.u8"}, f, indent=1)


def write_bad_inputs(out, cases, tm, weights):
    bad = os.path.join(out, "bad")
    shutil.rmtree(bad, ignore_errors=True)
    brain = cases[501]
    ct = cases[502]

    def folder(name):
        d = os.path.join(bad, name)
        os.makedirs(d)
        return d

    # the two-channel CT model given only channel 0
    shutil.copy(ct[0], os.path.join(folder("missing_channel"), "case_0000.nii.gz"))
    # the one-channel brain model given two channel files
    d = folder("extra_channel")
    shutil.copy(brain[0], os.path.join(d, "case_0000.nii.gz"))
    shutil.copy(brain[0], os.path.join(d, "case_0001.nii.gz"))
    # channel 1 on another grid than channel 0
    d = folder("geometry")
    shutil.copy(ct[0], os.path.join(d, "case_0000.nii.gz"))
    img = nib.load(ct[1])
    arr = np.asarray(img.dataobj)[:, :-2, :]
    tm.save_nifti(os.path.join(d, "case_0001.nii.gz"), arr, tuple(float(z) for z in img.header.get_zooms()),
                  np.float32)
    # channel 1 with another spacing
    d = folder("spacing")
    shutil.copy(ct[0], os.path.join(d, "case_0000.nii.gz"))
    zooms = tuple(float(z) * 1.1 for z in img.header.get_zooms())
    tm.save_nifti(os.path.join(d, "case_0001.nii.gz"), np.asarray(img.dataobj), zooms, np.float32)
    # NaN and Inf voxels
    b = nib.load(brain[0])
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        arr = np.asarray(b.dataobj).astype(np.float32).copy()
        arr[10, 11, 12] = value
        tm.save_nifti(os.path.join(folder(name), "case_0000.nii.gz"), arr,
                      tuple(float(z) for z in b.header.get_zooms()), np.float32)
    # a cascade's previous-stage segmentation on another grid than its case (the brain case, 2 rows fewer)
    name = os.path.basename(brain[0])[:-len("_0000.nii.gz")]
    tm.save_nifti(os.path.join(folder("prev_stage_other_grid"), name + ".nii.gz"),
                  np.zeros(np.asarray(b.dataobj).shape, np.uint8)[:, :-2, :],
                  tuple(float(z) for z in b.header.get_zooms()), np.uint8)
    # a model folder without weights (what an unconverted nnU-Net folder looks like to i3rt)
    d = folder("model_without_weights")
    for f in ("plans.json", "dataset.json"):
        shutil.copy(os.path.join(weights, "brain_3d_fullres", f), d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default=os.environ.get("I3RT_PREDICT_WEIGHTS", os.path.join(ROOT, "weights")))
    ap.add_argument("--only", nargs="+", help="run names to (re)generate; the others are kept as they are")
    args = ap.parse_args()
    args.out, args.weights = os.path.abspath(args.out), os.path.abspath(args.weights)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    tm = load_train_models()

    cases = {}
    for ds in (501, 502):  # deterministic: regenerating gives the same files
        folder = os.path.join(args.out, "cases", str(ds))
        shutil.rmtree(folder, ignore_errors=True)
        (name,) = tm.make_eval_cases(ds, 1, folder)
        cases[ds] = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(name))

    for name in CASCADES:
        if not args.only or any(run[0] in args.only and run[1].startswith(f"cascade/{name}_") for run in RUNS):
            make_cascade(args.weights, name, args.out)
    if not args.only or "brain_regions_tta" in args.only:
        make_regions(args.weights, args.out)
    for name, model, folds, tta, ds, *prev_model in RUNS:
        if args.only and name not in args.only:
            continue
        model_dir = os.path.join(args.out if model.startswith(("cascade/", "regions/")) else args.weights, model)
        entry = dict(name=name, model_dir=model_dir, folds=folds, mirroring=tta, case_dir=os.path.dirname(cases[ds][0]),
                     case=os.path.basename(cases[ds][0])[:-len("_0000.nii.gz")], references={})
        prev_file = None
        if prev_model:
            entry["prev_stage_dir"] = os.path.join(args.out, "cascade", "prev_" + name)
            prev_file = predict_previous_stage(os.path.join(args.out, prev_model[0]), cases[ds],
                                               entry["prev_stage_dir"], entry["case"])
        for mode in ("fp16", "fp32"):
            t0 = time.time()
            seg, prob = predict(model_dir, folds, tta, cases[ds], mode, prev_file)
            secs = time.time() - t0
            seg.astype(np.uint8).tofile(os.path.join(args.out, f"{name}_{mode}_seg.u8"))
            prob.tofile(os.path.join(args.out, f"{name}_{mode}_prob.f32"))
            entry["references"][mode] = dict(seg=f"{name}_{mode}_seg.u8", prob=f"{name}_{mode}_prob.f32",
                                             shape=list(prob.shape), seconds=round(secs, 3))
            print(f"gen_predict: {name} {mode}: nnUNetPredictor {secs:.2f} s, shape {list(prob.shape)}, "
                  f"labels {np.bincount(seg.ravel()).tolist()}", flush=True)
        with open(os.path.join(args.out, f"run_{name}.json"), "w") as f:
            json.dump(entry, f, indent=1)
    write_bad_inputs(args.out, cases, tm, args.weights)
    write_postprocessing(args.out)
    write_ensemble(args.out, args.weights)
    runs = []
    for name, *_ in RUNS:
        path = os.path.join(args.out, f"run_{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append(json.load(f))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
