#!/usr/bin/env python3
"""Fixtures for tests/test_ni_zoom.c: nnInteractive's own AutoZoom/refinement functions (nninteractive 2.6.0)
on small random inputs, written as raw little-endian C-order arrays plus DIR/manifest.json.

    gen_ni_zoom.py --out DIR

Cases (kind: what is called):
  input    nnInteractiveInferenceSession._build_network_input(center, zoom) on a CPU session with dense fp16
           interactions (image crop/trilinear, channel crop/area in fp16 with max-pooled point and scribble
           channels, prev_seg nearest, decay normalization); in.f32, prev.u16 (fp16 bits), bbox
  tiles    _refine_coarse_with_local_cache with a stand-in network that records each tile's input and answers
           with a seeded random argmax: the tiles' inputs (the cache's prev_seg: coarse injected, earlier tiles
           pasted) and the final target buffer
  border   _detect_change_at_border(pred, prev_pred) around its thresholds
  upsample F.interpolate(pred.float(), size, mode="trilinear") >= 0.5, as _predict does
  pool     utils.erosion_dilation.iterative_3x3_same_padding_pool3d (min and max, fp16 0/1 maps)
  cover    utils.bboxes.generate_bounding_boxes(stride="auto") after np.random.seed(K)
  plan     _plan_refinement_bboxes(pred, scaled_bbox, force_full_refine) after np.random.seed(K)
  rng      np.random.seed(K) then np.random.choice(n) for several n
"""
import argparse
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
from nnInteractive.utils.bboxes import generate_bounding_boxes
from nnInteractive.utils.erosion_dilation import iterative_3x3_same_padding_pool3d

MAPPING = {"prev_seg": 0, "bbox2d": [1, 2], "lasso": [1, 2], "points": [3, 4], "scribble": [5, 6]}
SUPPORTED = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False}


class Writer:
    def __init__(self, out):
        self.out, self.cases, self.n = out, [], 0

    def array(self, a, ext):
        name = f"a{self.n}.{ext}"
        self.n += 1
        np.ascontiguousarray(a).tofile(os.path.join(self.out, name))
        return name

    def f32(self, a):
        return self.array(np.asarray(a, dtype=np.float32), "f32")

    def u8(self, a):
        return self.array(np.asarray(a, dtype=np.uint8), "u8")

    def f16(self, a):
        return self.array(np.asarray(a, dtype=np.float16).view(np.uint16), "u16")


def session(image, interactions, patch, intensity):
    s = nnInteractiveInferenceSession(device=torch.device("cpu"), interactions_storage="tensor", torch_n_threads=1)
    s.configuration_manager = SimpleNamespace(patch_size=list(patch))
    s.preprocessed_image = torch.from_numpy(image[None].astype(np.float32))
    s.interactions = torch.from_numpy(interactions.astype(np.float16))
    s.num_interaction_channels = interactions.shape[0]
    s.channel_mapping = MAPPING
    s.supported_interactions = SUPPORTED
    s.current_interaction_intensity = intensity
    s.verbose = False
    return s


def random_volume(rng, shape, intensity):
    """image and 7 interaction channels the way the session fills them (values scaled by the intensity)"""
    image = rng.standard_normal(shape).astype(np.float32)
    inter = np.zeros((7, *shape), np.float16)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [rng.integers(0, s) for s in shape]
    inter[0] = ((zz - c[0]) ** 2 / 40 + (yy - c[1]) ** 2 / 60 + (xx - c[2]) ** 2 / 30) < 1  # prev_seg blob
    z = rng.integers(0, shape[0])
    inter[1, z, 3:shape[1] - 4, 2:shape[2] - 5] = intensity / 0.98  # an older box
    for ch, n in ((3, 3), (4, 1)):  # points: balls of a normalized distance map
        for _ in range(n):
            p = [rng.integers(0, s) for s in shape]
            d = np.sqrt((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2)
            ball = np.where(d <= 3, (1 - d / 4) * intensity * rng.choice([1, 0.98]), 0).astype(np.float16)
            inter[ch] = np.maximum(inter[ch], ball)
    y0 = rng.integers(0, shape[1])  # a scribble: a thin curve in one slice
    x = np.arange(shape[2])
    ys = np.clip((y0 + 4 * np.sin(x / 3)).astype(int), 0, shape[1] - 1)
    inter[5, rng.integers(0, shape[0]), ys, x] = intensity
    return image, inter


def gen_input(w, rng):
    shape = (37, 33, 29)
    for i, (patch, zoom, center, intensity, empty) in enumerate([
        ((12, 10, 14), 1.0, (18, 16, 14), 1.0, ()),
        ((12, 10, 14), 1.0, (2, 30, 1), 1 / 0.98 ** 3, ()),
        ((12, 10, 14), 1.5, (18, 16, 14), 1 / 0.98 ** 3, ()),
        ((12, 10, 14), 2.25, (5, 28, 10), 1 / 0.98 ** 2, (2, 6)),
        ((12, 10, 14), 3.375, (18, 3, 25), 1 / 0.98 ** 5, ()),
        ((12, 10, 14), 4.0, (30, 16, 14), 1 / 0.98, (4,)),
        ((9, 11, 10), 1.37, (18, 16, 14), 1 / 0.98 ** 7, ()),
        ((9, 11, 10), 2.9, (0, 0, 0), 1.0, (1, 2)),
        ((9, 11, 10), 1.04, (18, 16, 14), 1 / 0.98, ()),  # round(patch * zoom) == patch: not zoomed
        ((40, 36, 44), 1.0, (40, 30, 50), 1 / 0.98 ** 2, ()),  # large enough for threads
        ((40, 36, 44), 2.9, (60, 30, 50), 1 / 0.98 ** 2, ()),
    ]):
        shape = (37, 33, 29) if patch[0] < 40 else (90, 80, 100)
        image, inter = random_volume(rng, shape, intensity)
        for c in empty:
            inter[c] = 0
        s = session(image, inter, patch, intensity)
        x, scaled, bbox, prev = s._build_network_input(list(center), zoom)
        w.cases.append({"kind": "input", "name": f"input_{i}", "shape": list(shape), "patch": list(patch),
                        "zoom": zoom, "center": list(center), "intensity": intensity,
                        "nonzero": [int(inter[c].any()) for c in range(7)], "dilation": [3, 4, 5, 6],
                        "image": w.f32(image), "interactions": w.f16(inter),
                        "input": w.f32(x.float().numpy()), "prev": w.f16(prev.numpy()),
                        "bbox": [list(map(int, b)) for b in bbox]})


class RecordingNetwork:
    """Stands in for the network in _refine_coarse_with_local_cache: records each tile's input, answers with
    seeded random logits (smooth, so the tiles' predictions differ from the coarse one)."""

    def __init__(self, seed):
        self.inputs, self.preds, self.gen = [], [], torch.Generator().manual_seed(seed)

    def __call__(self, x):
        self.inputs.append(x[0].float().numpy().copy())
        logits = torch.randn((1, 2, *[max(1, s // 4) for s in x.shape[2:]]), generator=self.gen)
        logits = F.interpolate(logits, x.shape[2:], mode="trilinear")
        self.preds.append(logits[0].argmax(0).numpy().astype(np.uint8))
        return logits


def gen_tiles(w, rng):
    shape, patch, intensity = (40, 36, 44), (12, 14, 10), 1 / 0.98 ** 4
    for i, (coarse_box, tiles) in enumerate([
        ([[4, 28], [-6, 22], [10, 30]], [[[6, 18], [-4, 10], [12, 22]], [[10, 22], [2, 16], [18, 28]],
                                          [[16, 28], [8, 22], [14, 24]]]),
        ([[25, 43], [20, 41], [-3, 12]], [[[24, 36], [22, 36], [-4, 6]], [[30, 42], [28, 42], [0, 10]]]),
    ]):
        image, inter = random_volume(rng, shape, intensity)
        s = session(image, inter, patch, intensity)
        s.target_buffer = np.zeros(shape, np.uint8)
        s.target_buffer[inter[0] > 0] = 1
        s.network = RecordingNetwork(100 + i)
        coarse = (rng.random([b[1] - b[0] for b in coarse_box]) < 0.5).astype(np.uint8)
        s._refine_coarse_with_local_cache(tiles, 0, torch.from_numpy(coarse), coarse_box)
        w.cases.append({"kind": "tiles", "name": f"tiles_{i}", "shape": list(shape), "patch": list(patch),
                        "intensity": intensity, "image": w.f32(image), "interactions": w.f16(inter),
                        "coarse_box": coarse_box, "coarse": w.u8(coarse), "tiles": tiles,
                        "inputs": w.f32(np.stack(s.network.inputs)), "preds": w.u8(np.stack(s.network.preds)),
                        "target": w.u8(s.target_buffer), "prev_seg": w.f16(s.interactions[0].numpy())})


def gen_border(w, rng):
    shape = (48, 44, 50)
    s = session(np.zeros((1, 1, 1), np.float32), np.zeros((7, 1, 1, 1), np.float16), (1, 1, 1), 1.0)
    base = np.zeros(shape, np.uint8)
    base[10:40, 8:30, 0:30] = 1  # touches face (axis 2, 0)
    for i, (axis, side, n_flip, fill) in enumerate([
        (2, 0, 99, 0), (2, 0, 101, 0), (2, 0, 140, 1), (0, 1, 1499, 0), (0, 1, 1501, 0), (1, 1, 300, 0),
        (1, 0, 150, 2), (2, 1, 0, 0),
    ]):
        prev = base.astype(np.float16)
        if fill == 2:  # a large object on the face: a relative change below 0.2
            prev[:, 0, :] = 1
        pred = prev.astype(np.uint8).copy()
        face = np.moveaxis(pred, axis, 0)[0 if side == 0 else -1]
        flat = face.reshape(-1)
        idx = rng.choice(flat.size, n_flip, replace=False)
        flat[idx] = 1 - flat[idx] if fill != 1 else 1
        np.moveaxis(pred, axis, 0)[0 if side == 0 else -1] = flat.reshape(face.shape)
        changed = s._detect_change_at_border(torch.from_numpy(pred), torch.from_numpy(prev))
        w.cases.append({"kind": "border", "name": f"border_{i}", "shape": list(shape), "pred": w.u8(pred),
                        "prev": w.f16(prev), "changed": int(changed)})


def blob(rng, shape, n=3):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = [rng.uniform(1, max(1.5, s / 2)) for s in shape]
        m |= ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1
    return m


def gen_upsample(w, rng):
    for i, (patch, zoom) in enumerate([((12, 10, 14), 1.5), ((12, 10, 14), 2.25), ((9, 11, 10), 4.0),
                                       ((16, 16, 16), 3.375), ((9, 11, 10), 1.37)]):
        pred = blob(rng, patch, 4).astype(np.uint8)
        size = [round(p * zoom) for p in patch]
        up = (F.interpolate(torch.from_numpy(pred)[None, None].float(), size, mode="trilinear")[0, 0] >= 0.5)
        w.cases.append({"kind": "upsample", "name": f"upsample_{i}", "in": list(patch), "out": size,
                        "pred": w.u8(pred), "up": w.u8(up.to(torch.uint8).numpy())})


def gen_pool(w, rng):
    for i, (shape, k, use_min) in enumerate([((23, 19, 30), 5, True), ((23, 19, 30), 5, False),
                                             ((70, 9, 13), 7, False), ((4, 3, 2), 5, True)]):
        x = (blob(rng, shape, 5) ^ (rng.random(shape) < 0.05)).astype(np.float16)
        y = iterative_3x3_same_padding_pool3d(torch.from_numpy(x)[None, None], k, use_min_pool=use_min)[0, 0]
        w.cases.append({"kind": "pool", "name": f"pool_{i}", "shape": list(shape), "k": k, "min": int(use_min),
                        "x": w.u8(x), "y": w.u8(y.numpy())})


def boxes_json(boxes):
    return [[[int(v) for v in ax] for ax in b] for b in boxes]


def gen_cover(w, rng):
    for i, (shape, size, margin, kind, seed) in enumerate([
        ((60, 50, 70), (24, 24, 24), (4, 4, 4), "blobs", 1),
        ((60, 50, 70), (20, 28, 16), (3, 5, 2), "blobs", 2),
        ((40, 40, 40), (16, 16, 16), (4, 4, 4), "sparse", 3),  # grid misses the voxels: recursion, fallback
        ((50, 30, 60), (18, 18, 18), (2, 2, 2), "noise", 4),  # the greedy part leaves voxels: fallback
        ((30, 30, 30), (9, 9, 9), (1, 1, 1), "empty", 5),
    ]):
        if kind == "blobs":
            m = blob(rng, shape, 4)
        elif kind == "sparse":
            m = np.zeros(shape, bool)
            m[tuple(rng.integers(0, s, 40) for s in shape)] = True
        elif kind == "noise":
            m = blob(rng, shape, 3) | (rng.random(shape) < 0.002)
        else:
            m = np.zeros(shape, bool)
        np.random.seed(seed)
        boxes = generate_bounding_boxes(torch.from_numpy(m.astype(np.uint8)), size, stride="auto", margin=margin,
                                        max_depth=3)
        w.cases.append({"kind": "cover", "name": f"cover_{i}_{kind}", "shape": list(shape), "size": list(size),
                        "margin": list(margin), "seed": seed, "mask": w.u8(m), "boxes": boxes_json(boxes)})


def gen_plan(w, rng):
    shape, patch = (120, 110, 130), (96, 100, 90)
    for i, (zoom, center, force, seed) in enumerate([(1.5, (60, 55, 65), False, 7), (1.5, (10, 100, 125), False, 8),
                                                     (2.25, (60, 55, 65), True, 9), (1.5, (50, 50, 50), False, 10)]):
        inter = np.zeros((7, *shape), np.float16)
        inter[0] = blob(rng, shape, 3)
        scaled = [round(p * zoom) for p in patch]
        bbox = [[c - p // 2, c + p // 2 + p % 2] for c, p in zip(center, scaled)]
        if i == 3:  # the prediction equals prev_seg: no change, the patch around the interaction
            pred = np.zeros(scaled, np.uint8)
        else:
            pred = blob(rng, scaled, 4).astype(np.uint8)
        if i == 3:
            inter[0] = 0
        s = session(np.zeros(shape, np.float32), inter, patch, 1.0)
        s.new_interaction_centers = [list(center)]
        np.random.seed(seed)
        boxes = s._plan_refinement_bboxes(torch.from_numpy(pred), bbox, force)
        w.cases.append({"kind": "plan", "name": f"plan_{i}", "shape": list(shape), "patch": list(patch),
                        "center": list(center), "force": int(force), "seed": seed, "scaled_box": bbox,
                        "prev_seg": w.f16(inter[0]), "pred": w.u8(pred), "boxes": boxes_json(boxes)})


def gen_rng(w, rng):
    ns = [1, 2, 3, 7, 100, 1000, 65537, 2**31 + 5, 5000000000]
    for seed in (0, 1234, 2**32 - 1):
        np.random.seed(seed)
        draws = [int(np.random.choice(n)) for _ in range(40) for n in ns]
        w.cases.append({"kind": "rng", "name": f"rng_{seed}", "seed": seed, "ns": ns, "draws": draws})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(20261126)
    w = Writer(args.out)
    for gen in (gen_input, gen_tiles, gen_border, gen_upsample, gen_pool, gen_cover, gen_plan, gen_rng):
        t = time.time()
        gen(w, rng)
        print(gen.__name__, round(time.time() - t, 2), "s")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"cases": w.cases}, f)


if __name__ == "__main__":
    main()
