"""Training losses of both stages (method.md sections 4 and 5).

Stage 1 (reverse distillation, FERD): :func:`distillation_cosine_loss`, :func:`alignment_loss`
and the MSE reconstruction through ``deconvh``. Stage 2 (the rebellious student, FERS):
:func:`cross_covariance_loss` (L_cc), :func:`cosine_similarity_loss` (L_cos),
:func:`variance_loss` (L_var), MSE reconstruction and :func:`ssim_loss`. The formulas follow the
reference code (github xjpp2016/FERS, losses/losses.py; github cristianoKaKa/FERD, train.py).
"""

import torch
import torch.nn.functional as F

STANDARDISE_EPS = 1e-6
SSIM_WINDOW = 5
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def distillation_cosine_loss(teacher_maps, student_maps):
    """Sum over scales of the batch mean of 1 - cosine similarity of each sample's flattened maps."""
    total = 0.0
    for teacher, student in zip(teacher_maps, student_maps):
        similarity = F.cosine_similarity(teacher.flatten(1), student.flatten(1), dim=1)
        total = total + (1.0 - similarity).mean()
    return total


def alignment_loss(logits):
    """Spectral feature alignment: binary cross-entropy of sigmoid(logits) against 0 (all background)."""
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def _standardise_channels(features):
    """(B, C, H, W) -> (C, B*H*W), each channel standardised over batch and pixels (unbiased std)."""
    flat = features.transpose(0, 1).reshape(features.shape[1], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True)
    return (flat - mean) / (std + STANDARDISE_EPS)


def cross_covariance_loss(spectral, spatial):
    """L_cc: sum of squares of the (C x C) cross-covariance of the standardised channels of both features."""
    a = _standardise_channels(spectral)
    b = _standardise_channels(spatial)
    covariance = a @ b.T / a.shape[1]
    return covariance.pow(2).sum()


def cosine_similarity_loss(spectral, spatial):
    """L_cos: 1 + mean cosine similarity of the two features along the channel axis."""
    return 1.0 + F.cosine_similarity(spectral, spatial, dim=1).mean()


def variance_loss(spatial, target=1.0):
    """L_var: mean over channels of ReLU(target - per-sample pixel variance, averaged over the batch) + mean |F|."""
    variance = spatial.flatten(2).var(dim=2).mean(dim=0)
    return F.relu(target - variance).mean() + spatial.abs().mean()


def _gaussian_window(channels, size=SSIM_WINDOW, sigma=SSIM_SIGMA, dtype=torch.float32, device=None):
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    kernel = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    window = torch.outer(kernel, kernel)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(a, b):
    """Mean structural similarity of two (B, C, H, W) tensors: Gaussian 5x5 window (sigma 1.5), no padding.

    Constants as in kornia's default (data range 1): C1 = 0.01^2, C2 = 0.03^2. Images smaller than
    the window are compared as a whole (the window shrinks to their size).
    """
    channels = a.shape[1]
    size = min(SSIM_WINDOW, a.shape[-2], a.shape[-1])
    window = _gaussian_window(channels, size, dtype=a.dtype, device=a.device)

    def blur(x):
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    covariance = blur(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mu_a ** 2 + mu_b ** 2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (numerator / denominator).mean()


def ssim_loss(a, b):
    """1 - SSIM (5x5 Gaussian window)."""
    return 1.0 - ssim(a, b)
