#!/usr/bin/env python3
"""nnInteractive's AutoZoom arrays: Python (nnInteractiveInferenceSession's own methods, CPU, dense fp16
interactions) vs i3rt (build/bench/bench_ni_zoom) on the same volumes, in the same run.

    bench/ni_zoom_vs_python.py --bench build/bench/bench_ni_zoom [--threads 2] [--shape 300 300 200]
                               [--patch 192] [--zooms 1.5 2.25 4]

Wall-clock and CPU time (all threads; on a busy machine the fairer measure) per zoom: _build_network_input (crop, resampling of image and the 7 interaction channels, prev_seg),
then for the largest zoom the coarse up-sampling (F.interpolate trilinear >= 0.5) and _plan_refinement_bboxes
(diff, pooling, box cover; np.random.seed(0) on both sides).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from nnInteractive.inference.inference_session import nnInteractiveInferenceSession


def ellipsoid(shape, centre, radii):
    axes = [((np.arange(s) - c) / r) ** 2 for s, c, r in zip(shape, centre, radii)]
    return (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]) < 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 300, 200])
    ap.add_argument("--patch", type=int, default=192)
    ap.add_argument("--zooms", type=float, nargs="+", default=[1.5, 2.25, 4.0])
    ap.add_argument("--data", help="write the volumes here (kept) instead of a temporary folder")
    ap.add_argument("--skip-python", action="store_true", help="only write the volumes and run i3rt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape, patch = tuple(args.shape), [args.patch] * 3
    centre = [s // 2 for s in shape]
    rng = np.random.default_rng(0)
    image = rng.standard_normal(shape, dtype=np.float32)
    inter = np.zeros((7, *shape), np.float16)
    inter[0] = ellipsoid(shape, centre, [s / 4 for s in shape])  # the previous segmentation
    inter[1, centre[0], centre[1] - 40:centre[1] + 40, centre[2] - 30:centre[2] + 30] = 1  # a box
    inter[3] = np.where(ellipsoid(shape, centre, [4, 4, 4]), 1, 0)  # a point
    x = np.arange(shape[2])
    inter[5, centre[0] + 10, np.clip((centre[1] + 20 * np.sin(x / 20)).astype(int), 0, shape[1] - 1), x] = 1
    s = nnInteractiveInferenceSession(device=torch.device("cpu"), interactions_storage="tensor",
                                      torch_n_threads=args.threads)
    s.configuration_manager = SimpleNamespace(patch_size=patch)
    s.preprocessed_image = torch.from_numpy(image[None])
    s.interactions = torch.from_numpy(inter)
    s.num_interaction_channels = 7
    s.channel_mapping = {"prev_seg": 0, "bbox2d": [1, 2], "lasso": [1, 2], "points": [3, 4], "scribble": [5, 6]}
    s.supported_interactions = {"scribble": True, "lasso": True, "points": True, "bbox2d": True, "bbox3d": False}
    s.current_interaction_intensity = 1 / 0.98
    s.new_interaction_centers = [centre]

    with tempfile.TemporaryDirectory() as tmp:
        d = args.data or tmp
        os.makedirs(d, exist_ok=True)
        image.tofile(os.path.join(d, "image.f32"))
        inter.view(np.uint16).tofile(os.path.join(d, "interactions.u16"))
        with open(os.path.join(d, "meta.txt"), "w") as f:
            f.write(" ".join(map(str, [*shape, *patch, *centre, *args.zooms])))
        print(f"volume {shape}, patch {patch}, {args.threads} threads")
        for zoom in args.zooms:
            if args.skip_python:
                break
            t, c = time.perf_counter(), time.process_time()
            _, scaled, bbox, prev = s._build_network_input(centre, zoom)
            print(f"python network input  zoom {zoom:<6g} {1e3 * (time.perf_counter() - t):8.1f} ms wall {1e3 * (time.process_time() - c):8.1f} ms cpu")
        if not args.skip_python:
            pred = (prev > 0.5).to(torch.uint8)
            t, c = time.perf_counter(), time.process_time()
            (F.interpolate(pred[None, None].float(), scaled, mode="trilinear")[0, 0] >= 0.5).to(torch.uint8)
            print(f"python upsample coarse zoom {args.zooms[-1]:<6g} {1e3 * (time.perf_counter() - t):8.1f} ms wall {1e3 * (time.process_time() - c):8.1f} ms cpu")
        scaled = [round(p * args.zooms[-1]) for p in patch]
        bbox = [[c - p // 2, c + p // 2 + p % 2] for c, p in zip(centre, scaled)]
        # a coarse result that differs from prev_seg: a larger, shifted object
        pred_up = ellipsoid(scaled, [c // 2 + 7 for c in scaled], [c / 5 for c in scaled]).astype(np.uint8)
        pred_up.tofile(os.path.join(d, "pred_up.u8"))
        if not args.skip_python:
            np.random.seed(0)
            t, c = time.perf_counter(), time.process_time()
            boxes = s._plan_refinement_bboxes(torch.from_numpy(pred_up), bbox, False)
            print(f"python refinement plan zoom {args.zooms[-1]:<6g} {1e3 * (time.perf_counter() - t):8.1f} ms wall {1e3 * (time.process_time() - c):8.1f} ms cpu "
                  f"({len(boxes)} boxes)")
        sys.stdout.flush()
        subprocess.run([args.bench, d, str(args.threads)], check=True)


if __name__ == "__main__":
    main()
