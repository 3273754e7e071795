#!/usr/bin/env python3
"""Trains a small promptable 3D model with nnInteractive's layout and channel meaning (docs/nninteractive-training.md).

    scripts/train_nninteractive.py [--work DIR] [--out weights/nninteractive_brain] [--minutes 55] [--resume]

nnInteractive's training code is not published (nnInteractive/trainer/nnInteractiveTrainer.py is a stub), so the
prompt simulation here is ours; the encodings are the inference session's (nnInteractive/inference/
inference_session.py), with nnInteractive's own helpers where it has them (PointInteraction_stub for the points,
iterative_3x3_same_padding_pool3d and round_to_nearest_odd for the zoomed-out inputs).

  1. Cases from real volumes via scripts/train_models.py's case makers: make_brain_case (Colin27 T1, seeded random
     deformation, ~3 mm) with the whole AAL atlas resampled in place of its three merged labels, and make_ct_case
     (the InVesalius head CT, its HU channel only). Objects: the brain mask, each AAL region (deep grey nuclei and
     cerebellum drawn more often), the CT's bone and head masks.
  2. nnunetv2's fingerprint extraction and ResEnc planner (nnUNetPlannerResEncM) on a few of these cases, plans
     shrunk to a tiny ResidualEncoderUNet (4 stages, 16..64 features, patch 32^3), nnunetv2's preprocessing (only
     the trainer's bookkeeping reads it: the samples come from the prompt simulator below).
  3. nnInteractiveI3rtTrainer (an nnUNetTrainer subclass): input 1 image channel + 7 interaction channels, 2 classes
     out; every sample is one object with simulated prompts of every kind (points, 2D boxes, scribbles, lassos,
     positive and negative; prev_seg empty, a perturbed ground truth or the network's own earlier prediction),
     older prompts decayed, cropped (and zoomed out) around the newest prompt as the session does.
     Wall-time budget: the learning rate follows nnU-Net's poly schedule over the elapsed fraction of --minutes.
  4. Exports an nnInteractive model folder: inference_info.json, plans.json, dataset.json,
     fold_0/checkpoint_final.pth (trainer_name nnInteractiveTrainer_stub, as released checkpoints name it), and
     converts it with tools/convert_pt/convert_nninteractive.py when that converter exists.

Seeded (torch, numpy, every case and every sample); nnU-Net itself adds no randomness here (no augmentation workers).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from scipy import ndimage as ndi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import train_models as tm  # noqa: E402  (case makers, NIfTI writer)

DATASET_ID, DATASET_NAME = 510, "Dataset510_I3rtNNInteractive"
PLANS_NAME, CONFIGURATION = "nnInteractiveI3rtTinyPlans", "3d_fullres"
PATCH, BATCH = [32, 32, 32], 4  # training crops
# The session's patch (plans.json). nnInteractive's refinement tiles leave a 24-voxel margin on each side
# (inference_session._plan_refinement_bboxes), so a patch of 48 or less covers nothing and its random fallback
# fails: the plans give 64, and every BIG_EVERY-th training batch is one 64^3 crop so the network knows that
# field of view (mostly zero padding around these ~45 x 55 x 44 images).
INFER_PATCH, BIG_EVERY = [64, 64, 64], 4
ARCH = dict(n_stages=4, features_per_stage=[16, 32, 48, 64], n_blocks_per_stage=[1, 1, 2, 2],
            n_conv_per_stage_decoder=[1, 1, 1], kernel_sizes=[[3, 3, 3]] * 4,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
POINT_RADIUS, DECAY = 2, 0.9  # ~3 mm voxels: a radius-2 ball is 5 voxels wide

# nnInteractive's default capability mapping (the session's _legacy_default_capability)
CHANNELS = {"prev_seg": 0, "bbox2d": (1, 2), "lasso": (1, 2), "points": (3, 4), "scribble": (5, 6)}
N_INTERACTION = 7
INFERENCE_INFO = {
    "inference_class": "nnInteractiveInferenceSession",
    "point_radius": POINT_RADIUS,
    "preferred_scribble_thickness": [1, 1, 1],
    "interaction_decay": DECAY,
    "pad_mode_image": "constant",
    "supported_interactions": {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False},
    "supports_initial_label": True,
    "supports_zero_shot_label_refinement": True,
    "interaction_channels": N_INTERACTION - 1,
    "channel_mapping": {"prev_seg": 0, "bbox2d": [1, 2], "lasso": [1, 2], "points": [3, 4], "scribble": [5, 6]},
}

# seeds: disjoint from train_models.py's (1000 + 100 * dataset + i, 900000 + ...)
TRAIN_SEED = tm.TRAIN_SEED + 100 * DATASET_ID   # brain i, CT 500 + i
VAL_SEED = TRAIN_SEED + 900                      # nnU-Net's per-epoch pseudo Dice
EVAL_SEED = tm.EVAL_SEED + 100 * DATASET_ID      # held out: tools/ni_evaluate.py
VALIDATION_SEED = EVAL_SEED + 3000              # choosing checkpoints: tools/ni_evaluate.py --seed
DEEP_GREY = (37, 38, 41, 42, 71, 72, 73, 74, 75, 76, 77, 78)  # hippocampus, amygdala, caudate, putamen, pallidum, thalamus
CEREBELLUM = {"cerebellum_L": range(91, 108, 2), "cerebellum_R": range(92, 109, 2), "vermis": range(109, 117)}
AAL_NAMES = {37: "hippocampus_L", 38: "hippocampus_R", 41: "amygdala_L", 42: "amygdala_R", 71: "caudate_L",
             72: "caudate_R", 73: "putamen_L", 74: "putamen_R", 75: "pallidum_L", 76: "pallidum_R",
             77: "thalamus_L", 78: "thalamus_R"}


# ---- cases ---------------------------------------------------------------------------------------------

def use_whole_aal():
    """Makes tm.make_brain_case resample the whole AAL atlas (116 regions, fits uint8) instead of its 3 labels."""
    import nibabel as nib
    if tm._cache.get("brain_is_aal"):
        return
    t1, _, spacing = tm.load_brain()
    aal = np.asarray(nib.load(os.path.join(tm.MRICRON, "aal.nii.gz")).dataobj).astype(np.int16)
    tm._cache["brain"] = (t1, aal, spacing)
    tm._cache["brain_is_aal"] = True


def normalize_like_session(img):
    """The session's normalization: mean/std (N-1) over the nonzero bounding box, applied to the whole image."""
    nz = np.nonzero(img)
    box = tuple(slice(a.min(), a.max() + 1) for a in nz)
    crop = img[box].astype(np.float64)
    return ((img - crop.mean()) / crop.std(ddof=1)).astype(np.float32)


def brain_case(seed):
    """(T1 [x, y, z] float32, {object name: bool mask}, spacing); objects: brain and every AAL region present."""
    use_whole_aal()
    img, aal, spacing = tm.make_brain_case(seed)
    objects = {"brain": img > 0}
    for lab in np.unique(aal)[1:]:
        objects[AAL_NAMES.get(int(lab), f"aal{int(lab)}")] = aal == lab
    for name, labs in CEREBELLUM.items():
        objects[name] = np.isin(aal, list(labs))
    return img, objects, spacing


def ct_case(seed):
    """(CT HU [x, y, z] float32, {bone, head}, spacing) from tm.make_ct_case (its first channel)."""
    (hu, _), labels, spacing = tm.make_ct_case(seed)
    return hu, {"bone": labels == 2, "head": labels >= 1}, spacing


def make_cases(seed0, n_brain, n_ct):
    cases = []
    for i in range(n_brain):
        img, objs, sp = brain_case(seed0 + i)
        cases.append(dict(name=f"brain{seed0 + i}", image=normalize_like_session(img), objects=objs, spacing=sp))
    for i in range(n_ct):
        img, objs, sp = ct_case(seed0 + 500 + i)
        cases.append(dict(name=f"ct{seed0 + 500 + i}", image=normalize_like_session(img), objects=objs, spacing=sp))
    return cases


def pick_object(rng, case):
    objs = case["objects"]
    if "bone" in objs:
        return str(rng.choice(["bone", "head"], p=[0.7, 0.3]))
    u = rng.random()
    deep = [AAL_NAMES[k] for k in DEEP_GREY if AAL_NAMES[k] in objs and objs[AAL_NAMES[k]].sum() >= 8]
    if u < 0.15:
        return "brain"
    if u < 0.6 and deep:
        return str(rng.choice(deep))
    if u < 0.7:
        return str(rng.choice(list(CEREBELLUM)))
    big = [k for k, v in objs.items() if v.sum() >= 8]
    return str(rng.choice(big))


# ---- prompts: geometry (what a user gives) ----------------------------------------------------------------
# A prompt is a dict: kind (point, bbox2d, scribble, lasso), positive, and point: [x, y, z] | box: [[lo, hi]] * 3
# (one axis of size 1) | mask: bool volume. The evaluation (tools/ni_evaluate.py) gives the session the same ones.

def largest_error(gt, seg, rng=None):
    """(region, positive) of the largest connected error (rng: sometimes another one, weighted by size)."""
    found = []  # (size, labels, label, positive) per connected error
    for err, positive in ((gt & ~seg, True), (seg & ~gt, False)):
        lab, n = ndi.label(err)
        if n:
            found += [(s, lab, i + 1, positive) for i, s in enumerate(np.bincount(lab.ravel())[1:])]
    if not found:
        return None, True
    sizes = np.array([f[0] for f in found], float)
    if rng is not None and rng.random() < 0.3:
        k = int(rng.choice(len(found), p=sizes / sizes.sum()))
    else:
        k = int(np.argmax(sizes))
    _, lab, i, positive = found[k]
    return lab == i, positive


def centre_voxel(region):
    """The voxel deepest inside the region (maximum of its distance transform): 'the centre of the error'."""
    edt = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1, 1:-1]
    return [int(i) for i in np.unravel_index(np.argmax(edt), region.shape)]


def slice_through(region, rng=None):
    """(axis, index) of a slice through the region: its largest cross-section (rng: sometimes a random one)."""
    axis = int(rng.integers(3)) if rng is not None else int(np.argmin(region.shape))
    areas = region.sum(axis=tuple(a for a in range(3) if a != axis))
    if rng is not None and rng.random() < 0.5:
        idx = int(rng.choice(np.flatnonzero(areas)))
    else:
        idx = int(np.argmax(areas))
    return axis, idx


def in_slice(mask, axis, idx):
    out = np.zeros_like(mask)
    sl = [slice(None)] * 3
    sl[axis] = idx
    out[tuple(sl)] = mask[tuple(sl)]
    return out


def component_at(mask2d_vol, seed_region):
    """The connected parts of a one-slice mask that touch seed_region (all of it if none touch)."""
    lab, n = ndi.label(mask2d_vol)
    ids = np.unique(lab[seed_region & mask2d_vol])
    ids = ids[ids > 0]
    return np.isin(lab, ids) if ids.size else mask2d_vol


def make_prompt(kind, gt, region, positive, rng=None):
    """A prompt of `kind` for the error `region` (positive: missing object; negative: false positive).
    rng None: the deterministic simulated user of the evaluation; else random variations for training."""
    axis, idx = slice_through(region, rng)
    if kind == "point":
        if rng is None or rng.random() < 0.6:
            p = centre_voxel(region)
        else:
            vox = np.argwhere(region)
            p = [int(i) for i in vox[rng.integers(len(vox))]]
        return dict(kind=kind, positive=positive, point=p)
    # boxes and lassos enclose the object's cross-section (positive) or the false positive's (negative)
    area = component_at(in_slice(gt, axis, idx), in_slice(region, axis, idx)) if positive else in_slice(region, axis, idx)
    if kind == "bbox2d":
        nz = np.nonzero(area)
        box = [[int(a.min()), int(a.max()) + 1] for a in nz]
        if rng is not None:
            for d in range(3):
                if d != axis:
                    box[d] = [max(0, box[d][0] + int(rng.integers(-1, 2))),
                              min(gt.shape[d], box[d][1] + int(rng.integers(-1, 2)))]
                    if box[d][1] <= box[d][0]:
                        box[d][1] = box[d][0] + 1
        return dict(kind=kind, positive=positive, box=box)
    sl = [slice(None)] * 3
    sl[axis] = idx
    a2 = area[tuple(sl)]
    if kind == "lasso":
        # a closed contour drawn around the cross-section, filled: slightly outside it, holes filled
        grow = 1 if rng is None else int(rng.integers(0, 2))
        if grow:
            a2 = ndi.binary_dilation(a2, iterations=grow)
        if rng is not None and rng.random() < 0.3:
            from skimage.morphology import convex_hull_image
            a2 = convex_hull_image(a2)
        a2 = ndi.binary_fill_holes(a2)
    else:  # scribble: a stroke along the middle of the cross-section of the error, 1-2 voxels wide
        from skimage.morphology import skeletonize
        r2 = in_slice(region, axis, idx)[tuple(sl)]
        er = ndi.binary_erosion(r2)
        stroke = skeletonize(er if er.any() else r2)
        if rng is not None and rng.random() < 0.4:  # only part of it
            ys, xs = np.nonzero(stroke)
            c = int(rng.integers(len(ys)))
            half = max(2, int(rng.integers(2, 8)))
            keep = np.zeros_like(stroke)
            keep[max(0, ys[c] - half):ys[c] + half + 1, max(0, xs[c] - half):xs[c] + half + 1] = True
            stroke &= keep
        if rng is not None and rng.random() < 0.4:
            stroke = ndi.binary_dilation(stroke) & ndi.binary_dilation(r2)
        a2 = stroke if stroke.any() else r2
    mask = np.zeros(gt.shape, bool)
    mask[tuple(sl)] = a2
    return dict(kind=kind, positive=positive, mask=mask)


def prompt_box(prompt):
    """The box the session centres the patch on (bbox of the prompt; a point: itself, zoom 1)."""
    if prompt["kind"] == "point":
        return None
    if prompt["kind"] == "bbox2d":
        return prompt["box"]
    nz = np.nonzero(prompt["mask"])
    return [[int(a.min()), int(a.max()) + 1] for a in nz]


def centre_and_zoom(prompt, patch):
    """The session's _add_patch_for_point/bbox_interaction and _generic_add_patch_from_image."""
    box = prompt_box(prompt)
    if box is None:
        return list(prompt["point"]), 1.0
    centre = [round((a + b) / 2) for a, b in box]
    requested = [(b - a) + p // 3 for (a, b), p in zip(box, patch)]
    return centre, max(1.0, max(r / p for r, p in zip(requested, patch)))


# ---- prompts: encoding (what the session writes into the interaction channels) ------------------------------

_point = None


def point_encoder():
    global _point
    if _point is None:
        from nnInteractive.interaction.point import PointInteraction_stub
        _point = PointInteraction_stub(POINT_RADIUS, use_distance_transform=True)
    return _point


def encode(prompts, shape, prev_seg):
    """Interaction channels [7, *shape] as the network sees them: prompts oldest first, the newest at intensity 1,
    each older one decay^k (the session stores them multiplied by a growing intensity and divides at input);
    points: max of a normalized distance ball, boxes: assigned, scribbles/lassos: max; fp16 like the session."""
    import torch
    ch = torch.zeros((N_INTERACTION, *shape), dtype=torch.float32)
    ch[CHANNELS["prev_seg"]] = torch.from_numpy(prev_seg.astype(np.float32))
    n = len(prompts)
    for i, p in enumerate(prompts):
        scale = DECAY ** (n - 1 - i)
        c = CHANNELS[p["kind"] if p["kind"] != "point" else "points"][0 if p["positive"] else 1]
        if p["kind"] == "point":
            point_encoder().place_point(p["point"], ch[c], intensity_scale=scale)
        elif p["kind"] == "bbox2d":
            ch[c][tuple(slice(a, b) for a, b in p["box"])] = scale
        else:
            torch.maximum(ch[c], torch.from_numpy(p["mask"].astype(np.float32)) * scale, out=ch[c])
    return ch.half().float()


def crop_padded(t, centre, size):
    """t[..., c - s//2 : c + s//2 + s%2] per spatial axis, zero outside (the session's crop_to_valid + pad)."""
    import torch
    lo = [c - s // 2 for c, s in zip(centre, size)]
    out = torch.zeros((*t.shape[:-3], *size), dtype=t.dtype)
    src, dst = [], []
    for l, s, n in zip(lo, size, t.shape[-3:]):
        a, b = max(l, 0), min(l + s, n)
        if b <= a:
            return out, lo
        src.append(slice(a, b))
        dst.append(slice(a - l, b - l))
    out[(..., *dst)] = t[(..., *src)]
    return out, lo


def network_input(image, channels, centre, zoom, patch):
    """Image and interaction channels cropped around centre at the zoom-out factor and resampled to the patch
    as the session's _build_network_input does (image trilinear; point and scribble channels max-pooled, then
    every interaction channel area-resampled)."""
    import torch
    from torch.nn.functional import interpolate
    from nnInteractive.utils.erosion_dilation import iterative_3x3_same_padding_pool3d
    from nnInteractive.utils.rounding import round_to_nearest_odd
    scaled = [round(p * zoom) for p in patch]
    img, lo = crop_padded(torch.from_numpy(image)[None], centre, scaled)
    inter, _ = crop_padded(channels, centre, scaled)
    if scaled != list(patch):
        img = interpolate(img[None], patch, mode="trilinear")[0]
        k = round_to_nearest_odd(zoom * 2 - 1)
        inter = inter.half()
        out = torch.empty((N_INTERACTION, *patch), dtype=torch.float16)
        for c in range(N_INTERACTION):
            x = inter[c:c + 1]
            if k > 1 and c in (3, 4, 5, 6):
                x = iterative_3x3_same_padding_pool3d(x[None], k)[0]
            out[c:c + 1] = interpolate(x[None], patch, mode="area")[0]
        inter = out.float()
    return torch.cat((img, inter)), scaled, lo


# ---- training samples -------------------------------------------------------------------------------------

KINDS, KIND_P = ("point", "bbox2d", "scribble", "lasso"), (0.35, 0.2, 0.25, 0.2)


def perturb(gt, rng):
    """A plausible wrong segmentation of gt: eroded/dilated, shifted, a piece cut out, a blob added."""
    m = gt.copy()
    if rng.random() < 0.5:
        it = int(rng.integers(1, 3))
        m = ndi.binary_erosion(m, iterations=it) if rng.random() < 0.5 else ndi.binary_dilation(m, iterations=it)
    if rng.random() < 0.3:
        m = np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(3)))
    vox = np.argwhere(gt)
    grid = np.indices(gt.shape)
    for _ in range(int(rng.integers(0, 3))):
        c = vox[rng.integers(len(vox))] + rng.integers(-3, 4, 3)
        r = rng.uniform(1.5, 2 + 0.3 * len(vox) ** (1 / 3))
        ball = ((grid - c[:, None, None, None]) ** 2).sum(0) <= r * r
        m = m & ~ball if rng.random() < 0.5 else m | ball
    if not m.any() or rng.random() < 0.1:
        m = np.zeros_like(gt)
    return m


def sample(case, rng, patch, predict=None):
    """One training sample: (input [8, *patch] float32, target [1, *patch] float32)."""
    import torch
    gt = case["objects"][pick_object(rng, case)]
    shape = gt.shape
    kind = lambda: str(rng.choice(KINDS, p=KIND_P))
    n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
    mode = str(rng.choice(["empty", "perturbed"], p=[0.6, 0.4])) if n == 1 else \
        str(rng.choice(["perturbed", "model"], p=[0.6, 0.4]) if predict else "perturbed")
    empty = np.zeros(shape, bool)
    prompts = []
    if mode != "perturbed" or n > 1:  # the first prompt: on the object, positive
        prompts.append(make_prompt(kind(), gt, gt, True, rng))
    for _ in range(n - 2):  # intermediate corrections of intermediate (simulated) results
        region, pos = largest_error(gt, perturb(gt, rng), rng)
        if region is not None:
            prompts.append(make_prompt(kind(), gt, region, pos, rng))
    prev = empty
    if mode == "perturbed":
        prev = perturb(gt, rng)
    elif mode == "model":  # the network's own prediction after the prompts so far, pasted like the session does
        centre, zoom = centre_and_zoom(prompts[-1], patch)
        x, scaled, lo = network_input(case["image"], encode(prompts, shape, empty), centre, zoom, patch)
        pred = predict(x)
        if scaled != list(patch):
            pred = (torch.nn.functional.interpolate(pred[None, None].float(), scaled, mode="trilinear")[0, 0] >= 0.5)
        prev = np.zeros(shape, bool)
        src = tuple(slice(max(0, -l), min(s, n_ - l)) for l, s, n_ in zip(lo, scaled, shape))
        dst = tuple(slice(max(0, l), min(l + s, n_)) for l, s, n_ in zip(lo, scaled, shape))
        prev[dst] = pred.numpy().astype(bool)[src]
    if mode != "empty":
        region, pos = largest_error(gt, prev, rng)
        if region is None:
            region, pos = gt, True
        prompts.append(make_prompt(kind(), gt, region, pos, rng))
    centre, zoom = centre_and_zoom(prompts[-1], patch)
    if rng.random() < 0.25:  # AutoZoom's further zoom-out steps
        zoom = min(4.0, zoom * 1.5 ** int(rng.integers(1, 3)))
    if rng.random() < 0.25:  # refinement tiles are not centred on the prompt
        centre = [c + int(rng.integers(-p // 3, p // 3 + 1)) for c, p in zip(centre, patch)]
    x, scaled, _ = network_input(case["image"], encode(prompts, shape, prev), centre, zoom, patch)
    y, _ = crop_padded(torch.from_numpy(gt.astype(np.float32))[None], centre, scaled)
    if scaled != list(patch):
        y = (torch.nn.functional.interpolate(y[None], patch, mode="area")[0] >= 0.5).float()
    return x, y


class PromptBatches:
    """The trainer's data loader: batches of simulated-prompt samples, targets per deep-supervision scale;
    every big_every-th batch (if set) is a single INFER_PATCH crop."""

    def __init__(self, cases, seed, batch, patch, ds_scales, predict=None, big_every=None):
        self.cases, self.rng, self.batch, self.patch = cases, np.random.default_rng(seed), batch, patch
        self.ds_scales, self.predict, self.big_every, self.count = ds_scales, predict, big_every, 0

    def __iter__(self):
        return self

    def __next__(self):
        import torch
        self.count += 1
        big = self.big_every and self.count % self.big_every == 0
        patch, batch = (INFER_PATCH, 1) if big else (self.patch, self.batch)
        xs, ys = zip(*(sample(self.cases[self.rng.integers(len(self.cases))], self.rng, patch, self.predict)
                       for _ in range(batch)))
        x, y = torch.stack(xs), torch.stack(ys)
        if self.ds_scales is None:
            return {"data": x, "target": y}
        targets = [y if all(s == 1 for s in sc) else torch.nn.functional.interpolate(
            y, [round(p * s) for p, s in zip(patch, sc)], mode="nearest") for sc in self.ds_scales]
        return {"data": x, "target": targets}


# ---- nnU-Net: raw data, plans, trainer ------------------------------------------------------------------

def make_raw_dataset(raw_root, n=4):
    """A few brain cases (label: brain mask) for nnunetv2's fingerprint, planner and preprocessing."""
    folder = os.path.join(raw_root, DATASET_NAME)
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(n):
        img, objs, sp = brain_case(TRAIN_SEED + i)
        tm.write_case(os.path.join(folder, "imagesTr"), f"case_{i:03d}", [img], sp)
        os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
        tm.save_nifti(os.path.join(folder, "labelsTr", f"case_{i:03d}.nii.gz"), objs["brain"], sp, np.uint8)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "image"}, "labels": {"background": 0, "object": 1}, "numTraining": n,
                   "file_ending": ".nii.gz",
                   "description": "i3rt promptable model, see scripts/train_nninteractive.py"}, f, indent=2)


def shrink_plans(preprocessed_root):
    folder = os.path.join(preprocessed_root, DATASET_NAME)
    with open(os.path.join(folder, "nnUNetResEncUNetMPlans.json")) as f:
        plans = json.load(f)
    plans["plans_name"] = PLANS_NAME
    c = plans["configurations"][CONFIGURATION]
    assert c["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    c.update(patch_size=INFER_PATCH, batch_size=BATCH, data_identifier=f"{PLANS_NAME}_{CONFIGURATION}")
    c["architecture"]["arch_kwargs"].update(ARCH)
    plans["configurations"] = {CONFIGURATION: c}
    with open(os.path.join(folder, PLANS_NAME + ".json"), "w") as f:
        json.dump(plans, f, indent=2)


def make_trainer_class(minutes, state_file, n_train_brain, n_train_ct):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnInteractiveI3rtTrainer(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = 50
            self.num_val_iterations_per_epoch = 2
            self.num_epochs = 10 ** 4  # the wall-time budget ends training
            self.save_every = 1
            self.budget_s = 60.0 * minutes
            self.elapsed_before = 0.0
            if os.path.isfile(state_file):
                with open(state_file) as f:
                    self.elapsed_before = json.load(f)["elapsed_s"]

        @staticmethod
        def build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                       num_output_channels, enable_deep_supervision=True):
            # image channels + the interaction channels; always 2 outputs (object / background)
            return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager,
                                                            num_input_channels + N_INTERACTION, 2,
                                                            enable_deep_supervision)

        def plot_network_architecture(self):
            pass

        def elapsed(self):
            return self.elapsed_before + time.time() - self.t0

        def predict_mask(self, x):
            with torch.no_grad():
                out = self.network(x[None])
            return (out[0] if isinstance(out, (list, tuple)) else out)[0].argmax(0)

        def get_dataloaders(self):
            scales = self._get_deep_supervision_scales() if self.enable_deep_supervision else None
            train = make_cases(TRAIN_SEED, n_train_brain, n_train_ct)
            val = make_cases(VAL_SEED, 2, 1)
            self.print_to_log_file(f"{len(train)} training cases, {len(val)} validation cases")
            return (PromptBatches(train, TRAIN_SEED + self.current_epoch, BATCH, PATCH, scales,
                                  self.predict_mask, BIG_EVERY),
                    PromptBatches(val, VAL_SEED, BATCH, PATCH, scales))

        def on_train_epoch_start(self):
            super().on_train_epoch_start()
            frac = min(self.elapsed() / self.budget_s, 0.999)  # poly schedule over wall time, not epochs
            for g in self.optimizer.param_groups:
                g["lr"] = self.initial_lr * (1 - frac) ** 0.9
            self.print_to_log_file(f"lr {self.optimizer.param_groups[0]['lr']:.5f}, {self.elapsed():.0f} s")

        def on_epoch_end(self):
            super().on_epoch_end()
            with open(state_file, "w") as f:
                json.dump({"elapsed_s": self.elapsed(), "epochs": self.current_epoch}, f)

        def run_training(self):
            self.t0 = time.time()
            self.on_train_start()
            while self.current_epoch < self.num_epochs and self.elapsed() < self.budget_s:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    outs = [self.validation_step(next(self.dataloader_val))
                            for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(outs)
                self.on_epoch_end()
            self.on_train_end()

    return nnInteractiveI3rtTrainer


def export(model_dir, out_dir):
    import torch
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.join(out_dir, "fold_0"))
    for name in ("dataset.json", "plans.json"):
        shutil.copy(os.path.join(model_dir, name), out_dir)
    with open(os.path.join(out_dir, "inference_info.json"), "w") as f:
        json.dump(INFERENCE_INFO, f, indent=2)
    ckpt = torch.load(os.path.join(model_dir, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)
    init_args = dict(ckpt["init_args"], device="cpu")
    slim = {"network_weights": ckpt["network_weights"], "init_args": init_args,
            "trainer_name": "nnInteractiveTrainer_stub",  # builds the same network; the session finds it
            "current_epoch": ckpt["current_epoch"],
            "inference_allowed_mirroring_axes": ckpt.get("inference_allowed_mirroring_axes")}
    torch.save(slim, os.path.join(out_dir, "fold_0", "checkpoint_final.pth"))
    conv = os.path.join(ROOT, "tools/convert_pt/convert_nninteractive.py")
    if os.path.isfile(conv):
        subprocess.run([sys.executable, conv, out_dir, "--out", out_dir], check=True)
    else:
        print(f"   {conv} not there yet: folder left unconverted")


def sanity_check(out_dir):
    """nnInteractive's own session loads the folder and segments a held-out caudate from one point."""
    import torch
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
    img, objs, _ = brain_case(EVAL_SEED)
    gt = objs["caudate_L"]
    s = nnInteractiveInferenceSession(device=torch.device("cpu"), torch_n_threads=1, verbose=False)
    s.initialize_from_trained_model_folder(out_dir)
    s.set_image(img[None])
    target = np.zeros(img.shape, np.uint8)
    s.set_target_buffer(target)
    s.add_point_interaction(centre_voxel(gt), include_interaction=True)
    d = 2 * (target.astype(bool) & gt).sum() / (target.astype(bool).sum() + gt.sum())
    print(f"   sanity check: session loads {out_dir}; caudate_L of held-out case {EVAL_SEED} from one point: "
          f"Dice {d:.3f} ({int(target.sum())} voxels, truth {int(gt.sum())})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/i3rt/nninteractive-train"))
    ap.add_argument("--out", default=os.path.join(ROOT, "weights", "nninteractive_brain"))
    ap.add_argument("--minutes", type=float, default=55.0, help="wall-time budget of the training")
    ap.add_argument("--cases", type=int, nargs=2, default=[40, 10], metavar=("BRAIN", "CT"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true",
                    help="continue an earlier run (checkpoint_latest.pth, else checkpoint_final.pth); --minutes is "
                         "the total budget, the earlier run's time included")
    ap.add_argument("--export-only", action="store_true", help="export (and check) the last checkpoint_final.pth")
    args = ap.parse_args()

    for k in ("raw", "preprocessed", "results"):
        os.makedirs(os.path.join(args.work, k), exist_ok=True)
    os.environ.update(nnUNet_raw=os.path.join(args.work, "raw"),
                      nnUNet_preprocessed=os.path.join(args.work, "preprocessed"),
                      nnUNet_results=os.path.join(args.work, "results"), nnUNet_n_proc_DA=str(args.threads),
                      nnUNet_compile="false", nnUNet_def_n_proc=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
    state_file = os.path.join(args.work, "train_state.json")
    model_dir = os.path.join(nnUNet_results, DATASET_NAME, f"nnInteractiveI3rtTrainer__{PLANS_NAME}__{CONFIGURATION}")
    if not args.export_only:
        if not args.resume:
            print("== raw dataset, fingerprint, ResEnc plans (shrunk), preprocessing")
            make_raw_dataset(os.environ["nnUNet_raw"])
            extract_fingerprints([DATASET_ID], num_processes=args.threads, check_dataset_integrity=True)
            plan_experiments([DATASET_ID], "nnUNetPlannerResEncM")
            shrink_plans(nnUNet_preprocessed)
            preprocess([DATASET_ID], PLANS_NAME, [CONFIGURATION], [args.threads], verbose=False)
            if os.path.isfile(state_file):
                os.remove(state_file)
            shutil.rmtree(model_dir, ignore_errors=True)
        with open(os.path.join(nnUNet_preprocessed, DATASET_NAME, PLANS_NAME + ".json")) as f:
            plans = json.load(f)
        with open(os.path.join(nnUNet_preprocessed, DATASET_NAME, "dataset.json")) as f:
            dataset_json = json.load(f)
        plans["continue_training"] = False
        cls = make_trainer_class(args.minutes, state_file, *args.cases)
        trainer = cls(plans, CONFIGURATION, 0, dataset_json, device=torch.device("cpu"))
        if args.resume:  # a stopped run left checkpoint_latest.pth; a finished one only checkpoint_final.pth
            fold = os.path.join(model_dir, "fold_0")
            latest = os.path.join(fold, "checkpoint_latest.pth")
            trainer.load_checkpoint(latest if os.path.isfile(latest) else os.path.join(fold, "checkpoint_final.pth"))
        print("== training")
        trainer.run_training()
    print("== export")
    export(model_dir, args.out)
    sanity_check(args.out)


if __name__ == "__main__":
    main()
