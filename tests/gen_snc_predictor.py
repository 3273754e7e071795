#!/usr/bin/env python3
"""Fixtures for tests/test_snc_predictor.c: RITM's predictor loop (Slice-and-Conquer stage 1) on a real slice.

RITM is not installable here, so this file re-implements its inference loop from the source of
SamsungLabs/ritm_interactive_segmentation @ b9b44603672e15aa0be878b54fd26e7e1c5d2311, keeping its
structure and names: isegm/inference/predictors/base.py (BasePredictor: get_prediction, apply_transforms,
get_points_nd), transforms/zoom_in.py (ZoomIn, get_object_roi, get_roi_image_nd, check_object_roi),
transforms/flip.py (AddHorizontalFlip), transforms/base.py (SigmoidForPred), utils/misc.py (boxes),
inference/clicker.py (Click), evaluation.py (pred_thr 0.49). Dropped: the BRS predictors, click_models,
LimitLongestSide (max_size None in RITM's evaluation), get_state/set_state.

A start (Slice-and-Conquer's M_{t,0}^2D: the previous 3D prediction's slice) is set as RITM-derived
evaluations do with an init_mask: predictor.set_prev_mask(init_mask) makes it BasePredictor.prev_prediction
(FocalClick's alibaba/ClickSEG @ ae9b30a, isegm/inference/evaluation.py and predictors/base.py; RITM @
b9b4460 itself has the get_prediction(clicker, prev_mask) argument, whose first pass is the same: checked
below); ZoomIn does not see it (its _prev_probs stays None until its first output). The clicker then
starts on the start's errors (evaluate_sample's pred_mask = init_mask); here the clicks are given.

Two networks answer net(image_nd, points_nd)['instances'] as ISModel does:
  * "hrnet": RITM's HRNetModel from tests/gen_hrnet.py (random weights conditioned as there), converted to
    hrnet2d.safetensors with tools/convert_pt/convert_ritm.py; the encoding in float32 as RITM, the
    network in float64, logits back to float32. The cls_head bias is shifted so that 15% of the slice
    has a positive logit after a first click without the flip (random weights otherwise give logits far
    below 0; the flipped sequence then has 6% foreground).
  * "fake": logits = 6 pos - 6 neg + 8 (prev - 0.5) + 1.5 img0[y, min(x + 1, w - 1)] - 1 on the encoded
    input (img0 = the normalized red channel), float32. It gives masks that follow the clicks and the
    image, so that the zoom-in's crops move; the shifted image term is not mirror-symmetric, so the flip
    average matters. tests/test_snc_predictor.c implements the same function in C.

Slice: /usr/share/mricron/templates/ch2bet.nii.gz, axial z = 90, rows = y (217), columns = x (181),
windowed to [0, 99.5th percentile] and repeated into 3 channels.

Writes into --out: hrnet2d.safetensors and one seq_<name>.safetensors per click sequence:
  "image" [3, h, w], "start" [h, w] (sequences with a start only), "clicks" [n, 3] (y, x, positive),
  "probs" [n, h, w] (after each click),
  "crops" [n, 5] (has crop, rmin, rmax, cmin, cmax after each click); metadata "params": predictor
  parameters (net_clicks_limit absent: None) and "net".
"""
import argparse
import json
import os
import sys
from copy import deepcopy

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_hrnet  # noqa: E402  (RITM's HRNetModel re-implementation and its weight conditioning)

CH2BET = "/usr/share/mricron/templates/ch2bet.nii.gz"


# ---- isegm/inference/clicker.py -------------------------------------------------------------------

class Click:
    def __init__(self, is_positive, coords, indx=None):
        self.is_positive = is_positive
        self.coords = coords
        self.indx = indx

    @property
    def coords_and_indx(self):
        return (*self.coords, self.indx)

    def copy(self, **kwargs):
        self_copy = deepcopy(self)
        for k, v in kwargs.items():
            setattr(self_copy, k, v)
        return self_copy


# ---- isegm/utils/misc.py ----------------------------------------------------------------------------

def get_bbox_from_mask(mask):
    rows = np.any(mask, axis=1)
    cols = np.any(mask, axis=0)
    rmin, rmax = np.where(rows)[0][[0, -1]]
    cmin, cmax = np.where(cols)[0][[0, -1]]
    return rmin, rmax, cmin, cmax


def expand_bbox(bbox, expand_ratio, min_crop_size=None):
    rmin, rmax, cmin, cmax = bbox
    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    height = expand_ratio * (rmax - rmin + 1)
    width = expand_ratio * (cmax - cmin + 1)
    if min_crop_size is not None:
        height = max(height, min_crop_size)
        width = max(width, min_crop_size)
    rmin = int(round(rcenter - 0.5 * height))
    rmax = int(round(rcenter + 0.5 * height))
    cmin = int(round(ccenter - 0.5 * width))
    cmax = int(round(ccenter + 0.5 * width))
    return rmin, rmax, cmin, cmax


def clamp_bbox(bbox, rmin, rmax, cmin, cmax):
    return (max(rmin, bbox[0]), min(rmax, bbox[1]), max(cmin, bbox[2]), min(cmax, bbox[3]))


def get_bbox_iou(b1, b2):
    return get_segments_iou(b1[:2], b2[:2]) * get_segments_iou(b1[2:4], b2[2:4])


def get_segments_iou(s1, s2):
    a, b = s1
    c, d = s2
    intersection = max(0, min(b, d) - max(a, c) + 1)
    union = max(1e-6, max(b, d) - min(a, c) + 1)
    return intersection / union


# ---- isegm/inference/transforms -------------------------------------------------------------------

class SigmoidForPred:
    image_changed = False

    def transform(self, image_nd, clicks_lists):
        return image_nd, clicks_lists

    def inv_transform(self, prob_map):
        return torch.sigmoid(prob_map)

    def reset(self):
        pass


class AddHorizontalFlip:
    image_changed = False

    def transform(self, image_nd, clicks_lists):
        assert len(image_nd.shape) == 4
        image_nd = torch.cat([image_nd, torch.flip(image_nd, dims=[3])], dim=0)
        image_width = image_nd.shape[3]
        clicks_lists_flipped = []
        for clicks_list in clicks_lists:
            clicks_lists_flipped.append([click.copy(coords=(click.coords[0], image_width - click.coords[1] - 1))
                                         for click in clicks_list])
        return image_nd, clicks_lists + clicks_lists_flipped

    def inv_transform(self, prob_map):
        assert len(prob_map.shape) == 4 and prob_map.shape[0] % 2 == 0
        num_maps = prob_map.shape[0] // 2
        prob_map, prob_map_flipped = prob_map[:num_maps], prob_map[num_maps:]
        return 0.5 * (prob_map + torch.flip(prob_map_flipped, dims=[3]))

    def reset(self):
        pass


class ZoomIn:
    def __init__(self, target_size=400, skip_clicks=1, expansion_ratio=1.4, min_crop_size=200,
                 recompute_thresh_iou=0.5, prob_thresh=0.50):
        self.target_size = target_size
        self.min_crop_size = min_crop_size
        self.skip_clicks = skip_clicks
        self.expansion_ratio = expansion_ratio
        self.recompute_thresh_iou = recompute_thresh_iou
        self.prob_thresh = prob_thresh
        self.reset()

    def transform(self, image_nd, clicks_lists):
        assert image_nd.shape[0] == 1 and len(clicks_lists) == 1
        self.image_changed = False
        clicks_list = clicks_lists[0]
        if len(clicks_list) <= self.skip_clicks:
            return image_nd, clicks_lists
        self._input_image_shape = image_nd.shape
        current_object_roi = None
        if self._prev_probs is not None:
            current_pred_mask = (self._prev_probs > self.prob_thresh)[0, 0]
            if current_pred_mask.sum() > 0:
                current_object_roi = get_object_roi(current_pred_mask, clicks_list, self.expansion_ratio,
                                                    self.min_crop_size)
        if current_object_roi is None:
            if self.skip_clicks >= 0:
                return image_nd, clicks_lists
            current_object_roi = 0, image_nd.shape[2] - 1, 0, image_nd.shape[3] - 1
        update_object_roi = False
        if self._object_roi is None:
            update_object_roi = True
        elif not check_object_roi(self._object_roi, clicks_list):
            update_object_roi = True
        elif get_bbox_iou(current_object_roi, self._object_roi) < self.recompute_thresh_iou:
            update_object_roi = True
        if update_object_roi:
            self._object_roi = current_object_roi
            self.image_changed = True
        self._roi_image = get_roi_image_nd(image_nd, self._object_roi, self.target_size)
        return self._roi_image, [self._transform_clicks(clicks_list)]

    def inv_transform(self, prob_map):
        if self._object_roi is None:
            self._prev_probs = prob_map.cpu().numpy()
            return prob_map
        assert prob_map.shape[0] == 1
        rmin, rmax, cmin, cmax = self._object_roi
        prob_map = F.interpolate(prob_map, size=(rmax - rmin + 1, cmax - cmin + 1), mode='bilinear',
                                 align_corners=True)
        if self._prev_probs is not None:
            new_prob_map = torch.zeros(*self._prev_probs.shape, device=prob_map.device, dtype=prob_map.dtype)
            new_prob_map[:, :, rmin:rmax + 1, cmin:cmax + 1] = prob_map
        else:
            new_prob_map = prob_map
        self._prev_probs = new_prob_map.cpu().numpy()
        return new_prob_map

    def check_possible_recalculation(self):
        if self._prev_probs is None or self._object_roi is not None or self.skip_clicks > 0:
            return False
        pred_mask = (self._prev_probs > self.prob_thresh)[0, 0]
        if pred_mask.sum() > 0:
            possible_object_roi = get_object_roi(pred_mask, [], self.expansion_ratio, self.min_crop_size)
            image_roi = (0, self._input_image_shape[2] - 1, 0, self._input_image_shape[3] - 1)
            if get_bbox_iou(possible_object_roi, image_roi) < 0.50:
                return True
        return False

    def reset(self):
        self._input_image_shape = None
        self._object_roi = None
        self._prev_probs = None
        self._roi_image = None
        self.image_changed = False

    def _transform_clicks(self, clicks_list):
        if self._object_roi is None:
            return clicks_list
        rmin, rmax, cmin, cmax = self._object_roi
        crop_height, crop_width = self._roi_image.shape[2:]
        transformed_clicks = []
        for click in clicks_list:
            new_r = crop_height * (click.coords[0] - rmin) / (rmax - rmin + 1)
            new_c = crop_width * (click.coords[1] - cmin) / (cmax - cmin + 1)
            transformed_clicks.append(click.copy(coords=(new_r, new_c)))
        return transformed_clicks


def get_object_roi(pred_mask, clicks_list, expansion_ratio, min_crop_size):
    pred_mask = pred_mask.copy()
    for click in clicks_list:
        if click.is_positive:
            pred_mask[int(click.coords[0]), int(click.coords[1])] = 1
    bbox = get_bbox_from_mask(pred_mask)
    bbox = expand_bbox(bbox, expansion_ratio, min_crop_size)
    h, w = pred_mask.shape[0], pred_mask.shape[1]
    return clamp_bbox(bbox, 0, h - 1, 0, w - 1)


def get_roi_image_nd(image_nd, object_roi, target_size):
    rmin, rmax, cmin, cmax = object_roi
    height = rmax - rmin + 1
    width = cmax - cmin + 1
    if isinstance(target_size, tuple):
        new_height, new_width = target_size
    else:
        scale = target_size / max(height, width)
        new_height = int(round(height * scale))
        new_width = int(round(width * scale))
    with torch.no_grad():
        roi_image_nd = image_nd[:, :, rmin:rmax + 1, cmin:cmax + 1]
        return F.interpolate(roi_image_nd, size=(new_height, new_width), mode='bilinear', align_corners=True)


def check_object_roi(object_roi, clicks_list):
    for click in clicks_list:
        if click.is_positive:
            if click.coords[0] < object_roi[0] or click.coords[0] >= object_roi[1]:
                return False
            if click.coords[1] < object_roi[2] or click.coords[1] >= object_roi[3]:
                return False
    return True


# ---- isegm/inference/predictors/base.py (NoBRS) -----------------------------------------------------

class BasePredictor:
    def __init__(self, model, net_clicks_limit=None, with_flip=False, zoom_in=None):
        self.with_flip = with_flip
        self.net_clicks_limit = net_clicks_limit
        self.zoom_in = zoom_in
        self.net = model
        self.transforms = [zoom_in] if zoom_in is not None else []
        self.transforms.append(SigmoidForPred())
        if with_flip:
            self.transforms.append(AddHorizontalFlip())

    def set_input_image(self, image_nd):
        """image_nd [3, h, w] float in [0, 1] (RITM: ToTensor of an RGB uint8 image)."""
        for transform in self.transforms:
            transform.reset()
        self.original_image = image_nd.unsqueeze(0)
        self.prev_prediction = torch.zeros_like(self.original_image[:, :1, :, :])

    def set_prev_mask(self, mask):
        """FocalClick's (alibaba/ClickSEG) BasePredictor.set_prev_mask (evaluate_sample's init_mask)."""
        self.prev_prediction = mask.unsqueeze(0).unsqueeze(0).float()

    def get_prediction(self, clicks_list, prev_mask=None):
        input_image = self.original_image
        if prev_mask is None:
            prev_mask = self.prev_prediction
        input_image = torch.cat((input_image, prev_mask), dim=1)  # with_prev_mask
        image_nd, clicks_lists, _ = self.apply_transforms(input_image, [clicks_list])
        pred_logits = self._get_prediction(image_nd, clicks_lists)
        prediction = F.interpolate(pred_logits, mode='bilinear', align_corners=True, size=image_nd.size()[2:])
        for t in reversed(self.transforms):
            prediction = t.inv_transform(prediction)
        if self.zoom_in is not None and self.zoom_in.check_possible_recalculation():
            return self.get_prediction(clicks_list)
        self.prev_prediction = prediction
        return prediction.cpu().numpy()[0, 0]

    def _get_prediction(self, image_nd, clicks_lists):
        points_nd = self.get_points_nd(clicks_lists)
        return self.net(image_nd, points_nd)['instances']

    def apply_transforms(self, image_nd, clicks_lists):
        is_image_changed = False
        for t in self.transforms:
            image_nd, clicks_lists = t.transform(image_nd, clicks_lists)
            is_image_changed |= t.image_changed
        return image_nd, clicks_lists, is_image_changed

    def get_points_nd(self, clicks_lists):
        total_clicks = []
        num_pos_clicks = [sum(x.is_positive for x in clicks_list) for clicks_list in clicks_lists]
        num_neg_clicks = [len(clicks_list) - num_pos for clicks_list, num_pos in zip(clicks_lists, num_pos_clicks)]
        num_max_points = max(num_pos_clicks + num_neg_clicks)
        if self.net_clicks_limit is not None:
            num_max_points = min(self.net_clicks_limit, num_max_points)
        num_max_points = max(1, num_max_points)
        for clicks_list in clicks_lists:
            clicks_list = clicks_list[:self.net_clicks_limit]
            pos_clicks = [click.coords_and_indx for click in clicks_list if click.is_positive]
            pos_clicks = pos_clicks + (num_max_points - len(pos_clicks)) * [(-1, -1, -1)]
            neg_clicks = [click.coords_and_indx for click in clicks_list if not click.is_positive]
            neg_clicks = neg_clicks + (num_max_points - len(neg_clicks)) * [(-1, -1, -1)]
            total_clicks.append(pos_clicks + neg_clicks)
        return torch.tensor(total_clicks)


# ---- the networks -------------------------------------------------------------------------------------

def encode(model, image_nd, points_nd):
    """ISModel's prepare_input + get_coord_features in float32; DistMaps splits off the click index."""
    return model.encode(image_nd.float(), points_nd[:, :, :2].float())


class HRNetNet:
    def __init__(self, model):
        self.model = model

    def __call__(self, image_nd, points_nd):
        x = encode(self.model, image_nd, points_nd)
        with torch.no_grad():
            _, up = self.model.forward_encoded(x.double())
        return {'instances': up.float()}


class FakeNet:
    def __init__(self, model):
        self.model = model  # only its encoding

    def __call__(self, image_nd, points_nd):
        x = encode(self.model, image_nd, points_nd)
        img0, prev, pos, neg = x[:, 0:1], x[:, 3:4], x[:, 4:5], x[:, 5:6]
        shifted = torch.cat([img0[..., 1:], img0[..., -1:]], dim=3)
        logits = 6 * pos - 6 * neg + 8 * (prev - 0.5) + 1.5 * shifted - 1
        return {'instances': logits}


# ---- fixtures -------------------------------------------------------------------------------------------

def load_slice():
    vol = np.asarray(nib.load(CH2BET).dataobj, dtype=np.float32)  # (x 181, y 217, z 181)
    sl = vol[:, :, 90].T  # rows y, columns x
    hi = np.percentile(sl, 99.5)
    img = np.clip(sl / hi, 0, 1).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(np.stack([img] * 3)))


def make_predictor(net, params):
    zoom = ZoomIn(target_size=params["target_size"], skip_clicks=params["skip_clicks"],
                  expansion_ratio=params["expansion_ratio"], min_crop_size=params["min_crop_size"]) \
        if params["zoom_in"] else None
    return BasePredictor(net, net_clicks_limit=params.get("net_clicks_limit"), with_flip=bool(params["with_flip"]),
                         zoom_in=zoom), zoom


def soft_start(h, w, cy, cx, ry, rx):
    """A soft 'previous 3D prediction' on the slice: sigmoid(6 (1 - e)) of the ellipse norm e, float32."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    e = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    return torch.from_numpy((1 / (1 + np.exp(-6 * (1 - e)))).astype(np.float32))


def first_click_with_prev_mask(net, image, click, params, start):
    """RITM's own route for a start: get_prediction(clicker, prev_mask=start) on the first click."""
    predictor, _ = make_predictor(net, params)
    predictor.set_input_image(image)
    return predictor.get_prediction([Click(is_positive=bool(click[2]), coords=click[:2], indx=0)],
                                    prev_mask=start[None, None])


def run_sequence(net, image, clicks, params, choose_next=None, start=None):
    """clicks: list of (y, x, positive); choose_next(predictor) may append clicks that depend on the crop;
    start: the probability map the predictor starts from (None: RITM's zeros)."""
    predictor, zoom = make_predictor(net, params)
    predictor.set_input_image(image)
    if start is not None:
        predictor.set_prev_mask(start)
    clicks_list, probs, crops = [], [], []
    clicks = list(clicks)
    i = 0
    while i < len(clicks) or (choose_next and choose_next(predictor, clicks)):
        y, x, positive = clicks[i]
        clicks_list.append(Click(is_positive=bool(positive), coords=(y, x), indx=i))
        probs.append(torch.from_numpy(predictor.get_prediction(clicks_list).copy()))
        roi = zoom._object_roi if zoom is not None else None
        crops.append([0, 0, 0, 0, 0] if roi is None else [1, *roi])
        p = probs[-1]
        print(f"  click {i} {clicks[i]}: crop {crops[-1]}, foreground (> 0.49) {int((p > 0.49).sum())} px, "
              f"closest |p - 0.49| {float((p - 0.49).abs().min()):.2e}, |p - 0.5| {float((p - 0.5).abs().min()):.2e}")
        i += 1
    seq = {"clicks": torch.tensor(clicks, dtype=torch.float32), "probs": torch.stack(probs).float(),
           "crops": torch.tensor(crops, dtype=torch.float32)}
    if start is not None:
        seq["start"] = start
    return seq


def save_sequence(out, name, image, seq, params, net):
    meta = {"params": json.dumps(params), "net": net}
    save_file({"image": image, **seq}, os.path.join(out, f"seq_{name}.safetensors"), metadata=meta)


def negative_next_to_crop(predictor, clicks):
    """After the far positive click: a negative click 2 px below the crop (inside the slice), whose disk
    reaches into the crop while the click lies outside it (DistMaps keeps it)."""
    if len(clicks) != 4:
        return False
    rmin, rmax, cmin, cmax = predictor.zoom_in._object_roi
    clicks.append((float(rmax + 2), float((cmin + cmax) // 2), 0))
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(2024)

    model = gen_hrnet.HRNetModel()
    gen_hrnet.random_calibrated(model, gen, ((96, 112), (64, 80)), gen_hrnet.spread_clicks)
    model.double()
    image = load_slice()
    h, w = image.shape[1:]

    # cls_head bias: 15% of the slice above 0 after a first click at the slice's centre (no flip)
    first = BasePredictor(HRNetNet(model))
    first.set_input_image(image)
    logits = torch.logit(torch.from_numpy(first.get_prediction([Click(True, (108, 90), 0)])).double(), eps=1e-12)
    with torch.no_grad():
        model.feature_extractor.cls_head.bias -= float(torch.quantile(logits.flatten(), 0.85))

    gen_hrnet.save_converted(model, gen_hrnet.HRNET_CLASS, gen_hrnet.HRNET18_PARAMS,
                             os.path.join(args.out, "hrnet2d.safetensors"))
    # the reference runs the weights as stored (float32) in float64
    model.float().double()

    zoom = dict(zoom_in=1, target_size=100, skip_clicks=1, expansion_ratio=1.4, min_crop_size=60, with_flip=1)
    fake_clicks = [(100.0, 90.0, 1), (108.0, 98.0, 1), (104.0, 93.0, 0), (40.0, 150.0, 1)]
    sequences = [
        # the crop follows the mask, a far positive click forces a new crop, a negative click just outside
        ("fake_zoom", "fake", zoom, fake_clicks, negative_next_to_crop),
        # skip_clicks 0: ZoomIn.check_possible_recalculation predicts the first click again on a crop
        ("fake_recalc", "fake", {**zoom, "skip_clicks": 0}, fake_clicks[:3], None),
        # skip_clicks -1: the whole slice is the first crop; no flip
        ("fake_whole", "fake", {**zoom, "skip_clicks": -1, "with_flip": 0}, fake_clicks[:3], None),
        # only the first 2 clicks reach the network (the zoom sees all)
        ("fake_limit", "fake", {**zoom, "net_clicks_limit": 2}, fake_clicks, None),
        # no zoom, no flip: the network on the slice itself
        ("fake_plain", "fake", {**zoom, "zoom_in": 0, "with_flip": 0}, fake_clicks[:2], None),
        # the HRNet: the first click on the whole slice, then crops of longer side 128
        ("hrnet", "hrnet", {**zoom, "target_size": 128, "min_crop_size": 80},
         [(108.0, 90.0, 1), (60.0, 70.0, 0), (150.0, 100.0, 1)], None),
    ]
    # a start (the 3D prediction's slice): a soft ellipse around rows 115, columns 95
    start = soft_start(h, w, 115.0, 95.0, 30.0, 22.0)
    sequences = [(*seq, None) for seq in sequences] + [
        # the first click sees the start as its previous mask; the crop of the second follows what it made
        ("fake_start", "fake", zoom, fake_clicks, None, start),
        # skip_clicks 0: the recalculated first click on a crop again with the start as previous mask
        ("fake_start_recalc", "fake", {**zoom, "skip_clicks": 0}, fake_clicks[:3], None, start),
        # the HRNet from the start: the first click on the whole slice, the second on a crop
        ("hrnet_start", "hrnet", {**zoom, "target_size": 128, "min_crop_size": 80},
         [(108.0, 90.0, 1), (60.0, 70.0, 0)], None, start),
    ]
    for name, net_name, params, clicks, choose, seq_start in sequences:
        print(f"{name}: {params}{' from a start' if seq_start is not None else ''}")
        net = HRNetNet(model) if net_name == "hrnet" else FakeNet(model)
        seq = run_sequence(net, image, clicks, params, choose, seq_start)
        if seq_start is not None and net_name == "fake" and params["skip_clicks"] > 0:
            # RITM's own get_prediction(prev_mask=start) gives the same first click (no recursion here)
            direct = first_click_with_prev_mask(net, image, clicks[0], params, seq_start)
            assert np.array_equal(direct, seq["probs"][0].numpy()), "set_prev_mask and prev_mask differ"
        save_sequence(args.out, name, image, seq, params, net_name)
    print(f"slice {h} x {w}")


if __name__ == "__main__":
    main()
