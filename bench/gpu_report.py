#!/usr/bin/env python3
"""Compares bench/gpu_bench.c's timings with bench/gpu_torch.py's from the same GPU run and writes a
Markdown report (kernels/gpu_check.sh: gpu_report.py LOGS/*.jsonl > LOGS/report.md).

Per op and fused block: median ms, TFLOP/s or GB/s, % of the device's peak (engine-facts.md: H100 SXM dense
FP32 67, TF32 495, FP16/BF16 989 TFLOP/s, HBM3 3.35 TB/s; H200 the same compute and 4.8 TB/s) and the ratio
cuDNN time / i3rt time (> 1: i3rt faster). Whole forward: i3rt against PyTorch eager AMP and torch.compile."""
import json
import sys

PEAK_TFLOPS = {"f32": 67.0, "tf32": 495.0, "f16": 989.0, "bf16": 989.0}


def main():
    rows = []
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    device = next((r["name"] for r in rows if r.get("bench") == "device"), "unknown device")
    bandwidth = 4800.0 if "H200" in device else 3350.0
    print(f"# i3rt GPU benchmarks on {device}\n")
    print(f"Peaks used: {PEAK_TFLOPS} TFLOP/s, {bandwidth:.0f} GB/s. Ratio = PyTorch/cuDNN ms / i3rt ms.\n")
    print("| bench | op | shape | i3rt ms | rate | % peak | torch ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    torch_rows = [r for r in rows if r.get("impl")]
    for r in rows:
        if r.get("impl") or r.get("bench") not in ("op", "block"):
            continue
        shape = ", ".join(f"{k}={r[k]}" for k in ("stage", "c", "side", "d", "h", "w", "tile", "volume") if k in r)
        if "flop" in r:
            rate = r["flop"] / r["ms"] / 1e9
            prec = r.get("precision", "f16")
            rate_s, peak_s = f"{rate:.2f} TFLOP/s", f"{100 * rate / PEAK_TFLOPS[prec]:.1f}"
        else:
            rate = r["bytes"] / r["ms"] / 1e6
            rate_s, peak_s = f"{rate:.0f} GB/s", f"{100 * rate / bandwidth:.1f}"
        base = r["name"].replace(" f32 direct", " f32").replace(" fused", "").replace(" (unfused)", "")
        base = base.replace(" channels-last", "")
        base = base.replace(", then slice sums", "+slice sums").replace(" (v1, two reads)", "")
        match = [t for t in torch_rows if t["name"] == base and t.get("stage") == r.get("stage")]
        if r["bench"] == "block" and r.get("precision") != "f16":  # cuDNN's block runs fp16 autocast
            match = []
        torch_ms = match[0]["ms"] if match else None
        ratio = f"{torch_ms / r['ms']:.2f}x" if torch_ms else "-"
        print(f"| {r['bench']} | {r['name']} | {shape} | {r['ms']:.3f} | {rate_s} | {peak_s} | "
              f"{torch_ms if torch_ms is None else round(torch_ms, 3)} | {ratio} |")
    forwards = [r for r in rows if r.get("bench") == "forward"]
    if forwards:
        print("\n## Whole forward\n")
        print("| run | network | size | ms | vs torch eager AMP | vs torch.compile |")
        print("|---|---|---|---|---|---|")
        eager = next((r["ms"] for r in forwards if r["name"] == "torch eager fp16 autocast"), None)
        compiled = next((r["ms"] for r in forwards if r["name"] == "torch.compile fp16 autocast"), None)
        for r in forwards:
            size = f"{r['d']}x{r['h']}x{r['w']}"
            vs = [f"{b / r['ms']:.2f}x" if b else "-" for b in (eager, compiled)]
            print(f"| {r['name']} | {r['network']} | {size} | {r['ms']:.2f} | {vs[0]} | {vs[1]} |")


if __name__ == "__main__":
    main()
