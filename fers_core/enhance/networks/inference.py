"""Inference copies of the networks: batch normalisation folded into the convolutions, and the
spatial branch's false colour run as per-pixel matrix products.

In eval mode a BatchNorm2d after a bias-free convolution is an affine map per output channel, so
it folds into that convolution's weight and a bias (torch.nn.utils.fusion.fuse_conv_bn_eval).
The copy computes the same function up to float32 rounding (test/core/test_networks.py checks
the features against the original network's) and saves one pass over every activation per BN layer.
The original network (training, model files) is untouched.
"""

import copy

import torch
from torch import nn

from .spatial import FalseColour


def fuse_conv_bn_eval(conv, bn):
    """`conv` (in the copy) with `bn` folded into its weight and bias, in place; returns it.

    Like torch.nn.utils.fusion.fuse_conv_bn_eval, without its deep copy of the convolution.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    conv.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
    conv.bias = nn.Parameter(bias, requires_grad=False)
    return conv


def _fold_pairs(module):
    """Fold every (Conv2d, BatchNorm2d) pair directly inside `module`; returns the number folded.

    Pairs are found two ways, as the networks name them: consecutive children of a Sequential, and
    sibling attributes named like ``conv1``/``bn1``, ``stem_conv``/``stem_bn``.
    """
    folded = 0
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for first, second in zip(names, names[1:]):
            conv, bn = children[first], children[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, first, fuse_conv_bn_eval(conv, bn))
                setattr(module, second, nn.Identity())
                folded += 1
        return folded
    for name, bn in children.items():
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        conv_name = name.replace("bn", "conv", 1)
        conv = children.get(conv_name)
        if isinstance(conv, nn.Conv2d) and conv.out_channels == bn.num_features:
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, name, nn.Identity())
            folded += 1
    return folded


def fold_batchnorm(network):
    """Fold the BatchNorm2d layers of an eval-mode network into their convolutions, in place."""
    return sum(_fold_pairs(module) for module in list(network.modules()))


PIXEL_CHUNK = 4096
"""Pixels per matrix product in PixelwiseFalseColour: its 256-wide hidden layer (4 MB) stays in cache.
A multiple of 64, so the chunk's 3-channel sigmoid runs wholly in vector code (no scalar tail)."""


class PixelwiseFalseColour(nn.Module):
    """The learned false colour (spatial.FalseColour) as per-pixel matrix products over chunks of pixels.

    Same weights and function (1x1 conv bands -> 256 + ReLU, 1x1 conv 256 -> 3 + sigmoid), but the
    256-channel hidden layer never exists at full size, which on CPU beats the two convolutions.
    """

    def __init__(self, false_colour):
        super().__init__()
        expand, to_rgb = false_colour.expand, false_colour.to_rgb
        self.register_buffer("expand_weight", expand.weight.detach().flatten(1).T.contiguous())
        self.register_buffer("expand_bias", expand.bias.detach().clone())
        self.register_buffer("rgb_weight", to_rgb.weight.detach().flatten(1).T.contiguous())
        self.register_buffer("rgb_bias", to_rgb.bias.detach().clone())

    def forward(self, x):
        batch, bands, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, bands)  # a view for channels-last input
        out = x.new_empty((pixels.shape[0], self.rgb_weight.shape[1]))
        for start in range(0, pixels.shape[0], PIXEL_CHUNK):
            chunk = pixels[start:start + PIXEL_CHUNK]
            count = chunk.shape[0]
            if count < PIXEL_CHUNK:  # every chunk full-size, so a pixel's value does not depend on its position:
                # elementwise kernels (sigmoid) compute a short tail with scalar code that rounds differently
                chunk = torch.cat([chunk, chunk.new_zeros((PIXEL_CHUNK - count, bands))])
            hidden = torch.addmm(self.expand_bias, chunk, self.expand_weight).relu_()
            out[start:start + count] = torch.sigmoid(torch.addmm(self.rgb_bias, hidden, self.rgb_weight))[:count]
        return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


class LowPrecision(nn.Module):
    """`inner` with its weights and arithmetic in bfloat16; float32 in and out."""

    def __init__(self, inner, dtype=torch.bfloat16):
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype)).float()


MIXED_PARTS = ("encoder", "backbone")
"""The parts run in bfloat16 by the "mixed" precision: the spectral encoder (the three bottlenecks, most
of the spectral branch's multiply-adds) and the spatial ResNet trunk. The input and pixel heads, the
pyramid head and the gates stay float32: bfloat16 there moves the AUC far more than in these two parts
(bench/PRECISION_RESULTS.md has the figures)."""


def inference_copy(network, device="cpu", mixed=False):
    """An eval-mode copy of `network` for inference: BN folded, channels-last, on `device`; with
    `mixed`, the parts named in MIXED_PARTS run in bfloat16.

    Every BatchNorm2d of the FERS networks follows a convolution, so none is left afterwards. The
    original network is left as it was (layers, device, memory format, training mode).
    """
    # Tensors are shared with the original, not cloned: folding makes new weights for the folded
    # convolutions and `to` replaces the copy's own Parameter objects, never the original's.
    memo = {id(tensor): nn.Parameter(tensor.detach(), requires_grad=False) if isinstance(tensor, nn.Parameter)
            else tensor.detach() for tensor in list(network.parameters()) + list(network.buffers())}
    network = copy.deepcopy(network, memo).eval()
    with torch.no_grad():
        fold_batchnorm(network)
        if isinstance(getattr(network, "false_colour", None), FalseColour):
            network.false_colour = PixelwiseFalseColour(network.false_colour)
    network = network.to(device, memory_format=torch.channels_last)
    if mixed:
        for name in MIXED_PARTS:
            if isinstance(getattr(network, name, None), nn.Module):
                setattr(network, name, LowPrecision(getattr(network, name)))
    return network
