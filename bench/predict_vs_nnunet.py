#!/usr/bin/env python3
"""Whole-case prediction: wall time and peak memory of `i3rt predict` vs nnUNetPredictor on the same cases.

    bench/predict_vs_nnunet.py -m weights/brain_3d_fullres -i CASES_DIR [-f 0 1] [--disable-tta]
                               [--device cpu|cuda] [--precision f32|tf32|f16|bf16] [--accumulate fp16|fp32]
                               [--threads 2] [--i3rt build/i3rt]

Each side runs in its own child process under a fresh wrapper that reports the child's peak resident
memory (getrusage(RUSAGE_CHILDREN).ru_maxrss): nnUNetPredictor.predict_from_files on the model folder's
fold_K/checkpoint_final.pth (nnUNet_def_n_proc and torch threads = --threads; one export process), and the
i3rt CLI on fold_K.safetensors (--precision: i3rt's convolutions; default f16 on cuda, where nnUNetPredictor
runs the network under fp16 autocast, f32 on the CPU; --accumulate: i3rt's sliding-window sums, default fp16
as nnUNetPredictor's, so that the two segmentations differ only where the networks' own rounding tips a
near-tie). On CUDA the peak device memory each allocated is read from
torch.cuda.max_memory_allocated (nnU-Net) and from the CLI's final --json-progress event (i3rt's
i3rt_context_device_memory); both leave out the CUDA context. With it, the benchmark samples
`nvidia-smi --query-compute-apps=used_memory` every 50 ms (the whole process, context included).
Prints one table row per side, the ratios and, per case, the share of voxels where the two segmentations
agree (read with nibabel); --json writes them to a file.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NNUNET_CHILD = r"""
import os, sys, time, json, torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
a = json.loads(sys.argv[1])
dev = torch.device(a["device"])
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not a["disable_tta"],
                    perform_everything_on_device=a["device"] == "cuda", device=dev, verbose=False, allow_tqdm=False)
p.initialize_from_trained_model_folder(a["model"], use_folds=tuple(a["folds"]) if a["folds"] else None)
t0 = time.time()
p.predict_from_files(a["input"], a["output"], save_probabilities=False, overwrite=True,
                     num_processes_preprocessing=1, num_processes_segmentation_export=1)
res = {"seconds": time.time() - t0}
if a["device"] == "cuda":
    res["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
print("BENCH " + json.dumps(res))
"""


def sample_gpu_memory(stop, peak):
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            used = sum(int(x) for x in out.split() if x.strip().isdigit())
            peak[0] = max(peak[0], used)
        except (OSError, subprocess.SubprocessError):
            return
        time.sleep(0.05)


# Runs a command and reports its peak resident memory alone (a fresh wrapper per measurement).
WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run_child(cmd, env, device):
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_gpu_memory, args=(stop, peak), daemon=True) if device == "cuda" else None
    if sampler:
        sampler.start()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", WRAPPER] + cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}... failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    res = {"wall_s": wall}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            res.update(json.loads(line[6:]))
        elif line.startswith('{"event":"done"'):  # i3rt predict --json-progress
            res["device_peak_mib"] = json.loads(line)["device_peak_bytes"] / 2**20
        elif line.startswith("MAXRSS_KIB "):
            res["peak_rss_mib"] = int(line.split()[1]) / 1024.0
    if device == "cuda":
        res["device_peak_mib_sampled"] = peak[0]
    return res


def agreement(dir_a, dir_b):
    """Per case: the share of voxels with the same label in both outputs."""
    import nibabel
    import numpy as np

    shares = {}
    for name in sorted(os.listdir(dir_a)):
        if name.endswith(".nii.gz") and os.path.exists(os.path.join(dir_b, name)):
            a, b = (np.asarray(nibabel.load(os.path.join(d, name)).dataobj) for d in (dir_a, dir_b))
            shares[name[:-7]] = float(np.mean(a == b)) if a.shape == b.shape else 0.0
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-i", "--input", required=True)
    ap.add_argument("-f", "--folds", type=int, nargs="+")
    ap.add_argument("--disable-tta", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", choices=("f32", "tf32", "f16", "bf16"),
                    help="i3rt's convolutions (default: f16 on cuda, as nnUNetPredictor's autocast; f32 on the CPU)")
    ap.add_argument("--accumulate", choices=("fp16", "fp32"), default="fp16",
                    help="i3rt's sliding-window sums (default fp16, as nnUNetPredictor's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--i3rt", default=os.path.join(ROOT, "build", "i3rt"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    args.precision = args.precision or ("f16" if args.device == "cuda" else "f32")
    if args.precision != "f32" and args.device == "cpu":
        ap.error("--precision other than f32 needs --device cuda")

    env = dict(os.environ, BENCH_THREADS=str(args.threads), nnUNet_def_n_proc=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), nnUNet_results="/tmp", nnUNet_raw="/tmp", nnUNet_preprocessed="/tmp")
    results = {}
    with tempfile.TemporaryDirectory() as out_n, tempfile.TemporaryDirectory() as out_i:
        a = dict(model=os.path.abspath(args.model), input=os.path.abspath(args.input), output=out_n, folds=args.folds,
                 disable_tta=args.disable_tta, device=args.device)
        cmd = [args.i3rt, "predict", "-i", args.input, "-o", out_i, "-m", args.model, "--threads", str(args.threads),
               "--device", args.device, "--accumulate", args.accumulate, "--json-progress"]
        if args.device != "cpu":
            cmd += ["--precision", args.precision]
        if args.folds:
            cmd += ["-f"] + [str(f) for f in args.folds]
        if args.disable_tta:
            cmd.append("--disable-tta")
        results["i3rt"] = run_child(cmd, env, args.device)
        results["nnunet"] = run_child([sys.executable, "-c", NNUNET_CHILD, json.dumps(a)], env, args.device)
        results["agreement"] = agreement(out_n, out_i)
    i, n = results["i3rt"], results["nnunet"]
    print(f"{'':10} {'wall s':>9} {'peak RSS MiB':>13}   ({args.device}; i3rt {args.precision}, {args.accumulate} sums"
          f"{', nnU-Net fp16 autocast' if args.device == 'cuda' else ''})")
    for k in ("nnunet", "i3rt"):
        print(f"{k:10} {results[k]['wall_s']:9.2f} {results[k]['peak_rss_mib']:13.1f}")
    print(f"{'ratio':10} {n['wall_s'] / i['wall_s']:8.2f}x {n['peak_rss_mib'] / i['peak_rss_mib']:12.2f}x  "
          f"(nnU-Net / i3rt; wall time includes start-up and model loading of each process)")
    for case, share in results["agreement"].items():
        print(f"{case}: segmentations agree on {100 * share:.3f} % of voxels")
    if args.device == "cuda":
        print(f"device memory MiB, allocated by each (no CUDA context): nnU-Net {n['device_peak_mib']:.1f}, "
              f"i3rt {i['device_peak_mib']:.1f}; whole process as nvidia-smi saw it: nnU-Net "
              f"{n['device_peak_mib_sampled']}, i3rt {i['device_peak_mib_sampled']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
