"""The spatial "rebellious student" network (method.md section 3).

Learned false colour (bands -> 3), a ResNet-34 stem and its first three stages (stride 16),
light pyramid pooling back to the input size, a 1x1 fusion to ``bands`` channels and a
squeeze-excitation gate. The output F_spa has the input's shape.

Small inputs need no padding: every strided layer (7x7/2 conv, 3x3/2 max pool, 3x3/2 convs)
pads so that a 1-pixel side stays 1 pixel, and adaptive pooling to 2x2 or 4x4 repeats pixels
of smaller maps, so any H, W >= 1 works as is. The pyramid pools see the whole input, so unlike
the spectral network this branch is not exactly tileable: tiles give an approximation.

No ImageNet weights are available offline: the backbone starts from torchvision's documented
ResNet initialisation (Kaiming normal, fan-out, for convolutions; BN weight 1, bias 0) and is
trained on our data. The other layers use PyTorch's default initialisation.
"""

import torch
import torch.nn.functional as F
from torch import nn

FALSE_COLOUR_WIDTH = 256
STAGE_CHANNELS = (64, 128, 256)
STAGE_BLOCKS = (3, 4, 6)
PYRAMID_SIZES = (1, 2, 4)
FUSION_WIDTH = 128
GATE_REDUCTION = 8


def gate_width(channels):
    """Hidden width of a squeeze-excitation gate: channels / 8, at least 1."""
    return max(1, channels // GATE_REDUCTION)


def kaiming_init(module):
    """torchvision's ResNet initialisation: Kaiming normal (fan-out) convolutions, BN weight 1 and bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


class SqueezeExcitation(nn.Module):
    """Channel gate: global mean, 1x1 -> channels/8, ReLU, 1x1 -> channels, sigmoid, multiply."""

    def __init__(self, channels):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, gate_width(channels), 1, bias=False)
        self.excite = nn.Conv2d(gate_width(channels), channels, 1, bias=False)

    def forward(self, x):
        weights = F.adaptive_avg_pool2d(x, 1)
        weights = torch.sigmoid(self.excite(F.relu(self.squeeze(weights))))
        return x * weights


class FalseColour(nn.Module):
    """Learned false colour image: 1x1 conv bands -> 256 + ReLU, 1x1 conv 256 -> 3 + sigmoid."""

    def __init__(self, bands):
        super().__init__()
        self.expand = nn.Conv2d(bands, FALSE_COLOUR_WIDTH, 1)
        self.to_rgb = nn.Conv2d(FALSE_COLOUR_WIDTH, 3, 1)

    def forward(self, x):
        return torch.sigmoid(self.to_rgb(F.relu(self.expand(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 -> BN -> ReLU -> 3x3 -> BN, + shortcut, ReLU."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut  # in place: no new full-size map (BatchNorm's backward does not need its output)
        return self.relu(out)


def make_stage(in_channels, out_channels, blocks, stride):
    """A ResNet stage: the first block changes width/stride, the others keep them."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet34Trunk(nn.Module):
    """ResNet-34 stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool) and stages 1-3: RGB -> 256 ch, 1/16."""

    def __init__(self):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, STAGE_CHANNELS[0], 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.layer1 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[0], STAGE_BLOCKS[0], 1)
        self.layer2 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[1], STAGE_BLOCKS[1], 2)
        self.layer3 = make_stage(STAGE_CHANNELS[1], STAGE_CHANNELS[2], STAGE_BLOCKS[2], 2)
        self.reset_parameters()

    def reset_parameters(self):
        """torchvision's ResNet initialisation (Kaiming normal fan-out; BN weight 1, bias 0).

        Nothing to do on the meta device (a network built only to receive stored tensors): there, PyTorch runs
        normal_ through its Python reference kernels, whose first use imports torch._dynamo (slow)."""
        if not self.stem_conv.weight.is_meta:
            kaiming_init(self)

    def forward(self, rgb):
        x = F.relu(self.stem_bn(self.stem_conv(rgb)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.layer3(self.layer2(self.layer1(x)))


class PyramidHead(nn.Module):
    """Light pyramid pooling (1, 2, 4) upsampled to the input size, 1x1 fusion, SE gate."""

    def __init__(self, bands):
        super().__init__()
        pooled_channels = STAGE_CHANNELS[-1] * len(PYRAMID_SIZES)
        self.reduce = nn.Conv2d(pooled_channels, FUSION_WIDTH, 1, bias=False)
        self.expand = nn.Conv2d(FUSION_WIDTH, bands, 1, bias=False)
        self.gate = SqueezeExcitation(bands)

    def forward(self, features, size):
        """``reduce`` of the concatenated upsampled pools, computed in the equivalent order (1x1 convolution
        and bilinear upsampling are both linear, and bilinear upsampling is separable): ``reduce`` of each
        pool at its own size, then one product per axis with the stacked interpolation matrices. The result
        is the same up to float rounding, without the 768-channel map at full size or three upsampled
        128-channel maps to add (the 1x1 over 768 channels per output pixel was over half the branch's
        multiply-adds)."""
        batch, channels = features.shape[:2]
        height, width = int(size[0]), int(size[1])
        stacked = sum(PYRAMID_SIZES)
        # pools[b, i, j, k]: block-diagonal over the levels, channels last (i, j index the stacked pooled rows/cols)
        pools = features.new_zeros((batch, stacked, stacked, FUSION_WIDTH))
        row_weights, col_weights = [], []
        start = 0
        for level, s in enumerate(PYRAMID_SIZES):
            weight = self.reduce.weight[:, level * channels:(level + 1) * channels]
            part = F.conv2d(F.adaptive_avg_pool2d(features, s), weight)  # (B, FUSION_WIDTH, s, s)
            pools[:, start:start + s, start:start + s] = part.permute(0, 2, 3, 1)
            row_weights.append(_interpolation_weights(s, height, features))
            col_weights.append(_interpolation_weights(s, width, features))
            start += s
        rows, cols = torch.cat(row_weights, dim=1), torch.cat(col_weights, dim=1)  # (H, stacked), (W, stacked)
        along_cols = torch.matmul(cols, pools)  # (B, stacked, W, FUSION_WIDTH)
        reduced = torch.matmul(rows, along_cols.reshape(batch, stacked, width * FUSION_WIDTH))
        reduced = reduced.reshape(batch, height, width, FUSION_WIDTH).permute(0, 3, 1, 2)  # NCHW view, NHWC memory
        fused = F.relu(self.expand(F.relu(reduced, inplace=True)), inplace=True)
        return self.gate(fused)


def _interpolation_weights(source, target, like):
    """(target, source) weights of 1-D linear upsampling as F.interpolate computes them (align_corners=False);
    bilinear upsampling applies them along each axis."""
    identity = torch.eye(source, dtype=like.dtype, device=like.device)[:, None, :]
    return F.interpolate(identity, size=target, mode="linear", align_corners=False)[:, 0, :].T


class SpatialStudent(nn.Module):
    """F_spa network: (B, bands, H, W) scaled cube -> (B, bands, H, W) spatial feature."""

    def __init__(self, bands):
        super().__init__()
        self.bands = int(bands)
        self.false_colour = FalseColour(self.bands)
        self.backbone = ResNet34Trunk()
        self.head = PyramidHead(self.bands)

    def architecture(self):
        """Settings needed to rebuild this network (stored in model files)."""
        return {"bands": self.bands}

    def forward_with_false_colour(self, x):
        """F_spa and the learned false colour image (B, 3, H, W)."""
        rgb = self.false_colour(x)
        return self.from_false_colour(rgb), rgb

    def from_false_colour(self, rgb):
        """F_spa (B, bands, H, W) of a false colour image (B, 3, H, W) this network made.

        The false colour is per pixel, so tiled inference computes it once for a whole window and
        tiles the 3-channel image rather than the cube."""
        return self.head(self.backbone(rgb), rgb.shape[-2:])

    def forward(self, x):
        return self.forward_with_false_colour(x)[0]
