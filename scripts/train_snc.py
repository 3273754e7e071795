#!/usr/bin/env python3
"""Trains Slice-and-Conquer's two networks on CPU and makes held-out evaluation cases (docs/snc-training.md).

    scripts/train_snc.py 2d [--minutes 30]       # stage A: RITM's HRNet-18s, iterative click training
    scripts/train_snc.py 3d [--minutes 30]       # stage B: the guided 3D network, from stage A's weights
    scripts/train_snc.py calibrate-3d [--shift X] # shift guided3d.pth's output bias (optional: see below)
    scripts/train_snc.py export                  # convert both checkpoints into weights/snc_brain/ (f16)
    scripts/train_snc.py eval-cases [--out DIR]  # held-out NIfTI crops + LIST.tsv for `i3rt snc evaluate`
    common: [--work ~/.cache/i3rt/snc_train] [--threads 2] [--seed 0]; 2d/3d: [--resume] [--lr X];
    3d: [--crop-3d 40]; eval-cases: [--eval-seed N] (validation cases: VALIDATION_SEED)

  1. Cases from real volumes with scripts/train_models.py's sources and deformation (tm.sample_case,
     tm.bias_field: the Colin27 T1 with the whole AAL atlas resampled in place, as train_nninteractive.py does,
     and the InVesalius head CT via tm.make_ct_case). The brain cases use make_brain_case's deformation and
     intensity model on a ~1.5 mm grid instead of its ~3 mm one (brain_case below): at 3 mm a thalamus is
     6 x 10 x 7 voxels, too few for a slice-wise click tool. Objects: the 12 deep grey nuclei (70% of brain
     samples), the brain mask (15%), any AAL region (15%), the CT's bone. Training seeds TRAIN_SEED + i,
     evaluation seeds EVAL_SEED + i (other deformations of the same subject: never seen in training).
  2. Images windowed as the session does (docs/snc.md section 5, "Open"): clamp((x - lo) / (hi - lo), 0, 1),
     lo / hi the 0.5th / 99.5th percentiles of the whole volume the session gets (the case, or a crop of it,
     as the evaluation feeds crops); grey repeated into RITM's 3 channels; the model normalizes (ImageNet).
  3. Stage A (2D, tools/snc_models.HRNetModel, HRNet-18s with OCR width 48: RITM's hrnet18s_cocolvis
     configuration, the smallest HRNet the converter takes, ~4.2 M parameters, trainable on 2 CPU cores):
     RITM's iterative training (isegm/engine/trainer.py batch_forward @ b9b44603): random initial clicks
     from the object (a simplified MultiPointSampler), then 0..3 no-grad iterations in eval mode, each adding
     the evaluation clicker's click at the error (runtime/snc_simulate.c's rule) and feeding the prediction
     back as the previous mask; loss NormalizedFocalLossSigmoid(alpha 0.5, gamma 2) + 0.4 BCE on the aux
     head (RITM's hrnet18s loss). Slices along all 3 axes through the object, resized by a random scale
     (1 or 1.5..5: RITM's ZoomIn enlarges these ~64..110 px slices to 400 px) and cropped to 64 x 64. A
     quarter of the samples start from a non-empty previous mask (a perturbed ground truth, like a slice of
     a 3D prediction) with the clicker's click on its error.
  4. Stage B (3D, GuidedHRNetModel through to_acs, initialized by guided_state_from_2d from stage A):
     40^3 crops around the object, 1..3 annotated slices along random axes (ground-truth masks, sometimes
     perturbed, sometimes an empty background slice), the clicks a user would have made on them, the
     previous 3D prediction empty, a perturbed ground truth or the network's own prediction from the
     earlier masks; loss L_3D = L_seg + 0.5 L_attn (paper Eq. 1; L_seg = NFL + 0.4 BCE aux, L_attn = NFL on
     the mask attention's head), input by guided_input (the C encoder's). calibrate-3d shifts cls_head's bias
     by the value (-4..4, step 0.1) that maximizes the mean Dice of `p > 0.5` on 32 fresh training samples in
     eval mode; the first, short run needed it (no 3D probability reached 0.5), after the longer run it hurt
     the session from the second slice on (docs/snc-training.md), so stage 3d no longer runs it.
  Adam, learning rate on a poly schedule over the elapsed fraction of --minutes (as train_nninteractive.py).
  Checkpoints are RITM's format ({'state_dict', 'config'}) in --work; `export` converts them with
  tools/convert_pt/convert_ritm.py (--dtype f16).

Seeded (torch, numpy, every case and every sample); the wall-time budget decides how many steps are made,
so two runs on a differently loaded machine stop at different steps.
"""
import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # the 2 cores are shared: no spinning OpenMP threads

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_models as tm  # noqa: E402  (sources, deformation, NIfTI writer)
import snc_models as sm  # noqa: E402

TRAIN_SEED = tm.TRAIN_SEED + 100 * 520   # brain i, CT 500 + i; disjoint from the other scripts' seeds
EVAL_SEED = tm.EVAL_SEED + 100 * 520
VALIDATION_SEED = EVAL_SEED + 1000  # cases for choices after training (docs/snc-training.md), never the evaluation's
NET_ARGS = dict(width=18, ocr_width=48, small=True, use_leaky_relu=True, norm_radius=5, use_disks=True,
                with_prev_mask=True)
ATTENTION_HIDDEN = 32
CROP_2D, BATCH_2D = 64, 8
CROP_3D, BATCH_3D = 40, 2
MAX_POINTS = 8            # per sign, padded with -1 (RITM: 24)
PRED_THRESHOLD = 0.49     # RITM's pred_thr (evaluation.py, trainer.get_next_points)
LAMBDA_ATTN = 0.5
DEEP_GREY = {37: "hippocampus_L", 38: "hippocampus_R", 41: "amygdala_L", 42: "amygdala_R", 71: "caudate_L",
             72: "caudate_R", 73: "putamen_L", 74: "putamen_R", 75: "pallidum_L", 76: "pallidum_R",
             77: "thalamus_L", 78: "thalamus_R"}
EVAL_OBJECTS = [77, 78, 71, 72, 73, 74, 37, 38]  # thalamus, caudate, putamen, hippocampus, left and right
WEIGHTS = os.path.join(ROOT, "weights", "snc_brain")
FILES = {"2d": "hrnet18s_2d.safetensors", "3d": "guided3d.safetensors"}


# ---- cases ---------------------------------------------------------------------------------------------

def brain_case(seed):
    """make_brain_case's deformation and intensities on a ~1.5 mm grid: (T1 [x, y, z], AAL labels, spacing)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    if "aal" not in tm._cache:
        tm._cache["aal"] = np.asarray(nib.load(os.path.join(tm.MRICRON, "aal.nii.gz")).dataobj).astype(np.int16)
    t1, _, sp = tm.load_brain_cached()
    spacing = tuple(float(s) for s in np.round(rng.uniform(1.35, 1.65) * rng.uniform(0.95, 1.05, 3), 3))
    fov_mm = np.array([135.0, 165.0, 132.0])
    out_shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing))
    img, aal = tm.sample_case(rng, [(t1, 1, 0.0), (tm._cache["aal"], 0, 0)], sp, np.array([90.0, 110.0, 75.0]),
                              out_shape, spacing, 10, (0.92, 1.08), 8.0)
    brain = img > 0.5
    img = 100.0 * np.clip(img / 133.0, 0, None) ** rng.uniform(0.8, 1.25) * tm.bias_field(rng, out_shape, 0.3)
    img += rng.normal(0, rng.uniform(1.0, 4.0), out_shape)
    img[~brain] = 0.0
    return img.astype(np.float32), aal.astype(np.int16), spacing


def ct_case(seed):
    (hu, _), labels, spacing = tm.make_ct_case(seed)
    return hu, (labels == 2), spacing


def window(volume):
    """The session's windowing (docs/snc.md section 5): 0.5th / 99.5th percentiles of the whole volume."""
    lo, hi = np.percentile(volume, [0.5, 99.5])
    return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def make_cases(n_brain, n_ct):
    cases = []
    for i in range(n_brain):
        img, aal, sp = brain_case(TRAIN_SEED + i)
        ids = [int(k) for k, n in zip(*np.unique(aal, return_counts=True)) if k > 0 and n >= 30]
        cases.append(dict(image=img, aal=aal, ids=ids, windowed=window(img)))
    for i in range(n_ct):
        hu, bone, sp = ct_case(TRAIN_SEED + 500 + i)
        cases.append(dict(image=hu, bone=bone, windowed=window(hu)))
    return cases


def pick_object(rng, case):
    """A bool mask: CT bone; brain mask (15%), a deep grey nucleus (70%), any AAL region (15%; most cortical
    parcels have no visible border, so they are drawn rarely)."""
    if "bone" in case:
        return case["bone"]
    u = rng.random()
    if u < 0.15:
        return case["image"] > 0
    deep = [k for k in DEEP_GREY if k in case["ids"]]
    lab = int(rng.choice(deep)) if u < 0.85 and deep else int(rng.choice(case["ids"]))
    return case["aal"] == lab


def session_volume(rng, case, obj, min_side, max_side):
    """What the session would be given: the whole case (40%) or a crop around the object (windowed on itself,
    as the evaluation's crops are). Returns (windowed image, object) of that volume."""
    if rng.random() < 0.4:
        return case["windowed"], obj
    centre = np.argwhere(obj).mean(0)
    box = []
    for c, n in zip(centre, obj.shape):
        side = min(n, int(rng.integers(min_side, max_side + 1)))
        lo = int(np.clip(round(c - side * rng.uniform(0.3, 0.7)), 0, n - side))
        box.append(slice(lo, lo + side))
    box = tuple(box)
    return window(case["image"][box]), obj[box]


def perturb(gt, rng):
    """A plausible earlier prediction: the truth grown or shrunk, shifted, blurred into soft values."""
    m = gt.astype(bool)
    k = int(rng.integers(-2, 3))
    if k > 0:
        m = ndi.binary_dilation(m, iterations=k)
    elif k < 0:
        eroded = ndi.binary_erosion(m, iterations=-k)
        m = eroded if eroded.any() else m
    m = np.roll(m, tuple(int(s) for s in rng.integers(-2, 3, m.ndim)), axis=tuple(range(m.ndim)))
    soft = ndi.gaussian_filter(m.astype(np.float32), rng.uniform(0.3, 1.5))
    return np.clip(soft * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.1), 0, 1).astype(np.float32)


# ---- clicks ----------------------------------------------------------------------------------------------

def next_click(gt, pred, clicked=()):
    """runtime/snc_simulate.c's (RITM clicker's) rule: the deepest pixel of the false negatives or false
    positives (distance transform of the region padded by one background pixel), positive iff the FN
    maximum is greater; first maximum in row-major order; None when there is no error."""
    out = []
    for region in (gt & ~pred, ~gt & pred):
        dt = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        for y, x in clicked:
            dt[y, x] = 0
        out.append(dt)
    fn, fp = out
    if fn.max() == 0 and fp.max() == 0:
        return None
    positive = fn.max() > fp.max()
    dt = fn if positive else fp
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(y), int(x), bool(positive)


def initial_clicks(rng, gt):
    """A simplified MultiPointSampler: 1..3 positive clicks in the object (the first near its centre half of
    the time), 0..2 negative ones in a band around it. Lists of (y, x)."""
    dt = ndi.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
    inside = np.argwhere(gt)
    pos = []
    for i in range(min(int(rng.geometric(0.55)), 3)):
        pool = np.argwhere(dt > dt.max() / 2) if i == 0 and rng.random() < 0.5 else inside
        pos.append(tuple(int(v) for v in pool[rng.integers(len(pool))]))
    band = ndi.binary_dilation(gt, iterations=int(rng.integers(3, 15))) & ~gt
    neg = []
    if band.any():
        cand = np.argwhere(band)
        for _ in range(min(int(rng.geometric(0.6)) - 1, 2)):
            neg.append(tuple(int(v) for v in cand[rng.integers(len(cand))]))
    return pos, neg


def points_tensor(pos, neg, nd):
    """dist_maps' layout: MAX_POINTS positive then MAX_POINTS negative, (-1, ...) padding."""
    p = np.full((2 * MAX_POINTS, nd), -1.0, np.float32)
    for i, c in enumerate(pos[-MAX_POINTS:]):
        p[i] = c
    for i, c in enumerate(neg[-MAX_POINTS:]):
        p[MAX_POINTS + i] = c
    return p


# ---- losses (isegm/model/losses.py) ------------------------------------------------------------------------

def normalized_focal_loss(logits, label, alpha=0.5, gamma=2, eps=1e-12):
    """NormalizedFocalLossSigmoid (no ignore label), normalized over every spatial axis (2D or 3D); mean over
    the batch."""
    dims = tuple(range(2, logits.dim()))
    one_hot = label > 0.5
    pred = torch.sigmoid(logits)
    a = torch.where(one_hot, torch.full_like(pred, alpha), torch.full_like(pred, 1 - alpha))
    pt = 1.0 - torch.abs(label - pred)
    beta = (1 - pt) ** gamma
    mult = (float(np.prod(label.shape[2:])) / (beta.sum(dims, keepdim=True) + eps)).detach()
    loss = -a * beta * mult * torch.log(torch.clamp(pt + eps, max=1.0))
    return (loss.sum(dims) / np.prod(label.shape[2:])).mean()


def seg_loss(logits, aux, label):
    return normalized_focal_loss(logits, label) + 0.4 * F.binary_cross_entropy_with_logits(aux, label)


# ---- stage A: 2D ---------------------------------------------------------------------------------------------

def take_slice(vol, axis, index):
    return np.take(vol, index, axis=axis)


def resize(plane, size):
    t = torch.from_numpy(np.ascontiguousarray(plane, np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)[0, 0].numpy()


def crop2d(plane, y0, x0, size):
    """plane[y0:y0+size, x0:x0+size], zero outside."""
    out = np.zeros((size, size), np.float32)
    h, w = plane.shape
    ys, xs = slice(max(0, y0), min(h, y0 + size)), slice(max(0, x0), min(w, x0 + size))
    out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = plane[ys, xs]
    return out


def sample_2d(rng, cases):
    """One slice sample at a random scale: (image [96, 96] in [0, 1], truth, prev, positive, negative clicks)."""
    case = cases[rng.integers(len(cases))]
    obj = pick_object(rng, case)
    vol, obj = session_volume(rng, case, obj, 48, 96)
    axis = int(rng.integers(3))
    areas = obj.sum(axis=tuple(a for a in range(3) if a != axis))
    ok = np.flatnonzero(areas >= 4)
    if ok.size == 0:
        ok = np.flatnonzero(areas)
    index = int(rng.choice(ok))
    img, gt = take_slice(vol, axis, index), take_slice(obj, axis, index).astype(np.float32)
    h, w = img.shape
    scale = 1.0 if rng.random() < 0.35 else float(np.exp(rng.uniform(np.log(1.5), np.log(5.0))))
    size = (max(2, round(h * scale)), max(2, round(w * scale)))
    prev = perturb(gt > 0.5, rng) if rng.random() < 0.25 else None
    if size != (h, w):
        img, gt = resize(img, size), resize(gt, size)
        prev = resize(prev, size) if prev is not None else None
    gt = gt > 0.5
    if not gt.any():
        return sample_2d(rng, cases)
    ys, xs = np.nonzero(gt)  # the crop around the object's box centre (objects larger than it are cut)
    y0 = int((ys.min() + ys.max()) / 2 - CROP_2D / 2 + rng.integers(-CROP_2D // 4, CROP_2D // 4 + 1))
    x0 = int((xs.min() + xs.max()) / 2 - CROP_2D / 2 + rng.integers(-CROP_2D // 4, CROP_2D // 4 + 1))
    img, gt = crop2d(img, y0, x0, CROP_2D), crop2d(gt.astype(np.float32), y0, x0, CROP_2D) > 0.5
    if not gt.any():  # a curved object's box centre can lie outside it
        return sample_2d(rng, cases)
    if prev is not None:
        prev = crop2d(prev, y0, x0, CROP_2D)
        click = next_click(gt, prev > PRED_THRESHOLD)
        pos, neg = ([], [])
        if click is not None:
            (pos if click[2] else neg).append(click[:2])
    else:
        pos, neg = initial_clicks(rng, gt)
        prev = np.zeros_like(img)
    return img, gt, prev, pos, neg


def forward_2d(net, images, prevs, points):
    """(logits, aux logits) at the input size, RITM's ISModel.forward path."""
    enc = net.encode(torch.cat([images, prevs], 1), points)
    image, coord = enc[:, :3], enc[:, 3:]
    low, aux = net.feature_extractor(image, net.maps_transform(coord))
    size = image.shape[2:]
    return sm.interpolate(low, size), sm.interpolate(aux, size)


def batch_2d(rng, cases, net):
    samples = [sample_2d(rng, cases) for _ in range(BATCH_2D)]
    images = torch.from_numpy(np.stack([s[0] for s in samples]))[:, None].repeat(1, 3, 1, 1)
    gts = torch.from_numpy(np.stack([s[1] for s in samples]).astype(np.float32))[:, None]
    prevs = torch.from_numpy(np.stack([s[2] for s in samples]))[:, None]
    clicks = [(list(s[3]), list(s[4])) for s in samples]
    points = lambda: torch.from_numpy(np.stack([points_tensor(p, n, 2) for p, n in clicks]))  # noqa: E731
    n_iters = int(rng.integers(0, 3))  # RITM: random.randint(0, max_num_next_clicks = 3); 0..2 for CPU time
    if n_iters:
        net.eval()
        with torch.no_grad():
            for _ in range(n_iters):
                prevs = torch.sigmoid(forward_2d(net, images, prevs, points())[0])
                pred = (prevs[:, 0] > PRED_THRESHOLD).numpy()
                for b, (p, n) in enumerate(clicks):
                    c = next_click(samples[b][1], pred[b], p + n)
                    if c is not None:
                        (p if c[2] else n).append(c[:2])
        net.train()
    return images, prevs, points(), gts


# ---- stage B: 3D ---------------------------------------------------------------------------------------------

def sample_3d(rng, cases, shape, net):
    """One guided sample: (input [8, *shape] by guided_input, truth [1, *shape])."""
    case = cases[rng.integers(len(cases))]
    obj = pick_object(rng, case)
    centre = np.argwhere(obj)[rng.integers(obj.sum())] if rng.random() < 0.5 else np.argwhere(obj).mean(0)
    lo = [int(np.clip(round(c - s / 2 + rng.integers(-6, 7)), 0, n - s)) for c, s, n in zip(centre, shape, obj.shape)]
    box = tuple(slice(a, a + s) for a, s in zip(lo, shape))
    vol, gt = window(case["image"][box]), obj[box]
    if gt.sum() < 8:
        return sample_3d(rng, cases, shape, net)
    masks, pos, neg = [], [], []
    for k in range(int(rng.integers(1, 4))):
        axis = int(rng.integers(3))
        areas = gt.sum(axis=tuple(a for a in range(3) if a != axis))
        if rng.random() < 0.1:
            index = int(rng.integers(gt.shape[axis]))  # may be a background-only slice
        elif k == 0 and rng.random() < 0.5:
            index = int(np.argmax(areas))  # the evaluation's first slice: the largest cross-section
        else:
            index = int(rng.choice(np.flatnonzero(areas)))
        truth = take_slice(gt, axis, index)
        plane = truth if rng.random() < 0.8 else perturb(truth, rng) > 0.5
        masks.append((axis, index, plane.astype(np.uint8)))
        if truth.any():  # the clicks that made this mask, in voxels
            p2, n2 = initial_clicks(rng, truth)
            for clicks, out in ((p2, pos), (n2, neg)):
                for y, x in clicks:
                    v = [y, x]
                    v.insert(axis, index)
                    out.append(tuple(float(c) for c in v))
    points = torch.from_numpy(points_tensor(pos, neg, 3))[None]
    volume = torch.from_numpy(vol)
    u = rng.random()
    prev = torch.zeros(shape)
    if u < 0.3:
        prev = torch.from_numpy(perturb(gt, rng))
    elif u < 0.6 and len(masks) > 1:  # the network's own earlier prediction, from the masks before the last
        net.eval()
        with torch.no_grad():
            x = sm.guided_input(volume, prev, points, masks[:-1])
            prev = torch.sigmoid(net(x)["instances"])[0, 0]
        net.train()
    x = sm.guided_input(volume, prev, points, masks)
    return x[0], torch.from_numpy(gt.astype(np.float32))[None]


def batch_3d(rng, cases, net, crop=CROP_3D):
    chosen = [cases[rng.integers(len(cases))] for _ in range(BATCH_3D)]
    shape = tuple(min(crop, min(c["image"].shape[a] for c in chosen)) for a in range(3))
    xs, ys = zip(*(sample_3d(rng, [c], shape, net) for c in chosen))
    return torch.stack(xs), torch.stack(ys)


# ---- training loop -------------------------------------------------------------------------------------------

def config():
    return {"class": "isegm.model.is_hrnet_model.HRNetModel",
            "params": {k: {"type": "builtin", "value": v, "specified": True} for k, v in NET_ARGS.items()}}


def save(path, net, extra):
    tmp = path + ".tmp"
    torch.save({"state_dict": net.state_dict(), "config": extra}, tmp)
    os.replace(tmp, path)


def train(net, step, minutes, lr, out, cfg, log):
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    budget, t0, it, running, last_save = minutes * 60.0, time.time(), 0, [], time.time()
    net.train()
    while time.time() - t0 < budget:
        frac = min((time.time() - t0) / budget, 0.999)
        for g in opt.param_groups:
            g["lr"] = lr * (1 - frac) ** 0.9
        loss, parts = step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
        running.append([loss.item()] + parts)
        if it % 10 == 0:
            m = np.mean(running, 0)
            log(f"it {it} {time.time() - t0:.0f} s lr {opt.param_groups[0]['lr']:.2e} loss "
                + " ".join(f"{v:.4f}" for v in m))
            running = []
        if time.time() - last_save > 300:
            save(out, net, cfg)
            last_save = time.time()
    save(out, net, cfg)
    log(f"done: {it} iterations in {time.time() - t0:.0f} s -> {out}")


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


def resume_from(path, log):
    """The state of the stage's checkpoint, which is kept as <name>_before_resume.pth (the new run overwrites
    path). Adam's moments are not saved, so a resumed run starts them afresh (a warm restart of the schedule)."""
    state = torch.load(path, map_location="cpu")["state_dict"]
    kept = path.replace(".pth", "_before_resume.pth")
    os.replace(path, kept)
    log(f"resuming from {path} (kept as {kept})")
    return state


def stage_2d(args, log):
    rng = np.random.default_rng(args.seed)
    cases = make_cases(args.cases[0], args.cases[1])
    log(f"{len(cases)} cases made")
    net = sm.HRNetModel(**NET_ARGS)
    out = os.path.join(args.work, "hrnet18s_2d.pth")
    if args.resume:
        net.load_state_dict(resume_from(out, log))
    else:
        # RITM starts the click branch's ScaleLayer at 0.05 next to an ImageNet-pretrained backbone; from
        # scratch that kept the clicks too faint (first run: loss flat at 0.45, no foreground after 120 steps)
        net.maps_transform[3].scale.data.fill_(1.0)

    def step():
        images, prevs, points, gts = batch_2d(rng, cases, net)
        logits, aux = forward_2d(net, images, prevs, points)
        with torch.no_grad():
            d = np.mean([dice(a, b) for a, b in zip((logits[:, 0] > 0).numpy(), gts[:, 0].numpy() > 0.5)])
        return seg_loss(logits, aux, gts), [float(d)]

    train(net, step, args.minutes, args.lr or 1e-3, out, config(), log)


def guided_acs(model):
    """to_acs, and OCR's Dropout2d (which to_acs leaves; it warns on 5-D input) replaced by Dropout3d."""
    net = sm.to_acs(model)
    for m in net.modules():
        for name, child in m.named_children():
            if isinstance(child, torch.nn.Dropout2d):
                setattr(m, name, torch.nn.Dropout3d(child.p))
    return net


def stage_3d(args, log):
    rng = np.random.default_rng(args.seed + 1)
    cases = make_cases(args.cases[0], args.cases[1])
    log(f"{len(cases)} cases made")
    out = os.path.join(args.work, "guided3d.pth")
    model = sm.GuidedHRNetModel(attention_hidden=ATTENTION_HIDDEN, **NET_ARGS)
    if not args.resume:
        state_2d = torch.load(os.path.join(args.work, "hrnet18s_2d.pth"), map_location="cpu")["state_dict"]
        model.load_state_dict(sm.guided_state_from_2d(state_2d, model))
    net = guided_acs(model)
    if args.resume:
        net.load_state_dict(resume_from(out, log))

    def step():
        x, y = batch_3d(rng, cases, net, args.crop_3d)
        out = net(x)
        l_seg = seg_loss(out["instances"], out["instances_aux"], y)
        l_attn = normalized_focal_loss(out["attention"], y)
        with torch.no_grad():
            d = np.mean([dice(a, b) for a, b in zip((out["instances"][:, 0] > 0).numpy(), y[:, 0].numpy() > 0.5)])
        return l_seg + LAMBDA_ATTN * l_attn, [l_seg.item(), l_attn.item(), float(d)]

    cfg = {"class": "snc_models.GuidedHRNetModel", "params": dict(NET_ARGS, attention_hidden=ATTENTION_HIDDEN)}
    train(net, step, args.minutes, args.lr or 5e-4, out, cfg, log)


def calibrate_3d(net, rng, cases, log, batches=16):
    """The shift of cls_head's bias with which `p > 0.5` gives the best mean Dice on fresh training samples in
    eval mode. The normalized focal loss leaves the 3D network's probabilities low (after the first run no voxel
    of a held-out crop reached 0.5 although the training Dice was ~0.2), and the session thresholds at 0.5."""
    net.eval()
    logits, truths = [], []
    with torch.no_grad():
        for _ in range(batches):
            x, y = batch_3d(rng, cases, net)
            net.eval()
            logits += list(net(x)["instances"][:, 0].numpy())
            truths += list(y[:, 0].numpy() > 0.5)
    shifts = np.round(np.arange(-4.0, 4.01, 0.1), 1)
    score = [np.mean([dice(lg + b > 0, t) for lg, t in zip(logits, truths)]) for b in shifts]
    best = float(shifts[int(np.argmax(score))])
    log(f"calibration on {len(logits)} training samples: mean Dice {score[list(shifts).index(0.0)]:.3f} at shift 0, "
        f"{max(score):.3f} at shift {best:+.1f}")
    return best


def stage_calibrate(args, log):
    """Shifts an existing guided3d.pth's output bias, keeping the original as guided3d_uncalibrated.pth: by
    --shift (a value chosen with the session on the validation cases), else by calibrate_3d's search."""
    path = os.path.join(args.work, "guided3d.pth")
    ckpt = torch.load(path, map_location="cpu")
    net = guided_acs(sm.GuidedHRNetModel(attention_hidden=ATTENTION_HIDDEN, **NET_ARGS))
    net.load_state_dict(ckpt["state_dict"])
    shift = args.shift
    if shift is None:
        shift = calibrate_3d(net, np.random.default_rng(args.seed + 2), make_cases(args.cases[0], args.cases[1]), log)
    os.replace(path, path.replace(".pth", "_uncalibrated.pth"))
    net.feature_extractor.cls_head.bias.data += shift
    save(path, net, ckpt["config"])
    log(f"cls_head's bias shifted by {shift:+.2f} -> {path}")


def export(args, log):
    os.makedirs(WEIGHTS, exist_ok=True)
    conv = os.path.join(ROOT, "tools", "convert_pt", "convert_ritm.py")
    for stage, flags in (("2d", []), ("3d", ["--acs", "--guided"])):
        src = os.path.join(args.work, FILES[stage].replace(".safetensors", ".pth"))
        dst = os.path.join(WEIGHTS, FILES[stage])
        subprocess.run([sys.executable, conv, src, "--out", dst, "--dtype", "f16"] + flags, check=True)
        log(f"{dst}: {os.path.getsize(dst)} bytes")


def eval_cases(args, log):
    """Held-out cases: ~64^3 crops (about 96 mm) centred on 8 deep grey structures, one per unseen deformation
    (seed --eval-seed + i: EVAL_SEED, or VALIDATION_SEED for the validation cases), and one head CT (bone) at
    its own ~6 x 1.8 x 1.8 mm grid; LIST.tsv for the CLI."""
    out = args.out or os.path.join(args.work, "eval")
    os.makedirs(out, exist_ok=True)
    rows = []
    for i, lab in enumerate(EVAL_OBJECTS):
        img, aal, sp = brain_case(args.eval_seed + i)
        obj = aal == lab
        centre = np.round(np.argwhere(obj).mean(0)).astype(int)
        box = tuple(slice(int(np.clip(c - 32, 0, n - 64)), int(np.clip(c - 32, 0, n - 64)) + 64)
                    for c, n in zip(centre, obj.shape))
        name = f"{DEEP_GREY[lab]}_{args.eval_seed + i}"
        tm.save_nifti(os.path.join(out, name + "_img.nii.gz"), img[box], sp, np.float32)
        tm.save_nifti(os.path.join(out, name + "_gt.nii.gz"), obj[box], sp, np.uint8)
        rows.append(name)
        log(f"{name}: {img[box].shape}, {int(obj[box].sum())} voxels, spacing {sp}")
    hu, bone, sp = ct_case(args.eval_seed + 500)
    name = f"ct_bone_{args.eval_seed + 500}"
    tm.save_nifti(os.path.join(out, name + "_img.nii.gz"), hu, sp, np.float32)
    tm.save_nifti(os.path.join(out, name + "_gt.nii.gz"), bone, sp, np.uint8)
    rows.append(name)
    log(f"{name}: {hu.shape}, {int(bone.sum())} voxels, spacing {sp}")
    with open(os.path.join(out, "LIST.tsv"), "w") as f:
        for name in rows:
            f.write(f"{name}\t{name}_img.nii.gz\t{name}_gt.nii.gz\n")
    log(f"wrote {os.path.join(out, 'LIST.tsv')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("2d", "3d", "calibrate-3d", "export", "eval-cases"))
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/i3rt/snc_train"))
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of the stage")
    ap.add_argument("--cases", type=int, nargs=2, default=[24, 4], metavar=("BRAIN", "CT"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="a resumed run needs another seed, or it replays the samples")
    ap.add_argument("--resume", action="store_true", help="2d/3d: continue from the stage's checkpoint in --work")
    ap.add_argument("--lr", type=float, help="2d/3d: peak learning rate (default 1e-3 / 5e-4)")
    ap.add_argument("--crop-3d", type=int, default=CROP_3D, help="3d: training crop side (the session's volumes are larger)")
    ap.add_argument("--shift", type=float, help="calibrate-3d: this output-bias shift instead of the search")
    ap.add_argument("--out", help="eval-cases: output folder (default WORK/eval)")
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED, help=f"eval-cases: first seed (validation: {VALIDATION_SEED})")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    logfile = open(os.path.join(args.work, f"log_{args.stage}.txt"), "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logfile.write(line + "\n")
        logfile.flush()

    log(f"train_snc.py {' '.join(sys.argv[1:])}")
    stages = {"2d": stage_2d, "3d": stage_3d, "calibrate-3d": stage_calibrate, "export": export,
              "eval-cases": eval_cases}
    stages[args.stage](args, log)


if __name__ == "__main__":
    main()
