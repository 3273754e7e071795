#!/usr/bin/env python3
"""Fixtures for tests/test_snc_session.c: RITM-HRNet18 weight files with random weights for the
Slice-and-Conquer session's end-to-end test (the loop runs the real networks; no reference numbers are
compared here: the networks themselves are checked by tests/test_hrnet.c and test_snc_predictor.c).

Writes into --out:
  hrnet2d.safetensors   RITM's HRNetModel, HRNet-18s (RITM's small variant: 2 blocks per branch, OCR width
                        48, to keep the test fast; the code path is HRNet-18's), tools/snc_models.py's
                        re-implementation with tests/gen_hrnet.py's weight conditioning (BN statistics
                        measured on small random images), converted with tools/convert_pt/convert_ritm.py;
                        the cls_head bias is shifted so that about a fifth of a first click's logits are
                        positive (random weights otherwise predict nothing).
  guided3d.safetensors  the guided 3D network initialized from those 2D weights as the paper's transfer
                        learning does (snc_models.guided_state_from_2d: the guide channels and the mask
                        attention start neutral), converted with convert_ritm.py --acs.
"""
import argparse
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_hrnet  # noqa: E402
from snc_models import GuidedHRNetModel, guided_state_from_2d  # noqa: E402

CONFIG = dict(width=18, ocr_width=48, small=True, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
              use_disks=True, norm_radius=5, with_prev_mask=True)
MODEL_ARGS = {k: CONFIG[k] for k in ("width", "ocr_width", "small", "use_leaky_relu", "norm_radius", "use_disks",
                                     "with_prev_mask")}


def save_and_convert(model, class_name, out, acs):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.pth")
        config = {"class": class_name,
                  "params": {k: {"type": "builtin", "value": v, "specified": True} for k, v in CONFIG.items()}}
        torch.save({"state_dict": model.state_dict(), "config": config}, ckpt)
        gen_hrnet.convert(ckpt, out, acs)
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(8)

    model = gen_hrnet.HRNetModel(**MODEL_ARGS)
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

    save_and_convert(model, "isegm.model.is_hrnet_model.HRNetModel", os.path.join(args.out, "hrnet2d.safetensors"),
                     False)
    guided = GuidedHRNetModel(attention_hidden=16, **MODEL_ARGS)
    guided.load_state_dict(guided_state_from_2d(model.state_dict(), guided))
    save_and_convert(guided, "snc_models.GuidedHRNetModel", os.path.join(args.out, "guided3d.safetensors"), True)


if __name__ == "__main__":
    main()
