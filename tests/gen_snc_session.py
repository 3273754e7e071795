#!/usr/bin/env python3
"""Fixtures for tests/test_snc_session.c: RITM-HRNet18 weight files with random weights for the
Slice-and-Conquer session's end-to-end test (the loop runs the real networks; no reference numbers are
compared here: the networks themselves are checked by tests/test_hrnet.c and test_snc_predictor.c).

Writes into --out:
  hrnet2d.safetensors  RITM's HRNetModel (tests/gen_hrnet.py's re-implementation and its weight
                       conditioning, BN statistics measured on small random images), converted with
                       tools/convert_pt/convert_ritm.py; the cls_head bias is shifted so that about a
                       fifth of a first click's logits are positive (random weights otherwise predict
                       nothing, and the loop would never leave its first click).
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_hrnet  # noqa: E402

CONFIG = dict(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
              use_disks=True, norm_radius=5, with_prev_mask=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(8)

    model = gen_hrnet.HRNetModel()
    gen_hrnet.randomize(model, gen)
    calib = []
    for size in ((40, 48), (32, 40)):
        cases = [gen_hrnet.random_case(gen, size, [(0, 5.0 + 6 * i, 30.0 - 5 * i, 1), (0, 25.0 - 4 * i, 10.0 + 6 * i, 0)])
                 for i in range(4)]
        calib.append(torch.cat([model.encode(torch.cat([img, prev[None]], 0)[None], pts) for img, prev, pts in cases]))
    gen_hrnet.calibrate_bn(model, gen, calib)

    image, prev, pts = gen_hrnet.random_case(gen, (24, 28), [(0, 12.0, 14.0, 1)])
    with torch.no_grad():
        x = model.encode(torch.cat([image, torch.zeros_like(prev)[None]], 0)[None], pts)
        _, logits = model.forward_encoded(x)
        model.feature_extractor.cls_head.bias -= float(torch.quantile(logits.flatten(), 0.8))

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "hrnet18.pth")
        config = {"class": "isegm.model.is_hrnet_model.HRNetModel",
                  "params": {k: {"type": "builtin", "value": v, "specified": True} for k, v in CONFIG.items()}}
        torch.save({"state_dict": model.state_dict(), "config": config}, ckpt)
        gen_hrnet.convert(ckpt, os.path.join(args.out, "hrnet2d.safetensors"), False)
    print("wrote", os.path.join(args.out, "hrnet2d.safetensors"))


if __name__ == "__main__":
    main()
