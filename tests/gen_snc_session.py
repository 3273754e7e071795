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


def small_clicks(i):
    """Calibration case i's clicks on the small (40 x 48, 32 x 40) calibration images."""
    return [(0, 5.0 + 6 * i, 30.0 - 5 * i, 1), (0, 25.0 - 4 * i, 10.0 + 6 * i, 0)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(8)
    torch.manual_seed(8)  # the mask attention's fc1 keeps PyTorch's default initialization (fc2 is zero)

    model = gen_hrnet.HRNetModel(**MODEL_ARGS)
    gen_hrnet.random_calibrated(model, gen, ((40, 48), (32, 40)), small_clicks)

    image, prev, pts = gen_hrnet.random_case(gen, (24, 28), [(0, 12.0, 14.0, 1)])
    with torch.no_grad():
        x = model.encode(torch.cat([image, torch.zeros_like(prev)[None]], 0)[None], pts)
        _, logits = model.forward_encoded(x)
        model.feature_extractor.cls_head.bias -= float(torch.quantile(logits.flatten(), 0.8))

    guided = GuidedHRNetModel(attention_hidden=16, **MODEL_ARGS)
    guided.load_state_dict(guided_state_from_2d(model.state_dict(), guided))
    for net, class_name, name, flags in ((model, gen_hrnet.HRNET_CLASS, "hrnet2d", ()),
                                         (guided, "snc_models.GuidedHRNetModel", "guided3d", ("--acs",))):
        gen_hrnet.save_converted(net, class_name, CONFIG, os.path.join(args.out, name + ".safetensors"), *flags)
        print("wrote", os.path.join(args.out, name + ".safetensors"))


if __name__ == "__main__":
    main()
