"""PyTorch definitions of Slice-and-Conquer's networks (issue 8), shared by the fixtures (tests/gen_hrnet.py,
tests/gen_snc_guided.py) and the training scripts.

1. RITM's interactive segmentation network, inference path, re-implemented from the source of
   SamsungLabs/ritm_interactive_segmentation @ b9b44603672e15aa0be878b54fd26e7e1c5d2311:
   isegm/model/is_model.py (ISModel: prepare_input, get_coord_features, maps_transform, forward),
   isegm/model/is_hrnet_model.py (HRNetModel), isegm/model/modeling/hrnet_ocr.py (HighResolutionModule,
   HighResolutionNet), isegm/model/modeling/ocr.py (SpatialGather_Module, SpatialOCR_Module,
   ObjectAttentionBlock2D), isegm/model/modeling/resnetv1b.py (BasicBlockV1b, BottleneckV1b),
   isegm/model/ops.py (DistMaps GPU path, ScaleLayer, BatchImageNormalize). Module names, order and
   arguments follow those files, so the state-dict keys are RITM's (tests/gen_hrnet.py checks them against
   tests/support/weights_ritm_hrnet18_keys.txt).
2. ACSConv's converter (M3DV/ACSConv @ 95dc860, converters/base_converter.py, operators/functional.py
   acs_conv_f): to_acs.
3. Stage 2, guided 3D segmentation: GuidedHRNetModel (RITM's model with two more coord channels, the 2D
   masks placed in 3D and the annotated-slice indicator, and MaskAttention before the OCR head; run
   through to_acs), guided_state_from_2d (the 2D weights transferred) and guided_input (the encoding
   i3rt's runtime/snc_guided.c writes). Design and differences from the paper: docs/snc.md.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


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
        return self.ocr(self.compute_hrnet_feats(x, additional_features))

    def ocr(self, feats):
        """forward's OCR part (split out so that the guided 3D model can gate feats before it)."""
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




# ---- Slice-and-Conquer stage 2: guided 3D network ------------------------------------------------------

ATTENTION_STRIDE = 4  # the features are at ceil(n / 4) per axis (two stride-2 convolutions)
ATTENTION_EPS = 1e-6


class MaskAttention(nn.Module):
    """Mask attention (docs/snc.md): the features averaged over the annotated foreground and the annotated
    background, an FC bottleneck, a channel gate feats * 2 sigmoid(g) (identity while fc2 is zero, so the
    transferred 2D network is unchanged at the start of training). head: the module's own prediction,
    trained with L_attn (paper Eq. 1); not part of inference (the converter drops it)."""

    def __init__(self, channels, hidden=32):
        super().__init__()
        self.fc1 = nn.Linear(2 * channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.head = nn.Conv3d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @staticmethod
    def region_weights(guide):
        """guide [n, 2, D, H, W] (2D masks placed in 3D, annotated slices) -> (foreground, background) weights
        at the features' grid: window means centred on the voxels the strided convs centre on."""
        # = avg_pool3d(kernel 2 (s/2) + 1, stride s, padding s/2, count_include_pad=False), which torch refuses
        # on axes shorter than the kernel: window sums and counts of the zero-padded guide instead
        s = ATTENTION_STRIDE
        k, p = 2 * (s // 2) + 1, s // 2
        ones = torch.ones(2, 1, k, k, k, dtype=guide.dtype, device=guide.device)
        sums = F.conv3d(F.pad(guide, (p,) * 6), ones, stride=s, groups=2)
        count = F.conv3d(F.pad(torch.ones_like(guide[:, :1]), (p,) * 6), ones[:1], stride=s)
        a = sums / count
        return a[:, 0:1], a[:, 1:2] - a[:, 0:1]

    def pool(self, feats, guide):
        """[n, 2C]: sum w feats / (sum w + eps) for the foreground and the background weights."""
        out = []
        for w in self.region_weights(guide):
            assert w.shape[2:] == feats.shape[2:], (w.shape, feats.shape)
            out.append((feats * w).sum((2, 3, 4)) / (w.sum((2, 3, 4)) + ATTENTION_EPS))
        return torch.cat(out, 1)

    def forward(self, feats, guide):
        g = self.fc2(F.relu(self.fc1(self.pool(feats, guide))))
        gated = feats * (2 * torch.sigmoid(g))[:, :, None, None, None]
        return gated, self.head(gated)


class GuidedHRNetModel(HRNetModel):
    """f^3D before to_acs: HRNetModel whose maps_transform takes [prev 3D mask, positive balls, negative
    balls, 2D masks placed in 3D, annotated slices], with MaskAttention on the aggregated features.
    Build it, load guided_state_from_2d(...) or a trained state, then to_acs(model)."""

    def __init__(self, attention_hidden=32, **kwargs):
        super().__init__(**kwargs)
        assert self.with_prev_mask
        old = self.maps_transform[0]
        self.maps_transform[0] = nn.Conv2d(old.in_channels + 2, old.out_channels, kernel_size=1)
        channels = sum(self.feature_extractor.stage4[-1].num_inchannels)
        self.mask_attention = MaskAttention(channels, attention_hidden)

    def forward_guided(self, x):
        """x: the encoded input [n, 8, D, H, W] (guided_input) -> (cls_head logits, aux logits, attention
        logits, at the features' resolution)."""
        image, coord = x[:, :3], x[:, 3:]
        fe = self.feature_extractor
        feats = fe.compute_hrnet_feats(image, self.maps_transform(coord))
        feats, attention = self.mask_attention(feats, coord[:, 3:5])
        low, aux = fe.ocr(feats)
        return low, aux, attention

    def forward_encoded(self, x):
        """As HRNetModel.forward_encoded: (cls_head logits, logits upsampled to the input size)."""
        low = self.forward_guided(x)[0]
        return low, interpolate(low, x.shape[2:])

    def forward(self, x):
        """For training (after to_acs): ISModel.forward's outputs upsampled to the input size, plus the
        attention's: instances (L_seg^3D), instances_aux (RITM's auxiliary loss), attention (L_attn, Eq. 1)."""
        low, aux, attention = self.forward_guided(x)
        size = x.shape[2:]
        return {"instances": interpolate(low, size), "instances_aux": interpolate(aux, size),
                "attention": interpolate(attention, size)}


def guided_state_from_2d(state_2d, model):
    """The 2D weights transferred to a GuidedHRNetModel (paper Sec. 3.2, transfer learning): every tensor as
    it is (ACS keeps the 2D kernels), maps_transform.0's two new input channels zero, the mask attention
    from the model's own initialization (fc2 zero: the gate is 1)."""
    state = model.state_dict()
    for k, v in state_2d.items():
        if k == "maps_transform.0.weight":
            w = torch.zeros_like(state[k])
            w[:, :v.shape[1]] = v
            state[k] = w
        else:
            assert state[k].shape == v.shape, k
            state[k] = v.clone()
    return state


def guided_input(volume, prev, points, masks, norm_radius=5, use_disks=True):
    """The guided network's input [1, 8, D, H, W] as runtime/snc_guided.c writes it. volume [D, H, W] grey in
    [0, 1]; prev [D, H, W]; points as dist_maps takes them ([1, 2N, 3] (z, row, col), positives first);
    masks: list of (axis 0/1/2, index, plane uint8/bool [rows, cols]) in annotation order (later wins)."""
    mean = torch.tensor([.485, .456, .406], dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor([.229, .224, .225], dtype=torch.float32).view(3, 1, 1, 1)
    image = (volume[None].expand(3, *volume.shape) - mean) / std
    clicks = dist_maps(points, volume.shape, norm_radius, use_disks, torch.float32)[0]
    placed, annotated = torch.zeros_like(volume), torch.zeros_like(volume)
    for axis, index, plane in masks:
        sl = [slice(None)] * 3
        sl[axis] = index
        placed[tuple(sl)] = torch.as_tensor(plane).bool().float()
        annotated[tuple(sl)] = 1.0
    return torch.cat([image, prev[None], clicks, placed[None], annotated[None]], 0)[None]
