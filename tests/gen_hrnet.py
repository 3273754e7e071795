#!/usr/bin/env python3
"""Fixtures for tests/test_hrnet.c: RITM's HRNet-18 + OCR interactive network (HRNetModel), 2D and ACS 3D.

RITM is not installable and its released checkpoints were not reachable, so this file holds a
re-implementation of the inference path of RITM's model, written from the source of
SamsungLabs/ritm_interactive_segmentation @ b9b44603672e15aa0be878b54fd26e7e1c5d2311:
  isegm/model/is_model.py (ISModel: prepare_input, get_coord_features, maps_transform, forward),
  isegm/model/is_hrnet_model.py (HRNetModel), isegm/model/modeling/hrnet_ocr.py (HighResolutionModule,
  HighResolutionNet), isegm/model/modeling/ocr.py (SpatialGather_Module, SpatialOCR_Module,
  ObjectAttentionBlock2D), isegm/model/modeling/resnetv1b.py (BasicBlockV1b, BottleneckV1b),
  isegm/model/ops.py (DistMaps GPU path, ScaleLayer, BatchImageNormalize).
Module names, order and arguments follow those files, so the state-dict keys are RITM's: the script
asserts that they and their shapes equal tests/support/weights_ritm_hrnet18_keys.txt (dumped from RITM's
own HRNetModel) exactly. Configuration: models/iter_mask/hrnet18_cocolvis_itermask_3p.py, i.e.
HRNetModel(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True, use_rgb_conv=False,
use_disks=True, norm_radius=5, with_prev_mask=True), small=False; the aux output is not part of inference.

The ACS 3D network is this model converted by ACSConv's rules (M3DV/ACSConv @ 95dc860, converters/
base_converter.py, operators/acsconv.py, operators/functional.py acs_conv_f): every Conv2d becomes an ACS
convolution with the same 2D weight (output channels split axial/coronal/sagittal), BatchNorm2d becomes
BatchNorm3d with the same tensors, and the bilinear interpolations trilinear (RITM calls F.interpolate,
which ACSConverter does not convert: the ports below pick the mode from the tensor's rank, as
Slice-and-Conquer had to). The spatial softmax of the OCR head then runs over the volume, and DistMaps
gives balls (the z distance added).

Weights: seeded random (conv weights He-normal, biases and BN affine random, smaller gains on the BNs that
close residual branches, ScaleLayer scale -0.3 so that |scale| matters); BN running statistics measured
on 12 random images with clicks (train-mode forward, cumulative average) and then perturbed, so that they
are non-trivial but keep activations of order one through the ~300 layers and the test logits straddle 0
(about -2.4..0.9) as a segmentation's do. (Without this conditioning PyTorch's own float32 forward was
5e-5 off its float64 one, relative to the largest logit.) Saved as RITM's save_checkpoint does ({'state_dict', 'config'}), converted with
tools/convert_pt/convert_ritm.py (2D, and --acs). The references run in float64 on those float32 weights.

Writes into --out:
  hrnet2d.safetensors, hrnet3d.safetensors   the converted weights (acs "0" / "1")
  io2d.safetensors, io3d.safetensors         "image" [3, d, h, w] in [0, 1], "prev_mask" [d, h, w],
      "clicks" [n, 4] (z, y, x, positive), "input" [1, 6, d, h, w] (the encoded network input),
      "logits_low" [1, 1, d', h', w'] (cls_head output), "logits" [1, 1, d, h, w] (upsampled);
      2D: d = 1, 64 x 80; 3D: 24 x 32 x 40.
  bad_missing, bad_acs, bad_rgb_conv, bad_coord .safetensors: hrnet2d with a BN tensor removed, metadata
      "acs": "2", arch_kwargs.use_rgb_conv true, coord_channels 2 with with_prev_mask true.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(ROOT, "tests", "support", "weights_ritm_hrnet18_keys.txt")


def interpolate(x, size):
    """RITM's F.interpolate(..., mode='bilinear', align_corners=True); trilinear on 5-D tensors (ACS)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=True)


# ---- resnetv1b.py ------------------------------------------------------------------------------------

class BasicBlockV1b(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class BottleneckV1b(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


# ---- hrnet_ocr.py ------------------------------------------------------------------------------------

class HighResolutionModule(nn.Module):
    def __init__(self, num_branches, block, num_blocks, num_inchannels, num_channels, norm_layer):
        super().__init__()
        self.num_inchannels = num_inchannels
        self.num_branches = num_branches
        self.norm_layer = norm_layer
        self.branches = nn.ModuleList([self._make_one_branch(i, block, num_blocks, num_channels)
                                       for i in range(num_branches)])
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU()

    def _make_one_branch(self, i, block, num_blocks, num_channels):
        downsample = None  # HRNet's branches keep their channels: no downsample (as RITM's check finds)
        assert self.num_inchannels[i] == num_channels[i] * block.expansion
        layers = [block(self.num_inchannels[i], num_channels[i], downsample=downsample, norm_layer=self.norm_layer)]
        for _ in range(1, num_blocks[i]):
            layers.append(block(self.num_inchannels[i], num_channels[i], norm_layer=self.norm_layer))
        return nn.Sequential(*layers)

    def _make_fuse_layers(self):
        c = self.num_inchannels
        fuse_layers = []
        for i in range(self.num_branches):  # multi_scale_output is True in every RITM stage
            fuse_layer = []
            for j in range(self.num_branches):
                if j > i:
                    fuse_layer.append(nn.Sequential(nn.Conv2d(c[j], c[i], kernel_size=1, bias=False),
                                                    self.norm_layer(c[i])))
                elif j == i:
                    fuse_layer.append(None)
                else:
                    conv3x3s = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(c[j], c[i], kernel_size=3, stride=2, padding=1, bias=False),
                                self.norm_layer(c[i])))
                        else:
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(c[j], c[j], kernel_size=3, stride=2, padding=1, bias=False),
                                self.norm_layer(c[j]), nn.ReLU()))
                    fuse_layer.append(nn.Sequential(*conv3x3s))
            fuse_layers.append(nn.ModuleList(fuse_layer))
        return nn.ModuleList(fuse_layers)

    def forward(self, x):
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
            for j in range(1, self.num_branches):
                if i == j:
                    y = y + x[j]
                elif j > i:
                    y = y + interpolate(self.fuse_layers[i][j](x[j]), x[i].shape[2:])
                else:
                    y = y + self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


class HighResolutionNet(nn.Module):
    def __init__(self, width, num_classes, ocr_width=256, small=False, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.norm_layer = norm_layer
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = norm_layer(64)
        self.relu = nn.ReLU()
        num_blocks = 2 if small else 4
        self.layer1 = self._make_layer(BottleneckV1b, 64, 64, blocks=num_blocks)
        stage1_out_channel = BottleneckV1b.expansion * 64

        self.stage2_num_branches = 2
        num_channels = [width, 2 * width]
        self.transition1 = self._make_transition_layer([stage1_out_channel], num_channels)
        self.stage2, pre = self._make_stage(num_channels, 1, 2, 2 * [num_blocks])
        self.stage3_num_branches = 3
        num_channels = [width, 2 * width, 4 * width]
        self.transition2 = self._make_transition_layer(pre, num_channels)
        self.stage3, pre = self._make_stage(num_channels, 3 if small else 4, 3, 3 * [num_blocks])
        self.stage4_num_branches = 4
        num_channels = [width, 2 * width, 4 * width, 8 * width]
        self.transition3 = self._make_transition_layer(pre, num_channels)
        self.stage4, pre = self._make_stage(num_channels, 2 if small else 3, 4, 4 * [num_blocks])

        last_inp_channels = int(np.sum(pre))
        ocr_mid_channels, ocr_key_channels = 2 * ocr_width, ocr_width
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(last_inp_channels, ocr_mid_channels, kernel_size=3, stride=1, padding=1),
            norm_layer(ocr_mid_channels), nn.ReLU())
        self.ocr_gather_head = SpatialGather_Module(num_classes)
        self.ocr_distri_head = SpatialOCR_Module(ocr_mid_channels, ocr_key_channels, ocr_mid_channels,
                                                 dropout=0.05, norm_layer=norm_layer)
        self.cls_head = nn.Conv2d(ocr_mid_channels, num_classes, kernel_size=1, stride=1, padding=0, bias=True)
        self.aux_head = nn.Sequential(
            nn.Conv2d(last_inp_channels, last_inp_channels, kernel_size=1, stride=1, padding=0),
            norm_layer(last_inp_channels), nn.ReLU(),
            nn.Conv2d(last_inp_channels, num_classes, kernel_size=1, stride=1, padding=0, bias=True))

    def _make_transition_layer(self, pre, cur):
        layers = []
        for i in range(len(cur)):
            if i < len(pre):
                if cur[i] != pre[i]:
                    layers.append(nn.Sequential(nn.Conv2d(pre[i], cur[i], 3, 1, 1, bias=False),
                                                self.norm_layer(cur[i]), nn.ReLU()))
                else:
                    layers.append(None)
            else:
                conv3x3s = []
                for j in range(i + 1 - len(pre)):
                    inch = pre[-1]
                    outch = cur[i] if j == i - len(pre) else inch
                    conv3x3s.append(nn.Sequential(nn.Conv2d(inch, outch, 3, 2, 1, bias=False),
                                                  self.norm_layer(outch), nn.ReLU()))
                layers.append(nn.Sequential(*conv3x3s))
        return nn.ModuleList(layers)

    def _make_layer(self, block, inplanes, planes, blocks):
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=1, bias=False),
                                   self.norm_layer(planes * block.expansion))
        layers = [block(inplanes, planes, 1, downsample=downsample, norm_layer=self.norm_layer)]
        for _ in range(1, blocks):
            layers.append(block(planes * block.expansion, planes, norm_layer=self.norm_layer))
        return nn.Sequential(*layers)

    def _make_stage(self, num_channels, num_modules, num_branches, num_blocks):
        inch = list(num_channels)
        modules = [HighResolutionModule(num_branches, BasicBlockV1b, num_blocks, inch, num_channels, self.norm_layer)
                   for _ in range(num_modules)]
        return nn.Sequential(*modules), inch

    def forward(self, x, additional_features=None):
        feats = self.compute_hrnet_feats(x, additional_features)
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(feats, out_aux)
        feats = self.ocr_distri_head(feats, context)
        return [self.cls_head(feats), out_aux]

    def compute_hrnet_feats(self, x, additional_features):
        x = self.relu(self.bn1(self.conv1(x)))
        if additional_features is not None:
            x = x + additional_features
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        y_list = self.stage2([t(x) if t is not None else x for t in self.transition1])
        x_list = []
        for i in range(self.stage3_num_branches):
            t = self.transition2[i]
            x_list.append(y_list[i] if t is None else t(y_list[i] if i < self.stage2_num_branches else y_list[-1]))
        y_list = self.stage3(x_list)
        x_list = []
        for i in range(self.stage4_num_branches):
            t = self.transition3[i]
            x_list.append(y_list[i] if t is None else t(y_list[i] if i < self.stage3_num_branches else y_list[-1]))
        x = self.stage4(x_list)
        size = x[0].shape[2:]
        return torch.cat([x[0], interpolate(x[1], size), interpolate(x[2], size), interpolate(x[3], size)], 1)


# ---- ocr.py ------------------------------------------------------------------------------------------

class SpatialGather_Module(nn.Module):
    def __init__(self, cls_num=0, scale=1):
        super().__init__()
        self.cls_num, self.scale = cls_num, scale

    def forward(self, feats, probs):
        b, k, rank = probs.size(0), probs.size(1), probs.dim()
        probs = probs.view(b, k, -1)
        feats = feats.view(b, feats.size(1), -1).permute(0, 2, 1)  # batch x positions x c
        probs = F.softmax(self.scale * probs, dim=2)  # softmax over all positions
        ctx = torch.matmul(probs, feats).permute(0, 2, 1)  # batch x c x k
        return ctx.reshape(*ctx.shape, *([1] * (rank - 3)))  # RITM: .unsqueeze(3) (2D)


class SpatialOCR_Module(nn.Module):
    def __init__(self, in_channels, key_channels, out_channels, scale=1, dropout=0.1, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.object_context_block = ObjectAttentionBlock2D(in_channels, key_channels, scale, norm_layer)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, kernel_size=1, padding=0, bias=False),
            nn.Sequential(norm_layer(out_channels), nn.ReLU()),
            nn.Dropout2d(dropout))

    def forward(self, feats, proxy_feats):
        context = self.object_context_block(feats, proxy_feats)
        return self.conv_bn_dropout(torch.cat([context, feats], 1))


class ObjectAttentionBlock2D(nn.Module):
    def __init__(self, in_channels, key_channels, scale=1, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.scale, self.in_channels, self.key_channels = scale, in_channels, key_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))  # unused with scale 1, as in RITM

        def conv_bn_relu(cin, cout):
            return [nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0, bias=False),
                    nn.Sequential(norm_layer(cout), nn.ReLU())]
        self.f_pixel = nn.Sequential(*conv_bn_relu(in_channels, key_channels), *conv_bn_relu(key_channels, key_channels))
        self.f_object = nn.Sequential(*conv_bn_relu(in_channels, key_channels),
                                      *conv_bn_relu(key_channels, key_channels))
        self.f_down = nn.Sequential(*conv_bn_relu(in_channels, key_channels))
        self.f_up = nn.Sequential(*conv_bn_relu(key_channels, in_channels))

    def forward(self, x, proxy):
        b = x.size(0)
        query = self.f_pixel(x).view(b, self.key_channels, -1).permute(0, 2, 1)
        key = self.f_object(proxy).view(b, self.key_channels, -1)
        value = self.f_down(proxy).view(b, self.key_channels, -1).permute(0, 2, 1)
        sim_map = F.softmax((self.key_channels ** -.5) * torch.matmul(query, key), dim=-1)
        context = torch.matmul(sim_map, value).permute(0, 2, 1).contiguous()
        return self.f_up(context.view(b, self.key_channels, *x.size()[2:]))


# ---- ops.py, is_model.py, is_hrnet_model.py ------------------------------------------------------------

class ScaleLayer(nn.Module):
    def __init__(self, init_value=1.0, lr_mult=1):
        super().__init__()
        self.lr_mult = lr_mult
        self.scale = nn.Parameter(torch.full((1,), init_value / lr_mult, dtype=torch.float32))

    def forward(self, x):
        return x * torch.abs(self.scale * self.lr_mult)


def dist_maps(points, shape, norm_radius, use_disks, dtype):
    """DistMaps.get_coord_features, GPU path (spatial_scale 1): points (B, 2N, 2 or 3) = N positive then
    N negative clicks, (row, col) in 2D or (z, row, col) for a volume, (-1, ...) padding."""
    b, n2, nd = points.shape
    grids = torch.meshgrid(*[torch.arange(s, dtype=dtype) for s in shape], indexing="ij")
    coords = torch.stack(grids, 0).unsqueeze(0).repeat(b * n2, *([1] * (len(shape) + 1)))
    pts = points.reshape(-1, nd).to(dtype)
    invalid = torch.max(pts, dim=1)[0] < 0
    coords = coords - pts.view(-1, nd, *([1] * len(shape)))
    if not use_disks:
        coords = coords / norm_radius
    coords = coords * coords
    d2 = coords[:, 0]
    for a in range(1, nd):
        d2 = d2 + coords[:, a]  # RITM: coords[:, 0] += coords[:, 1]
    d2[invalid] = 1e6
    d2 = d2.view(b, 2, n2 // 2, *shape).min(dim=2)[0]
    return (d2 <= norm_radius ** 2).to(dtype) if use_disks else torch.tanh(2 * torch.sqrt(d2))


class HRNetModel(nn.Module):
    """ISModel + HRNetModel with the iter-mask HRNet-18 configuration (Conv1S maps_transform)."""

    def __init__(self, width=18, ocr_width=64, small=False, use_leaky_relu=True, norm_radius=5, use_disks=True,
                 with_prev_mask=True, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.with_prev_mask, self.norm_radius, self.use_disks = with_prev_mask, norm_radius, use_disks
        coord_feature_ch = 2 + (1 if with_prev_mask else 0)
        self.maps_transform = nn.Sequential(
            nn.Conv2d(coord_feature_ch, 16, kernel_size=1),
            nn.LeakyReLU(negative_slope=0.2) if use_leaky_relu else nn.ReLU(),
            nn.Conv2d(16, 64, kernel_size=3, stride=2, padding=1),
            ScaleLayer(init_value=0.05, lr_mult=1))
        self.feature_extractor = HighResolutionNet(width=width, ocr_width=ocr_width, small=small, num_classes=1,
                                                   norm_layer=norm_layer)

    def encode(self, image, points):
        """prepare_input + get_coord_features: [normalized RGB, prev mask, positive, negative]."""
        prev_mask, image = image[:, 3:], image[:, :3]
        mean = torch.tensor([.485, .456, .406], dtype=torch.float32).view(1, 3, *([1] * (image.dim() - 2)))
        std = torch.tensor([.229, .224, .225], dtype=torch.float32).view(1, 3, *([1] * (image.dim() - 2)))
        image = (image - mean.to(image.dtype)) / std.to(image.dtype)
        coord = dist_maps(points, image.shape[2:], self.norm_radius, self.use_disks, image.dtype)
        return torch.cat([image, prev_mask, coord], 1)

    def forward_encoded(self, x):
        """ISModel.forward after the encoding: (cls_head logits, logits upsampled to the input size)."""
        image, coord = x[:, :3], x[:, 3:]
        low, _aux = self.feature_extractor(image, self.maps_transform(coord))
        return low, interpolate(low, image.shape[2:])


# ---- ACSConv (M3DV/ACSConv operators/functional.py acs_conv_f, converters/base_converter.py) -----------

class ACSConv(nn.Module):
    def __init__(self, conv):
        super().__init__()
        assert conv.groups == 1 and conv.kernel_size[0] == conv.kernel_size[1] and conv.dilation == (1, 1)
        self.weight, self.bias = conv.weight, conv.bias
        self.k, self.stride, self.padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]

    def forward(self, x):
        cout, k, s, p = self.weight.shape[0], self.k, self.stride, self.padding
        split = [cout // 3 + (1 if i < cout % 3 else 0) for i in range(3)]
        parts, first = [], 0
        for axis, size in enumerate(split):  # axial, coronal, sagittal
            if size == 0:
                continue
            w = self.weight[first:first + size].unsqueeze(2 + axis)
            first += size
            pad = [p, p, p]
            pad[axis] = 0
            n = x.shape[2 + axis]
            o = (n + 2 * p - k) // s + 1
            if o == n or 2 * o == n:  # acs_conv_f's direct route
                xa = x
            else:  # zero-pad the kernel-less axis and take the centre tap of each window
                pad_arg = [0] * 6
                pad_arg[2 * (2 - axis)] = pad_arg[2 * (2 - axis) + 1] = p
                xa = F.pad(x, pad_arg)[(slice(None),) * (2 + axis) + (slice(k // 2, k // 2 + (o - 1) * s + 1),)]
            parts.append(F.conv3d(xa, w, None, stride=s, padding=pad))
        y = torch.cat(parts, 1)
        return y + self.bias.view(1, -1, 1, 1, 1) if self.bias is not None else y


def to_acs(module):
    """ACSConverter: Conv2d -> ACSConv, *Norm2d / *Pool2d -> their 3D classes (same tensors)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(module, name, ACSConv(child))
        elif isinstance(child, nn.BatchNorm2d):
            bn = nn.BatchNorm3d(child.num_features, eps=child.eps, momentum=child.momentum).to(child.weight.dtype)
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn)
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.MaxPool3d(kernel_size=child.kernel_size[0]))
        else:
            to_acs(child)
    return module


# ---- fixtures ----------------------------------------------------------------------------------------

def read_key_list():
    keys = []
    for line in open(KEYS):
        name, shape = line.rstrip("\n").split("\t")
        keys.append((name, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return keys


def randomize(model, gen):
    """Conv weights He-normal, conv biases N(0, 0.2), BN weight U(0.5, 1.5) (U(0.2, 0.6) closing a residual
    branch) and bias N(0, 0.2), scale -0.3."""
    with torch.no_grad():
        model.maps_transform[3].scale.fill_(-0.3)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                # the BN closing a residual branch gets a smaller gain, as trained ResNets/HRNets have:
                # otherwise the residual streams grow through the ~100 blocks and every later BN subtracts
                # a large mean, so float32 results (PyTorch's as well as i3rt's) lose digits to cancellation
                last = name.endswith(".bn3") or (name.endswith(".bn2") and ".branches." in name)
                lo, hi = (0.2, 0.6) if last else (0.5, 1.5)
                m.weight.copy_(lo + (hi - lo) * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


def calibrate_bn(model, gen, inputs):
    """Running statistics measured on random inputs, then perturbed (non-trivial but sane)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in inputs:
            model.forward_encoded(x)
    model.eval()
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            with torch.no_grad():
                if ".f_object." in name or ".f_down." in name or ".f_up." in name:
                    # these see one context vector per image: a variance over the few calibration
                    # images would blow any other image up; the second moment keeps them of order one
                    m.running_var.add_(m.running_mean ** 2 + 1e-2)
                c = m.num_features
                m.running_mean.add_(0.1 * torch.randn(c, generator=gen) * m.running_var.sqrt())
                m.running_var.mul_(0.8 + 0.4 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(1000)


def random_case(gen, shape, clicks):
    """Image in [0, 1], a soft previous mask, clicks (z, y, x, positive) -> RITM's points tensor."""
    image = torch.rand((3, *shape), generator=gen)
    prev = torch.sigmoid(3 * torch.randn(shape, generator=gen))
    pos = [c[:3] for c in clicks if c[3]]
    neg = [c[:3] for c in clicks if not c[3]]
    n = max(len(pos), len(neg), 1)
    nd = len(shape)
    pts = torch.full((1, 2 * n, nd), -1.0)
    for i, c in enumerate(pos):
        pts[0, i] = torch.tensor(c[3 - nd:])
    for i, c in enumerate(neg):
        pts[0, n + i] = torch.tensor(c[3 - nd:])
    return image, prev, pts


def run_case(model, gen, shape, clicks):
    image, prev, pts = random_case(gen, shape, clicks)
    full = torch.cat([image, prev[None]], 0)[None]
    x = model.encode(full, pts)  # float32, as RITM computes it
    with torch.no_grad():
        low, up = model.double().forward_encoded(x.double())
    model.float()
    d = [1] if len(shape) == 2 else []
    five = lambda t: t.reshape(t.shape[0], t.shape[1], *d, *t.shape[2:]).float().contiguous()  # noqa: E731
    return {"image": image.reshape(3, *d, *shape).contiguous(), "prev_mask": prev.reshape(*d, *shape).contiguous(),
            "clicks": torch.tensor(clicks, dtype=torch.float32), "input": five(x), "logits_low": five(low),
            "logits": five(up)}


def convert(ckpt, out, acs):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "convert_pt", "convert_ritm.py"), ckpt, "--out", out]
    subprocess.run(cmd + (["--acs"] if acs else []), check=True, stdout=subprocess.DEVNULL)


def write_bad_files(out):
    """Broken variants of hrnet2d.safetensors for the error messages (tests/test_hrnet.c, bad_files)."""
    from safetensors import safe_open
    with safe_open(os.path.join(out, "hrnet2d.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    net = json.loads(meta["network"])
    missing = dict(tensors)
    del missing["feature_extractor.stage4.2.fuse_layers.3.0.2.1.running_var"]
    save_file(missing, os.path.join(out, "bad_missing.safetensors"), metadata=meta)
    save_file(tensors, os.path.join(out, "bad_acs.safetensors"), metadata={**meta, "acs": "2"})
    rgb = json.loads(meta["network"])
    rgb["arch_kwargs"]["use_rgb_conv"] = True
    save_file(tensors, os.path.join(out, "bad_rgb_conv.safetensors"), metadata={**meta, "network": json.dumps(rgb)})
    net["coord_channels"] = 2  # says no previous mask, while maps_transform.0.weight takes 3 channels
    save_file(tensors, os.path.join(out, "bad_coord.safetensors"), metadata={**meta, "network": json.dumps(net)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="dropout2d: Received a 5-D input")  # eval: identity anyway
    gen = torch.Generator().manual_seed(18)

    model = HRNetModel()
    expected = read_key_list()
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected, "state-dict keys/shapes differ from RITM's: " + str(
        [a for a in zip(got, expected) if a[0] != a[1]][:3] + [len(got), len(expected)])

    randomize(model, gen)
    calib = []  # 3 batches of 4 different images with different clicks
    for size in ((96, 112), (64, 80), (80, 96)):
        cases = [random_case(gen, size, [(0, 10.0 + 15 * i, 50.0 - 9 * i, 1), (0, 60.0 - 7 * i, 20.0 + 11 * i, 0)])
                 for i in range(4)]
        calib.append(torch.cat([model.encode(torch.cat([img, prev[None]], 0)[None], pts) for img, prev, pts in cases]))
    calibrate_bn(model, gen, calib)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "hrnet18.pth")
        config = {"class": "isegm.model.is_hrnet_model.HRNetModel",
                  "params": {k: {"type": "builtin", "value": v, "specified": True} for k, v in
                             dict(width=18, ocr_width=64, with_aux_output=True, use_leaky_relu=True,
                                  use_rgb_conv=False, use_disks=True, norm_radius=5, with_prev_mask=True).items()}}
        torch.save({"state_dict": model.state_dict(), "config": config}, ckpt)
        convert(ckpt, os.path.join(args.out, "hrnet2d.safetensors"), False)
        convert(ckpt, os.path.join(args.out, "hrnet3d.safetensors"), True)

    write_bad_files(args.out)

    # clicks (z, y, x, positive): fractional coordinates (zoom-in), two of one sign, one near a border
    io2d = run_case(model, gen, (64, 80), [(0, 20.0, 30.0, 1), (0, 40.5, 61.25, 1), (0, 3.0, 77.0, 0)])
    save_file(io2d, os.path.join(args.out, "io2d.safetensors"))
    acs = to_acs(model)
    io3d = run_case(acs, gen, (24, 32, 40), [(10.0, 12.0, 20.0, 1), (4.5, 25.0, 7.0, 0), (20.0, 5.0, 33.0, 1)])
    save_file(io3d, os.path.join(args.out, "io3d.safetensors"))
    for name, io in (("2d", io2d), ("3d", io3d)):
        print(f"io{name}: input {list(io['input'].shape)}, logits_low {list(io['logits_low'].shape)} "
              f"max |.| {io['logits_low'].abs().max():.3g}, logits std {io['logits'].std():.3g}")


if __name__ == "__main__":
    main()
