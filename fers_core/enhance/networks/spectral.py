"""The spectral enhancement network (FEN, method.md section 2).

Inference path: pad the image edges by ``PADDING`` px, 1x1 conv bands -> 64 (``convh``), the
first stage of a Wide-ResNet-101-2 (three bottleneck blocks, ``encoder.layer1``), crop the
border again, then the pixel head (1x1 conv -> head width -> bands, ReLU after each).

Tiling: only the three 3x3 convolutions look at neighbours, so an output pixel depends on the
input within ``HALO`` (3) px. A tile read with ``HALO`` px of real context on every inner side,
and padded with :func:`pad_image_edges` on the sides that touch the image edge, gives exactly
the whole-image result through :meth:`SpectralEnhancer.forward_unpadded` (``context=HALO``).

Module and parameter names follow the FERS authors' checkpoints: ``convh.*`` (convh.pt),
``encoder.layer1.*`` (enc.pt, keys prefixed with ``encoder.``) and ``pixel_head.*`` (pc.pt,
prefixed with ``pixel_head.``).
"""

import torch.nn.functional as F
from torch import nn

STEM_CHANNELS = 64
BOTTLENECK_WIDTH = 128
ENCODER_CHANNELS = 256


def default_head_width(bands):
    """Hidden width of the pixel head, as in the reference: 256 above 128 bands, else 128."""
    return 256 if bands > 128 else 128


def edge_padding_mode(size, pad):
    """``reflect`` when an image side of ``size`` px allows it for ``pad`` px, else ``replicate``.

    Reflect padding needs ``size > pad``; images (not tiles) smaller than that along an axis are
    padded by replicating the edge pixel instead, on that axis only.
    """
    return "reflect" if size > pad else "replicate"


def pad_image_edges(x, top, bottom, left, right, image_height=None, image_width=None):
    """Pad the sides of ``x`` (B, C, H, W) that lie on the image edge, as the whole image would be.

    ``image_height`` and ``image_width`` are the sizes of the whole image (default: the sizes of
    ``x``). They choose reflect or replicate padding per axis (see :func:`edge_padding_mode`), so
    that a tile is padded exactly as :meth:`SpectralEnhancer.forward` pads the whole image.
    """
    image_height = x.shape[-2] if image_height is None else image_height
    image_width = x.shape[-1] if image_width is None else image_width
    if top or bottom:
        mode = edge_padding_mode(image_height, SpectralEnhancer.PADDING)
        x = F.pad(x, [0, 0, top, bottom], mode=mode)
    if left or right:
        mode = edge_padding_mode(image_width, SpectralEnhancer.PADDING)
        x = F.pad(x, [left, right, 0, 0], mode=mode)
    return x


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 -> BN, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_channels, planes, width):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut  # in place: no new full-size map (BatchNorm's backward does not need its output)
        return self.relu(out)


class WideResNetStage1(nn.Module):
    """First stage of a Wide-ResNet-101-2: three bottlenecks, 64 -> 256 channels, width 128."""

    def __init__(self):
        super().__init__()
        planes = ENCODER_CHANNELS // Bottleneck.expansion
        self.layer1 = nn.Sequential(
            Bottleneck(STEM_CHANNELS, planes, BOTTLENECK_WIDTH),
            Bottleneck(ENCODER_CHANNELS, planes, BOTTLENECK_WIDTH),
            Bottleneck(ENCODER_CHANNELS, planes, BOTTLENECK_WIDTH),
        )

    def forward(self, x):
        return self.layer1(x)


class PixelHead(nn.Module):
    """Per-pixel head: 1x1 conv 256 -> width + ReLU, 1x1 conv width -> bands + ReLU.

    ``conv3`` (bands -> 1) is used only by stage-1 training (the alignment map); inference does
    not call it, but it is kept so a model file round-trips the authors' checkpoint.
    """

    def __init__(self, bands, width):
        super().__init__()
        self.conv1 = nn.Conv2d(ENCODER_CHANNELS, width, 1)
        self.conv2 = nn.Conv2d(width, bands, 1)
        self.conv3 = nn.Conv2d(bands, 1, 1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)), inplace=True)

    def alignment_map(self, feature_difference):
        """Stage-1 alignment logits: ``conv3`` of |difference of two head outputs|."""
        return self.conv3(feature_difference.abs())


class SpectralEnhancer(nn.Module):
    """FEN: maps a scaled cube (B, bands, H, W) to the spectral feature F_spe of the same shape."""

    PADDING = 4
    """Pixels padded on each image edge (reflect), and cropped again, as in the reference."""
    HALO = 3
    """Receptive-field radius: three 3x3 convolutions. Tiles need this much context per side."""

    def __init__(self, bands, head_width=None):
        super().__init__()
        self.bands = int(bands)
        self.head_width = int(head_width or default_head_width(self.bands))
        self.convh = nn.Conv2d(self.bands, STEM_CHANNELS, 1, bias=False)
        self.encoder = WideResNetStage1()
        self.pixel_head = PixelHead(self.bands, self.head_width)

    def architecture(self):
        """Settings needed to rebuild this network (stored in model files)."""
        return {"bands": self.bands, "head_width": self.head_width}

    def encode(self, x):
        """Stem and encoder: (B, bands, H, W) -> (B, 256, H, W), no padding and no crop."""
        return self.encoder(self.convh(x))

    def forward_unpadded(self, x, context=HALO):
        """F_spe for the inner part of ``x``, which carries ``context`` px of context per side.

        The output has H - 2 * context rows and W - 2 * context columns. With ``context >= HALO``
        every output pixel sees only real (or edge-padded) input, so tiles computed this way equal
        whole-image inference.
        """
        features = self.encode(x)
        if context:
            features = features[..., context:-context, context:-context]
        return self.pixel_head(features)

    def forward(self, x):
        """Whole-image F_spe: pad the edges by ``PADDING`` px, run, crop them again."""
        padded = pad_image_edges(x, *(self.PADDING,) * 4)
        return self.forward_unpadded(padded, context=self.PADDING)
