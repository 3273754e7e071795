#!/usr/bin/env python3
"""Simulated user for a promptable model in nnInteractive's layout (docs/nninteractive-evaluation.md).

    tools/ni_evaluate.py [--model weights/nninteractive_brain] [--backends python i3rt] [--lib libi3rt.so] [--cases 2]
                         [--seed S] [--interactions 5] [--threads 1] [--no-autozoom] [--device cpu|cuda]
                         [--precision f32|tf32|f16|bf16] [--json OUT]

Held-out cases from the real volumes (scripts/train_nninteractive.py's seeds EVAL_SEED + i: never trained on;
--seed VALIDATION_SEED gives other unseen cases, on which to choose checkpoints or settings):
Colin27 T1 with AAL structures and the brain mask, the head CT with its bone mask. Per object and strategy,
up to --interactions prompts made from the ground truth by the same geometry the training simulates, but
deterministic: the first prompt on the object, every later one on the largest connected error of the current
mask (positive where the object is missed, negative where the mask overshoots). Strategies:
  point      a point at the centre (distance-transform maximum) of the object, then of the largest error
  bbox2d     a 2D box around the object's largest cross-section, then points
  lasso      the filled contour of that cross-section, then points
  scribble   a stroke along the middle of the object's (then the error's) largest cross-section
Dice after every interaction, time per interaction (prompt in -> mask out) and peak memory (ru_maxrss).
Each backend runs in its own process (the memory figure is that process's) on exactly the same prompts:
  python  nnInteractive's nnInteractiveInferenceSession (torch; on cuda its network under fp16 autocast)
  i3rt    i3rt's session through tools/i3rt_ctypes.py (libi3rt.so's i3rt_ni_*; --precision: its convolutions,
          default f16 on cuda, f32 on the CPU)
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

STRATEGIES = {"point": ("point", "point"), "bbox2d": ("bbox2d", "point"), "lasso": ("lasso", "point"),
              "scribble": ("scribble", "scribble")}
BRAIN_OBJECTS = ("caudate_L", "putamen_R", "thalamus_R", "hippocampus_L", "cerebellum_R", "brain")
CT_OBJECTS = ("bone",)


def eval_cases(n, seed):
    """[(name, image, {object: mask})]: n brain cases (seeds seed + i) and one head CT (seed + 500)."""
    import train_nninteractive as T
    cases = []
    for i in range(n):
        img, objs, _ = T.brain_case(seed + i)
        cases.append((f"brain{seed + i}", img, {k: objs[k] for k in BRAIN_OBJECTS if k in objs}))
    img, objs, _ = T.ct_case(seed + 500)
    cases.append((f"ct{seed + 500}", img, {k: objs[k] for k in CT_OBJECTS}))
    return cases


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


# ---- backends: set_image, reset, add(prompt) -> the mask after the prediction ------------------------------

class PythonBackend:
    def __init__(self, model, threads, autozoom, device):
        import torch
        from nnInteractive.inference.inference_session import nnInteractiveInferenceSession
        self.s = nnInteractiveInferenceSession(device=torch.device(device), torch_n_threads=threads,
                                               do_autozoom=autozoom, verbose=False)
        self.s.initialize_from_trained_model_folder(model)

    def set_image(self, img):
        self.s.set_image(img[None])
        self.target = np.zeros(img.shape, np.uint8)
        self.s.set_target_buffer(self.target)

    def reset(self):
        self.s.reset_interactions()
        self.target[:] = 0

    def add(self, p):
        if p["kind"] == "point":
            self.s.add_point_interaction(p["point"], include_interaction=p["positive"])
        elif p["kind"] == "bbox2d":
            self.s.add_bbox_interaction(p["box"], include_interaction=p["positive"])
        elif p["kind"] == "scribble":
            self.s.add_scribble_interaction(p["mask"].astype(np.uint8), include_interaction=p["positive"])
        else:
            self.s.add_lasso_interaction(p["mask"].astype(np.uint8), include_interaction=p["positive"])
        return self.target.astype(bool)


class I3rtBackend:
    """i3rt's session through tools/i3rt_ctypes.py (the ctypes binding of include/i3rt.h's i3rt_ni_*)."""

    def __init__(self, model, threads, autozoom, device, lib=None, precision=None):
        from i3rt_ctypes import I3rt
        self.lib = I3rt(lib)  # None: $I3RT_LIB
        self.s = self.lib.session(model, n_threads=threads, backend=device, precision=precision)
        self.s.set_do_autozoom(autozoom)

    def set_image(self, img):
        self.s.set_image(np.ascontiguousarray(img, np.float32))
        self.target = np.zeros(img.shape, np.uint8)
        self.s.set_target_buffer(self.target)

    def reset(self):
        self.s.reset_interactions()
        self.target[:] = 0

    def add(self, p):
        if p["kind"] == "point":
            self.s.add_point(p["point"], positive=p["positive"])
        elif p["kind"] == "bbox2d":
            self.s.add_box(p["box"], positive=p["positive"])
        elif p["kind"] == "scribble":
            self.s.add_scribble(p["mask"].astype(np.uint8), positive=p["positive"])
        else:
            self.s.add_lasso(p["mask"].astype(np.uint8), positive=p["positive"])
        return self.target.astype(bool)


# ---- the simulated user ----------------------------------------------------------------------------------

def run_backend(name, args):
    """Every case, object and strategy on one backend; returns rows and the process's peak memory."""
    import torch
    torch.set_num_threads(args.threads)
    import train_nninteractive as T
    autozoom = not args.no_autozoom
    backend = PythonBackend(args.model, args.threads, autozoom, args.device) if name == "python" else \
        I3rtBackend(args.model, args.threads, autozoom, args.device, args.lib, args.precision)
    rows = []
    for case, img, objects in eval_cases(args.cases, args.seed):
        backend.set_image(img)
        for obj, gt in objects.items():
            for strategy, (first, then) in STRATEGIES.items():
                backend.reset()
                seg = np.zeros(gt.shape, bool)
                dices, times, kinds, error = [], [], [], None
                for step in range(args.interactions):
                    region, positive = (gt, True) if step == 0 else T.largest_error(gt, seg)
                    if region is None:  # nothing left to correct
                        break
                    prompt = T.make_prompt(first if step == 0 else then, gt, region, positive)
                    kinds.append(("+" if positive else "-") + prompt["kind"])
                    t0 = time.perf_counter()
                    try:
                        seg = backend.add(prompt)
                    except Exception as e:  # a backend that fails on a prompt: recorded, the row is left out
                        error = f"step {step + 1} ({kinds[-1]}): {type(e).__name__}: {e}"
                        print(f"  {name:6s} {case:12s} {obj:14s} {strategy:9s} FAILED {error}", flush=True)
                        break
                    times.append(time.perf_counter() - t0)
                    dices.append(dice(seg, gt))
                if error:
                    rows.append(dict(case=case, object=obj, strategy=strategy, error=error, prompts=kinds))
                    continue
                while len(dices) < args.interactions:  # perfect: the mask stays
                    dices.append(dices[-1] if dices else 1.0)
                rows.append(dict(case=case, object=obj, voxels=int(gt.sum()), strategy=strategy, dice=dices,
                                 seconds=times, prompts=kinds))
                print(f"  {name:6s} {case:12s} {obj:14s} {strategy:9s} "
                      + " ".join(f"{d:.3f}" for d in dices) + f"   {np.mean(times):.3f} s/interaction", flush=True)
    return {"backend": name, "rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(results, n):
    failed = [(r["backend"], x) for r in results for x in r["rows"] if "error" in x]
    results = [dict(r, rows=[x for x in r["rows"] if "error" not in x]) for r in results]
    lines = ["| backend | strategy | " + " | ".join(f"Dice after {i + 1}" for i in range(n)) + " | s / interaction |",
             "|---|---|" + "---|" * (n + 1)]
    for r in results:
        for strategy in STRATEGIES:
            rows = [x for x in r["rows"] if x["strategy"] == strategy]
            d = np.mean([x["dice"] for x in rows], axis=0)
            t = np.mean([s for x in rows for s in x["seconds"]])
            lines.append(f"| {r['backend']} | {strategy} | " + " | ".join(f"{v:.3f}" for v in d) + f" | {t:.3f} |")
    lines += ["", "| backend | object | strategy point: Dice after 1 / 3 / 5 |", "|---|---|---|"]
    for r in results:
        for obj in dict.fromkeys(x["object"] for x in r["rows"]):
            rows = [x for x in r["rows"] if x["object"] == obj and x["strategy"] == "point"]
            d = np.mean([x["dice"] for x in rows], axis=0)
            lines.append(f"| {r['backend']} | {obj} | {d[0]:.3f} / {d[min(2, n - 1)]:.3f} / {d[-1]:.3f} |")
    lines += ["", "| backend | interactions | mean s / interaction | median | peak memory (ru_maxrss) |",
              "|---|---|---|---|---|"]
    for r in results:
        t = [s for x in r["rows"] for s in x["seconds"]]
        lines.append(f"| {r['backend']} | {len(t)} | {np.mean(t):.3f} | {np.median(t):.3f} | "
                     f"{r['peak_rss_mb']:.0f} MB |")
    if failed:
        lines += ["", f"{len(failed)} runs failed (left out above):"]
        lines += [f"- {b} {x['case']} {x['object']} {x['strategy']}: {x['error']}" for b, x in failed]
    return "\n".join(lines)


def main():
    import train_nninteractive as T
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "weights", "nninteractive_brain"))
    ap.add_argument("--backends", nargs="+", default=["python", "i3rt"], choices=["python", "i3rt"])
    ap.add_argument("--cases", type=int, default=2, help="held-out brain cases (plus one head CT)")
    ap.add_argument("--seed", type=int, default=T.EVAL_SEED,
                    help=f"first case seed: {T.EVAL_SEED}, the held-out cases to report; {T.VALIDATION_SEED}, the "
                         "validation cases to choose checkpoints or settings on (never trained on either)")
    ap.add_argument("--interactions", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-autozoom", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="torch device of the Python session and i3rt's backend (cuda: i3rt's CUDA kernels)")
    ap.add_argument("--precision", choices=["f32", "tf32", "f16", "bf16"],
                    help="i3rt's convolutions (default: f16 on cuda, as the Python session's autocast; f32 on the CPU)")
    ap.add_argument("--lib", help="libi3rt.so for the i3rt backend (default: $I3RT_LIB)")
    ap.add_argument("--json", help="write every row (Dice per step, seconds, prompts) here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one backend in this process: JSON to stdout's last line
    args = ap.parse_args()
    args.precision = args.precision or ("f16" if args.device == "cuda" else "f32")
    if args.precision != "f32" and args.device == "cpu":
        ap.error("--precision other than f32 needs --device cuda")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    if args.worker:
        print("RESULT " + json.dumps(run_backend(args.worker, args)))
        return
    results = []
    for b in args.backends:
        # the worker parses the same options (it ignores --backends and --json)
        cmd = [sys.executable, os.path.abspath(__file__)] + sys.argv[1:] + ["--worker", b]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        res = []
        for line in proc.stdout:  # the worker's rows as they come; the session's own prints are left out
            if line.startswith("RESULT "):
                res.append(line)
            elif line.startswith("  "):
                print(line, end="", flush=True)
        proc.wait()
        if proc.returncode != 0 or not res:
            print(f"backend {b}: failed (exit {proc.returncode})")
            continue
        results.append(json.loads(res[-1][7:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results, args.interactions) if results else "no results")


if __name__ == "__main__":
    main()
