#!/usr/bin/env python3
"""Slice-and-Conquer speed (issue 8): the 2D click latency and one 3D iteration, i3rt against PyTorch running
the same networks with the same weights, alternated in one process.

    python bench/snc_vs_torch.py --build build [--device cpu|cuda] [--precision f32|tf32|f16|bf16] [--threads 1]
        [--runs 5]
        [--arch 18s 18] [--weights-2d F.safetensors --weights-3d F.safetensors] [--crops 64 96]

Networks: RITM's HRNet-18 + OCR (2D) and its guided ACS 3D version (tools/snc_models.py). Without weight
files, random-weight networks of each --arch are made as tests/gen_snc_session.py makes them (gen_hrnet.py's
conditioning, the guided network transferred from the 2D one) and converted with convert_ritm.py: "18s" is
RITM's small variant (2 blocks per branch, OCR width 48), "18" the full HRNet-18 (OCR width 64). Weight files
(convert_ritm.py output, e.g. weights/snc_brain/) are read into the PyTorch models too.

What is timed (wall clock, median and min of --runs after one warm-up; i3rt then PyTorch in every run):
  click N      one click of RITM's predictor on Colin27 (ch2.nii.gz) axial slice 79 (217 x 181, windowed at the
               0.5th / 99.5th percentiles of the volume as the session does), with zoom-in and flip (the
               session's defaults): i3rt_snc_click on a fresh session (so the first click and every new crop
               size build i3rt's graph) against RITM's BasePredictor (tests/gen_snc_predictor.py, its ZoomIn and
               AddHorizontalFlip: a batch of 2) around HRNetModel; clicks: left thalamus +, right thalamus +,
               a negative click. The masks are compared (pixels that differ). Then the same clicks on the next
               axial slice (80) in the same i3rt session, a new BasePredictor for PyTorch: what a session's
               later slices cost once the network has run at their sizes (a graph per size is kept, and on
               the GPU its captured CUDA graph replays).
  2D forward   the network alone at every input size the clicks fed, one image (a click runs a batch of two):
               i3rt_model_forward against HRNetModel.forward_encoded, logits checked (max error / max |logit|;
               where PyTorch's are not finite, as autocast's f16 gives with random HRNet-18 weights, whose OCR
               attention products q.k reach 3e6 > 65504, how many are not finite on each side).
  3D step      one propagation on a crop of ch2.nii.gz centred between the thalami, with one accepted axial
               slice (one click on the left thalamus): i3rt_snc_propagate's guided-3d stage (encoding, network,
               sigmoid) against guided_input + GuidedHRNetModel (ACS) + upsampling + sigmoid; the whole
               propagation (also the recommendation and TV-L1 post-processing) is printed for i3rt.
  3D forward   the guided network alone on that crop's encoded input, logits checked.
On --device cuda both sides run on the GPU (i3rt's CUDA backend, PyTorch CUDA, synchronized); PyTorch's click
encoding stays on the CPU as in tests/gen_snc_predictor.py. --precision (cuda only) sets both sides' arithmetic:
f32 (the default; PyTorch's TF32 switched off, which cuDNN convolutions otherwise use), tf32 (TF32 on), f16 or bf16
(i3rt's tensor-core convolutions, PyTorch's autocast). A failing i3rt call prints its message and the row
is skipped, and the exit status is 1. The acsconv package is not a baseline here unless installed (it is not in this venv).
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import nibabel as nib
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_hrnet  # noqa: E402
from gen_snc_predictor import BasePredictor, Click, ZoomIn  # noqa: E402
from gen_snc_session import small_clicks  # noqa: E402
from i3rt_ctypes import I3rt, I3rtError, Model, SncSession  # noqa: E402
from snc_models import GuidedHRNetModel, HRNetModel, guided_input, guided_state_from_2d, interpolate, to_acs  # noqa: E402

COLIN = "/usr/share/mricron/templates/ch2.nii.gz"
AXIAL = 79                                       # MNI z = 8: both thalami (ch2's affine: voxel = MNI + (90, 125, 71))
CLICKS = [(107.0, 80.0, 1), (107.0, 100.0, 1), (125.0, 90.0, 0)]   # (y, x, positive) on that slice
CROP_CENTRE = (79, 107, 90)                      # (z, y, x): between the thalami
ARCHS = {"18s": dict(width=18, ocr_width=48, small=True), "18": dict(width=18, ocr_width=64, small=False)}
COMMON = dict(use_leaky_relu=True, norm_radius=5, use_disks=True, with_prev_mask=True)


# ---- networks ---------------------------------------------------------------------------------------------

def random_networks(name, folder, slice_img):
    """(2D model, guided 3D model after to_acs, 2D file, 3D file) with seeded random weights; the cls_head bias
    is shifted so that the first click on the slice gives 5% object (random weights otherwise predict none, and
    zoom-in, which crops around the object from the second click on, would never run)."""
    gen = torch.Generator().manual_seed(8)
    model = HRNetModel(**ARCHS[name], **COMMON)
    gen_hrnet.random_calibrated(model, gen, ((40, 48), (32, 40)), small_clicks)
    first = torch.tensor([[CLICKS[0][:2], (-1, -1)]], dtype=torch.float32)
    with torch.no_grad():
        x = model.encode(torch.cat([slice_img, torch.zeros_like(slice_img[:1])], 0)[None], first)
        model.feature_extractor.cls_head.bias -= float(torch.quantile(model.forward_encoded(x)[1].flatten(), 0.95))
    guided = GuidedHRNetModel(**ARCHS[name], **COMMON)
    guided.load_state_dict(guided_state_from_2d(model.state_dict(), guided))
    f2, f3 = os.path.join(folder, f"hrnet{name}_2d.safetensors"), os.path.join(folder, f"hrnet{name}_guided3d.safetensors")
    params = {**ARCHS[name], **COMMON, "with_aux_output": True}
    gen_hrnet.save_converted(model, gen_hrnet.HRNET_CLASS, params, f2)
    gen_hrnet.save_converted(guided, "snc_models.GuidedHRNetModel", params, f3, "--acs")
    return model.eval(), to_acs(guided).eval(), f2, f3


def from_file(path, guided):
    """The PyTorch model of a convert_ritm.py file, its tensors loaded."""
    with safe_open(path, "pt") as f:
        net = json.loads(f.metadata()["network"])
    kw = dict(width=net["width"], ocr_width=net["ocr_width"], small=bool(net["small"]),
              **{k: net.get("arch_kwargs", {}).get(k, v) for k, v in COMMON.items()})
    model = GuidedHRNetModel(attention_hidden=net["mask_attention_hidden"], **kw) if guided else HRNetModel(**kw)
    state = {k: v.float() for k, v in load_file(path).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("mask_attention.head.")]
    if missing or unexpected:
        sys.exit(f"{path}: tensors missing {missing[:3]} or unexpected {unexpected[:3]}")
    return (to_acs(model) if guided else model).eval()


# ---- timing helpers ---------------------------------------------------------------------------------------

class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, f):
        """(seconds, f's result), after the device finished."""
        if self.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = f()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, r


def row(what, i3rt, torch_s, extra=""):
    """One printed line: medians (min) in ms and the ratio PyTorch / i3rt (> 1: i3rt is faster); torch_s None:
    nothing to compare with."""
    def fmt(v):
        if v is None:
            return f"{'-':>20}"
        return f"{1e3 * statistics.median(v):9.1f} ({1e3 * min(v):8.1f})" if v else f"{'failed':>20}"
    ratio = f"{statistics.median(torch_s) / statistics.median(i3rt):6.2f}" if i3rt and torch_s else "     -"
    print(f"  {what:<28} {fmt(i3rt)} {fmt(torch_s)} {ratio}  {extra}", flush=True)


def header(what):
    print(f"  {what:<28} {'i3rt ms median (min)':>20} {'torch ms median (min)':>20} {'torch/i3rt':>6}")


def try_i3rt(f, failures, what):
    try:
        return f()
    except I3rtError as e:
        if what not in failures:
            print(f"  i3rt failed ({what}): {e}", flush=True)
        failures.add(what)
        return None


def window(volume_zyx):
    """i3_snc_window: clamp((v - lo) / (hi - lo)) at the 0.5th / 99.5th percentile of <= 2^20 strided samples."""
    flat = volume_zyx.ravel()
    step = -(-flat.size // (1 << 20)) if flat.size > (1 << 20) else 1
    s = np.sort(flat[::step])
    lo, hi = s[int(0.005 * (s.size - 1))], s[int(np.ceil(0.995 * (s.size - 1)))]
    hi = hi if hi > lo else lo + np.float32(1)
    return np.clip((volume_zyx - lo) / (hi - lo), 0, 1).astype(np.float32)


def read_zyx(path):
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj, dtype=np.float32).transpose(2, 1, 0))


# ---- 2D ---------------------------------------------------------------------------------------------------

def torch_arithmetic(precision, device):
    """A context manager factory for PyTorch's side in i3rt's --precision: f32 and tf32 (cuDNN's and cuBLAS's TF32
    switched off or on), f16 and bf16 (autocast)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    if precision in ("f16", "bf16"):
        return lambda: torch.autocast(device, dtype=torch.float16 if precision == "f16" else torch.bfloat16)
    return contextlib.nullcontext


class TorchNet:
    """RITM's net(image_nd, points_nd)['instances'] (float32 out); records the input sizes it is fed."""

    def __init__(self, model, args):
        self.model, self.device, self.arithmetic, self.sizes = model, args.device, args.torch_arithmetic, []

    def __call__(self, image_nd, points_nd):
        x = self.model.encode(image_nd.float(), points_nd[:, :, :2].float()).to(self.device)
        self.sizes.append(tuple(x.shape[2:]))
        with torch.no_grad(), self.arithmetic():
            return {"instances": self.model.forward_encoded(x)[1].float().cpu()}


def bench_clicks(args, lib, path2d, model, slices, timer, failures):
    """The clicks on each of slices [(axial index, image [3, h, w])] in turn: i3rt in one session per run (a fresh
    one: the first slice's clicks build each size's graph; the next slice's find the sizes seen), PyTorch with one
    BasePredictor per slice."""
    net = TorchNet(model, args)
    n = len(slices) * len(CLICKS)
    i3rt_t, torch_t = [[] for _ in range(n)], [[] for _ in range(n)]
    i3rt_masks, torch_masks, sizes, finite, loads = [], [], [], [], []
    for run in range(args.runs + 1):
        def i3rt_sequence():
            with SncSession(lib, COLIN, args.threads, args.device, args.precision) as s:
                # the session takes the network: loads it, sizes its buffers, and on a device runs it at each
                # axis's slice size (so that the first click on any axis replays a captured graph)
                t0 = time.perf_counter()
                s.load_2d(path2d)
                if run > 0:
                    loads.append(time.perf_counter() - t0)
                out = []
                for index, _ in slices:
                    for y, x, pos in CLICKS:
                        out.append(timer(lambda: s.click("axial", index, y, x, pos)))
                return out
        seq = try_i3rt(i3rt_sequence, failures, "click")
        if seq and run > 0:
            for k, (dt, m) in enumerate(seq):
                i3rt_t[k].append(dt)
            i3rt_masks = [m for _, m in seq]
        k = 0
        for _, image in slices:
            predictor = BasePredictor(net, with_flip=True, zoom_in=ZoomIn())
            predictor.set_input_image(image)
            clicks = []
            for j, (y, x, pos) in enumerate(CLICKS):
                clicks.append(Click(is_positive=bool(pos), coords=(y, x), indx=j))
                n_before = len(net.sizes)
                dt, p = timer(lambda: predictor.get_prediction(clicks))
                if run > 0:
                    torch_t[k].append(dt)
                if run == args.runs:
                    torch_masks.append(p > 0.49)
                    finite.append(bool(np.isfinite(p).all()))
                    sizes.append(net.sizes[n_before:])
                k += 1
    for k in range(n):
        index, j = slices[k // len(CLICKS)][0], k % len(CLICKS)
        if j == 0:
            header(f"clicks, axial {index}" + (", new session" if k == 0 else ", same session"))
        if k == 0:
            row("session takes the network", loads, None, "i3rt: load, buffers, on a device each axis's slice "
                "size run twice (PyTorch: nothing to do)")
        diff = f", {int((i3rt_masks[k] != torch_masks[k]).sum())} mask px differ" if i3rt_masks else ""
        diff += "" if finite[k] else ", PyTorch's probabilities not finite"
        fed = " + ".join(f"{h}x{w}" for h, w in sizes[k])
        row(f"click {j + 1} ({'+' if CLICKS[j][2] else '-'})", i3rt_t[k], torch_t[k],
            f"net input {fed} x 2 (flip), {int(torch_masks[k].sum())} px object{diff}")
    return sorted({hw for s in sizes for hw in s})


def encoded_2d(model, slice_img, size):
    """The network input [1, 6, h, w] (on the CPU) for the slice resized to size, a previous mask and one click."""
    img = torch.nn.functional.interpolate(slice_img[None], size=size, mode="bilinear", align_corners=True)
    prev = torch.zeros(1, 1, *size)
    prev[..., size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] = 0.8
    pts = torch.tensor([[[size[0] / 2, size[1] / 3], [-1, -1]]], dtype=torch.float32)
    return model.encode(torch.cat([img, prev], 1), pts)


def bench_forward(args, lib, path, model, x, timer, failures, what):
    """i3rt_model_forward vs model.forward_encoded on x [1, C, (d,) h, w]; returns nothing, prints a row."""
    spatial = x.shape[2:] if x.dim() == 5 else (1, *x.shape[2:])
    x_np = np.ascontiguousarray(x[0].reshape(x.shape[1], *spatial).numpy())
    out = np.empty((1, *spatial), np.float32)
    xd = x.to(args.device)
    m = try_i3rt(lambda: Model(lib, path, args.threads, args.device, args.precision), failures, what)
    i3rt_t, torch_t, ref, plan = [], [], None, ""
    for run in range(args.runs + 1):
        if m is not None:
            dt, _ = timer(lambda: try_i3rt(lambda: m.forward(x_np, out), failures, what))
            if what in failures:
                m = None
            elif run > 0:
                i3rt_t.append(dt)
        with torch.no_grad(), args.torch_arithmetic():
            dt, up = timer(lambda: model.forward_encoded(xd)[1])
        if run > 0:
            torch_t.append(dt)
        ref = up.float().cpu().numpy().reshape(out.shape)
    check = ""
    if m is not None and not np.isfinite(ref).all():   # e.g. autocast's f16 matmul overflowing in the OCR attention
        check = (f"PyTorch's logits: {int((~np.isfinite(ref)).sum())} of {ref.size} not finite, i3rt's: "
                 f"{int((~np.isfinite(out)).sum())}")
    elif m is not None:
        check = f"logits max err / max |logit| {np.abs(out - ref).max() / np.abs(ref).max():.1e}"
        plan = f", i3rt arena {m.plan_bytes(spatial) / 2**20:.0f} MiB"
        m.close()
    row(what, i3rt_t, torch_t, check + plan)


# ---- 3D ---------------------------------------------------------------------------------------------------

def crop_file(size, folder):
    vol = np.asarray(nib.load(COLIN).dataobj)  # (x, y, z)
    lo = [c - size // 2 for c in CROP_CENTRE[::-1]]
    crop = vol[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size]
    path = os.path.join(folder, f"ch2_crop{size}.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(crop), np.eye(4)), path)
    return path


def bench_3d(args, lib, path2d, path3d, model3d, size, folder, timer, failures):
    path = crop_file(size, folder)
    c = size // 2
    click = (c, c, c - 10)  # (z, y, x) in the crop: the left thalamus, on the accepted axial slice z = c
    i3rt_guided, i3rt_total, i3rt_post, torch_t = [], [], [], []
    s = try_i3rt(lambda: SncSession(lib, path, args.threads, args.device, args.precision), failures, "3d")
    mask2d = None
    if s is not None:
        def setup():
            s.load_2d(path2d)
            s.load_3d(path3d)
            m = s.click("axial", c, click[1], click[2], 1)
            s.finish_slice("axial", c, accurate=True)
            return m
        mask2d = try_i3rt(setup, failures, "3d")
    if mask2d is None:  # i3rt failed: the same guide from PyTorch's side is not needed for the timing
        mask2d = np.zeros((size, size), np.uint8)
        mask2d[c - 8:c + 8, c - 18:c - 2] = 1
    volume = torch.from_numpy(window(read_zyx(path)))
    pts = torch.tensor([[click, (-1, -1, -1)]], dtype=torch.float32)
    dev = args.device

    def torch_step():
        x = guided_input(volume, torch.zeros_like(volume), pts, [(0, c, mask2d)]).to(dev)
        with torch.no_grad(), args.torch_arithmetic():
            return torch.sigmoid(interpolate(model3d.forward_guided(x)[0], x.shape[2:])).float().cpu()

    for run in range(args.runs + 1):
        if s is not None and "3d" not in failures:
            before = s.stage_seconds()
            dt, _ = timer(lambda: try_i3rt(s.propagate, failures, "3d"))
            after = s.stage_seconds()
            if run > 0 and "3d" not in failures:
                i3rt_total.append(dt)
                i3rt_guided.append(after["guided-3d"] - before["guided-3d"])
                i3rt_post.append(after["postprocess"] - before["postprocess"] + after["recommend"] - before["recommend"])
        dt, _ = timer(torch_step)
        if run > 0:
            torch_t.append(dt)
    if s is not None:
        s.close()
    row(f"3D step {size}^3 guided-3d", i3rt_guided, torch_t, "encoding + network + sigmoid")
    if i3rt_total:
        print(f"  {'  whole propagation (i3rt)':<28} {1e3 * statistics.median(i3rt_total):9.1f} "
              f"({1e3 * min(i3rt_total):8.1f})   of which recommend + TV-L1 post-processing "
              f"{1e3 * statistics.median(i3rt_post):.1f} ms", flush=True)
    x = guided_input(volume, torch.zeros_like(volume), pts, [(0, c, mask2d)])
    bench_forward(args, lib, path3d, model3d, x, timer, failures, f"3D forward {size}^3")


# ---- main -------------------------------------------------------------------------------------------------

def describe_machine(args):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    print(f"date {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; commit {commit}{' (tracked files modified)' if dirty else ''}")
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs; PyTorch {torch.__version__}; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f"; {args.precision}; {args.threads} threads each; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"{args.runs} runs after 1 warm-up, i3rt then PyTorch in each")
    print("load average (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg(), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="CMake build folder with libi3rt.so")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("f32", "tf32", "f16", "bf16"), default="f32",
                    help="both sides' arithmetic (other than f32: cuda only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=["18s", "18"],
                    help="random-weight networks to make (ignored with --weights-2d/--weights-3d)")
    ap.add_argument("--weights-2d", help="a 2D RITM file (convert_ritm.py), e.g. trained weights")
    ap.add_argument("--weights-3d", help="its guided 3D file (convert_ritm.py --guided)")
    ap.add_argument("--crops", type=int, nargs="*", default=[64, 96], help="3D crop sides (empty: no 3D)")
    ap.add_argument("--no-2d", action="store_true", help="skip the click and 2D forward rows")
    args = ap.parse_args()
    if bool(args.weights_2d) != bool(args.weights_3d):
        ap.error("--weights-2d and --weights-3d go together")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: PyTorch sees no GPU")
    if args.precision != "f32" and args.device != "cuda":
        ap.error("--precision other than f32 needs --device cuda")
    args.torch_arithmetic = torch_arithmetic(args.precision, args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="dropout2d: Received a 5-D input")  # eval mode: dropout is off
    lib = I3rt(os.path.join(args.build, "libi3rt.so"))
    describe_machine(args)
    timer = Timer(args.device)
    folder = tempfile.mkdtemp(prefix="i3rt_snc_bench_")
    colin = window(read_zyx(COLIN))
    slices = [(z, torch.from_numpy(np.ascontiguousarray(np.stack([colin[z]] * 3)))) for z in (AXIAL, AXIAL + 1)]
    slice_img = slices[0][1]
    if args.weights_2d:
        nets = [("files", from_file(args.weights_2d, False), from_file(args.weights_3d, True), args.weights_2d,
                 args.weights_3d)]
    else:
        nets = [(f"HRNet-{name} random weights", *random_networks(name, folder, slice_img)) for name in args.arch]
    all_failures = []
    for name, model2d, model3d, path2d, path3d in nets:
        print(f"\n== {name}: {path2d}, {path3d}", flush=True)
        model2d.to(args.device)
        model3d.to(args.device)
        failures = set()
        all_failures.append(failures)
        if not args.no_2d:
            sizes = bench_clicks(args, lib, path2d, model2d, slices, timer, failures)
            for size in sizes:
                bench_forward(args, lib, path2d, model2d, encoded_2d(model2d, slice_img, size), timer, failures,
                              f"2D forward {size[0]}x{size[1]}")
        for size in args.crops:
            bench_3d(args, lib, path2d, path3d, model3d, size, folder, timer, failures)
        model2d.cpu(), model3d.cpu()
    print(f"\npeak RSS of this process (both sides, all networks): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.device == "cuda":
        print(f"PyTorch peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print("issue 8's targets (GPU): click < 20 ms, one 3D iteration < 250 ms")
    print("load average (1, 5, 15 min) after: %.2f %.2f %.2f" % os.getloadavg())
    if any(all_failures):
        sys.exit(f"i3rt failed on: {', '.join(sorted(set().union(*all_failures)))} (messages above)")


if __name__ == "__main__":
    main()
