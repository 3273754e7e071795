#!/usr/bin/env python3
"""Sums the GPU time of every kernel launch that Nsight Compute measured, per kernel, from its CSV output
(`ncu --csv --print-units base --metrics gpu__time_duration.sum PROGRAM`, other lines ignored): where a
forward's device time goes without the backend profile's synchronizations around each node, and how many
launches it takes (kernels/gpu_check.sh, ncu phase: the test HRNet-18s at a click's slice size).

    python3 bench/ncu_kernel_times.py ncu.csv [--forwards N]   # N: divide by the forwards profiled
"""
import argparse
import collections
import csv
import re

UNIT_SECONDS = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3,
                "second": 1.0, "s": 1.0}


def kernel_name(full):
    """The kernel's name without namespace, template arguments or parameters: i3gpu::conv_tensor_core_v3<false>(...)
    -> conv_tensor_core_v3 <false> (the template's flag kept: f16 and bf16 are separate kernels)."""
    m = re.match(r"(?:void\s+)?(?:[\w:]*::)?(\w+)(<[^(]*>)?", full.strip())
    if not m:
        return full.strip()
    return m.group(1) + (" " + m.group(2) if m.group(2) else "")


def read(path):
    """[(kernel, seconds)] in launch order."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    rows = list(csv.reader(lines))
    if not rows:
        return []
    head = rows[0]
    name_at, metric_at = head.index("Kernel Name"), head.index("Metric Name")
    unit_at, value_at = head.index("Metric Unit"), head.index("Metric Value")
    out = []
    for r in rows[1:]:
        if len(r) != len(head) or r[metric_at] != "gpu__time_duration.sum":
            continue
        out.append((kernel_name(r[name_at]), float(r[value_at].replace(",", "")) * UNIT_SECONDS.get(r[unit_at], 1e-9)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--forwards", type=int, default=1, help="forwards profiled: times and counts per forward")
    args = ap.parse_args()
    launches = read(args.csv)
    total = sum(s for _, s in launches)
    per = collections.defaultdict(lambda: [0, 0.0, []])
    for name, s in launches:
        per[name][0] += 1
        per[name][1] += s
        per[name][2].append(s)
    n = args.forwards
    print(f"{len(launches) / n:.0f} kernel launches, {1e3 * total / n:.3f} ms of GPU time per forward "
          f"({len(launches)} launches profiled over {n} forward(s))")
    print(f"  {'kernel':<40} {'launches':>8} {'ms':>9} {'%':>6} {'median us':>10} {'max us':>9}")
    for name, (count, s, times) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        times.sort()
        print(f"  {name:<40} {count / n:8.1f} {1e3 * s / n:9.3f} {100 * s / total if total else 0:6.1f} "
              f"{1e6 * times[len(times) // 2]:10.1f} {1e6 * times[-1]:9.1f}")


if __name__ == "__main__":
    main()
