#!/usr/bin/env python3
"""Whole CPU forward, i3rt and PyTorch alternated in one process (for a loaded machine).

    python bench/cpu_forward_alt.py --build build [--sizes 64 96] [--threads 2] [--runs 3]

Same network, weights and conversion as bench/cpu_forward.py (imported from it). i3rt runs through its
public API (libi3rt.so via ctypes: i3rt_context_create, i3rt_model_load, i3rt_model_forward) in this
process; each run times one PyTorch forward then one i3rt forward on the same input, wall clock and
process CPU time (all threads). On a machine shared with other work, alternating gives both sides the
same conditions, and CPU time leaves out the time a side spent descheduled. Prints medians and bests
and the ratios PyTorch / i3rt (> 1: i3rt is faster), and checks the logits (max abs error / max |logit|
<= 1e-4) at every size.
"""
import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_forward  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(cpu_forward.ROOT, "build"), help="CMake build folder")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = cpu_forward.build_network()
    weights = cpu_forward.save_and_convert(net, tempfile.mkdtemp(prefix="i3rt_bench_alt_"))
    net.decoder.deep_supervision = False
    net.eval()
    lib = ctypes.CDLL(os.path.join(args.build, "libi3rt.so"))
    lib.i3rt_context_error.restype = ctypes.c_char_p
    ctx, model = ctypes.c_void_p(), ctypes.c_void_p()
    if lib.i3rt_context_create(ctypes.byref(ctx), args.threads, 0) != 0 or \
            lib.i3rt_model_load(ctx, weights.encode(), ctypes.byref(model)) != 0:
        sys.exit(f"i3rt: {lib.i3rt_context_error(ctx)}")
    print(f"machine: {cpu_forward.cpu_model()}, {os.cpu_count()} logical CPUs; PyTorch {torch.__version__}; "
          f"{args.threads} threads each; {args.runs} alternating runs after 1 warm-up each")
    print("load average (1, 5, 15 min) before: %.1f %.1f %.1f" % os.getloadavg())
    for s in args.sizes:
        x = torch.rand(1, 1, s, s, s) * 2 - 1
        x_np = np.ascontiguousarray(x.numpy()[0])
        logits = np.empty((2, s, s, s), np.float32)
        spatial = (ctypes.c_int64 * 3)(s, s, s)

        def run_i3rt():
            if lib.i3rt_model_forward(model, x_np.ctypes.data_as(ctypes.c_void_p), spatial,
                                      logits.ctypes.data_as(ctypes.c_void_p)) != 0:
                sys.exit(f"i3rt: {lib.i3rt_context_error(ctx)}")

        def run_torch():
            with torch.no_grad():
                return net(x)

        run_i3rt()
        ref = run_torch()[0].numpy()
        rel = float(np.abs(logits - ref).max() / np.abs(ref).max())
        if not rel <= 1e-4:
            sys.exit(f"{s}^3: logits differ (max abs error / max |logit| = {rel:.3g})")
        wall = {"torch": [], "i3rt": []}
        cpu = {"torch": [], "i3rt": []}
        for _ in range(args.runs):
            for name, f in (("torch", run_torch), ("i3rt", run_i3rt)):
                t, c = time.perf_counter(), time.process_time()
                f()
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        med = {k: statistics.median(v) for k, v in wall.items()}
        best = {k: min(v) for k, v in wall.items()}
        cpu_best = {k: min(v) for k, v in cpu.items()}
        print(f"{s}^3: wall median PyTorch {med['torch']:.3f} s, i3rt {med['i3rt']:.3f} s "
              f"({med['torch'] / med['i3rt']:.2f}x); wall best {best['torch']:.3f} / {best['i3rt']:.3f} s "
              f"({best['torch'] / best['i3rt']:.2f}x); CPU best {cpu_best['torch']:.3f} / {cpu_best['i3rt']:.3f} s "
              f"({cpu_best['torch'] / cpu_best['i3rt']:.2f}x); logits rel err {rel:.2g}", flush=True)
    print("load average after: %.1f %.1f %.1f" % os.getloadavg())


if __name__ == "__main__":
    main()
