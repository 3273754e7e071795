#!/usr/bin/env python3
"""PyTorch / cuDNN baselines for bench/gpu_bench.c, on the same shapes, in the same run (kernels/gpu_check.sh).

  gpu_torch.py ops [--quick] [--runs R]
  gpu_torch.py forward MODEL D H W [--runs R]

ops: the 3x3x3 convolution at the nnU-Net 3d_fullres stage shapes of gpu_bench (cuDNN with
cudnn.benchmark, channels_last_3d; fp32 with TF32 off, TF32, fp16 and bf16 autocast), a whole encoder stage
(conv-InstanceNorm-LeakyReLU twice, fp16 autocast), instance norm + LeakyReLU, softmax with entropy, max
probability, argmax and their per-slice sums (as the fused i3rt kernel computes them), and the Gaussian
sliding-window accumulation of one 128^3 tile. forward: the network of an i3rt weight file (rebuilt with
nnunetv2's get_network_from_plans from the file's `network` metadata, weights loaded from the file) on a
[1, C, D, H, W] input: fp32, eager with fp16 autocast (nnU-Net's inference path), and torch.compile of it.
One JSON object per line, like gpu_bench; times are medians of R runs after warm-up, CUDA-synchronized."""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def emit(**kw):
    print(json.dumps(kw), flush=True)


def stage_shapes(quick):
    for s in range(2 if quick else 6):
        c = (8 << s) if quick else min(32 << s, 320)
        yield s, c, (8 >> s) if quick else (128 >> s)


def bench_convs(runs, quick):
    dev = "cuda"
    for s, c, side in stage_shapes(quick):
        x = torch.randn(1, c, side, side, side, device=dev).to(memory_format=torch.channels_last_3d)
        conv = torch.nn.Conv3d(c, c, 3, padding=1, bias=False).to(dev).to(memory_format=torch.channels_last_3d)
        flop = 2.0 * x.numel() * c * 27
        for name, tf32, dtype in (("f32", False, None), ("tf32", True, None), ("f16", False, torch.float16),
                                  ("bf16", False, torch.bfloat16)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

            def run():
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                    conv(x)

            emit(bench="op", name=f"conv3x3x3 {name}", impl="cudnn", stage=s, c=c, side=side,
                 ms=median_ms(run, runs), flop=flop, precision=name)
        torch.backends.cudnn.allow_tf32 = False
        block = torch.nn.Sequential(*[m for _ in range(2) for m in (
            torch.nn.Conv3d(c, c, 3, padding=1), torch.nn.InstanceNorm3d(c, eps=1e-5, affine=True),
            torch.nn.LeakyReLU(0.01, inplace=True))]).to(dev).to(memory_format=torch.channels_last_3d)

        def run_block():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                block(x)

        emit(bench="block", name="stage conv-norm-act x2", impl="cudnn fp16 autocast", stage=s, c=c, side=side,
             ms=median_ms(run_block, runs), flop=2 * flop)


def bench_maps(runs, quick):
    dev = "cuda"
    c, d, h, w = (3, 8, 20, 40) if quick else (3, 128, 512, 512)
    logits = torch.randn(1, c, d, h, w, device=dev)

    def uncertainty():
        with torch.no_grad():
            p = torch.softmax(logits, 1)
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1) / torch.log(torch.tensor(float(c)))
            msp, argmax = p.max(1)
            for m in (entropy, msp, argmax.float()):
                m.sum((2, 3)), m.sum((1, 3)), m.sum((1, 2))

    emit(bench="op", name="softmax+entropy/msp/argmax+slice sums", impl="torch eager", c=c, d=d, h=h, w=w,
         ms=median_ms(uncertainty, runs), bytes=(c + 3) * d * h * w * 4.0)
    x = torch.randn(1, 32, d // 4, h // 4, w // 4, device=dev)
    norm = torch.nn.InstanceNorm3d(32, eps=1e-5).to(dev)

    def run_norm():
        with torch.no_grad():
            F.leaky_relu(norm(x), 0.01)

    emit(bench="op", name="instance norm + leaky relu", impl="torch eager", c=32, d=d // 4, h=h // 4, w=w // 4,
         ms=median_ms(run_norm, runs), bytes=3.0 * x.numel() * 4)
    tile, volume = (8, 12) if quick else (128, 256)
    pred = torch.randn(3, tile, tile, tile, device=dev)
    gauss = torch.rand(tile, tile, tile, device=dev)
    acc = torch.zeros(3, volume, volume, volume, device=dev)
    wsum = torch.zeros(volume, volume, volume, device=dev)
    z0, x0 = volume - tile, (volume - tile) // 2

    def accumulate():  # nnunetv2's predicted_logits[sl] += prediction * gaussian; n_predictions[sl[1:]] += gaussian
        acc[:, z0:z0 + tile, 0:tile, x0:x0 + tile] += pred * gauss
        wsum[z0:z0 + tile, 0:tile, x0:x0 + tile] += gauss

    emit(bench="op", name="sliding-window gaussian accumulate (3 classes)", impl="torch eager", tile=tile,
         volume=volume, ms=median_ms(accumulate, runs), bytes=(3 + 1 + 2 * 4.0) * tile ** 3 * 4)


def load_network(path):
    from safetensors import safe_open
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["network"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    kwargs = dict(meta["arch_kwargs"])
    requires_import = [k for k in ("conv_op", "norm_op", "dropout_op", "nonlin") if isinstance(kwargs.get(k), str)]
    classes = {"PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
               "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"}
    net = get_network_from_plans(classes[meta["class"]], kwargs, requires_import, meta["input_channels"],
                                 meta["num_classes"], allow_init=True, deep_supervision=False)
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    # the converter drops aliases of the same parameters (tools/convert_pt: all_modules.N, decoder.encoder.*)
    # and the deep-supervision heads (every seg layer but the last, which the eval forward uses)
    last_head = f"decoder.seg_layers.{len(net.decoder.seg_layers) - 1}."
    missing = [k for k in missing if ".all_modules." not in k and not k.startswith("decoder.encoder.")
               and not (k.startswith("decoder.seg_layers.") and not k.startswith(last_head))]
    if missing or unexpected:
        sys.exit(f"gpu_torch.py: {path}: tensors missing for {missing[:5]}, unexpected {unexpected[:5]}")
    return net, meta


def bench_forward(path, spatial, runs):
    torch.backends.cudnn.benchmark = True
    net, meta = load_network(path)
    net = net.cuda().eval()
    size = spatial[1:] if meta["dims"] == 2 else spatial  # 2D networks: D = 1
    x = torch.randn(1, meta["input_channels"], *size, device="cuda")
    shape = dict(network=meta["class"], d=spatial[0], h=spatial[1], w=spatial[2])

    def fp32():
        with torch.no_grad():
            net(x)

    def amp(model):
        def run():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                model(x)
        return run

    torch.backends.cudnn.allow_tf32 = False
    emit(bench="forward", name="torch eager fp32", **shape, ms=median_ms(fp32, runs))
    emit(bench="forward", name="torch eager fp16 autocast", **shape, ms=median_ms(amp(net), runs))
    layout = torch.channels_last if meta["dims"] == 2 else torch.channels_last_3d
    net_cl = net.to(memory_format=layout)
    emit(bench="forward", name="torch eager fp16 autocast channels_last", **shape, ms=median_ms(amp(net_cl), runs))
    compiled = torch.compile(net)
    emit(bench="forward", name="torch.compile fp16 autocast", **shape, ms=median_ms(amp(compiled), runs, warmup=5))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("ops", "forward"))
    ap.add_argument("args", nargs="*")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_torch.py: no CUDA device")
    torch.backends.cudnn.benchmark = True
    emit(bench="device", name=torch.cuda.get_device_name(), torch=torch.__version__,
         cudnn=torch.backends.cudnn.version())
    if a.mode == "ops":
        bench_convs(a.runs, a.quick)
        bench_maps(a.runs, a.quick)
    else:
        if len(a.args) != 4:
            sys.exit("usage: gpu_torch.py forward MODEL D H W")
        bench_forward(a.args[0], [int(v) for v in a.args[1:]], a.runs)


if __name__ == "__main__":
    main()
