#!/usr/bin/env python3
"""PyTorch baseline for bench/bench_ops.c: F.conv3d (+ LeakyReLU 0.01) on the same nnU-Net layer shapes,
timed the same way (best of R after one warm-up; wall clock and process CPU time of all threads, GFLOP
per CPU-second). Run it right after bench_ops in the same command so that both see the same load:

    build/bench/bench_ops 1 3 && ~/.cache/i3rt/venv/bin/python bench/bench_ops_torch.py 1 3
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [  # name, cin, cout, size, kernel, stride, padding (as in bench_ops.c)
    ("1->32 3x3x3 64^3", 1, 32, 64, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("32->32 3x3x3 64^3", 32, 32, 64, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("32->64 3x3x3 s2 64^3", 32, 64, 64, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ("64->64 3x3x3 32^3", 64, 64, 32, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("128->128 3x3x3 16^3", 128, 128, 16, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("256->256 3x3x3 8^3", 256, 256, 8, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("320->320 3x3x3 4^3", 320, 320, 4, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("32->32 1x3x3 64^3", 32, 32, 64, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("32->3 1x1x1 64^3", 32, 3, 64, (1, 1, 1), (1, 1, 1), (0, 0, 0)),
    ("64->32 1x1x1 64^3", 64, 32, 64, (1, 1, 1), (1, 1, 1), (0, 0, 0)),
    ("64->128 3x3x3 s2 32^3", 64, 128, 32, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ("256->320 3x3x3 s2 8^3", 256, 320, 8, (3, 3, 3), (2, 2, 2), (1, 1, 1)),
]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}: {threads} thread(s), best of {repeats}, load average {os.getloadavg()[0]:.2f}")
    with torch.no_grad():
        for name, cin, cout, size, k, stride, pad in SHAPES:
            x = torch.rand(1, cin, size, size, size) * 2 - 1
            w = torch.rand(cout, cin, *k) * 2 - 1
            b = torch.rand(cout)
            best = best_cpu = float("inf")
            for r in range(repeats + 1):
                t, c = time.perf_counter(), time.process_time()
                y = F.leaky_relu(F.conv3d(x, w, b, stride=stride, padding=pad), 0.01)
                t, c = time.perf_counter() - t, time.process_time() - c
                if r > 0:
                    best, best_cpu = min(best, t), min(best_cpu, c)
            flops = 2.0 * cout * cin * k[0] * k[1] * k[2] * y[0, 0].numel()
            print(f"torch conv {name:<26} {best * 1e3:8.2f} ms {flops / best * 1e-9:6.1f} GFLOP/s  "
                  f"cpu {best_cpu * 1e3:8.2f} ms {flops / best_cpu * 1e-9:6.1f} GFLOP/cpu-s")


if __name__ == "__main__":
    main()
