"""Running a model's branches on one scaled image or tile."""

import numpy as np
import torch

from ..errors import InputError
from .networks.spectral import SpectralEnhancer

spectral_halo = SpectralEnhancer.HALO
"""Context (px per side) a spectral tile needs to equal whole-image inference exactly."""


def _as_float_tensor(array):
    if torch.is_tensor(array):
        return array.float()
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def compute_features(model, cube_scaled, branches=None, device="cpu"):
    """Run the chosen branches of ``model`` on one scaled cube (bands, H, W).

    Returns {branch name: float32 numpy array (bands, H, W)}. ``branches`` defaults to all the
    model's branches. The whole array is one network input (its edges padded as in whole-image inference).
    """
    branches = list(model.branches) if branches is None else list(branches)
    absent = [name for name in branches if not model.has_branch(name)]
    if absent:
        raise InputError(
            f"The model has no {absent[0]} branch (it has: {', '.join(model.branches)}); "
            "choose another branch."
        )
    cube = _as_float_tensor(cube_scaled)
    if cube.dim() != 3 or cube.shape[0] != model.bands:
        raise InputError(
            f"The model expects a cube of {model.bands} bands (bands, rows, cols) but got shape "
            f"{tuple(cube.shape)}; resample the bands first."
        )
    batch = cube.unsqueeze(0).to(device)
    features = {}
    with torch.inference_mode():
        for name in branches:
            network = model.branches[name].to(device).eval()
            features[name] = network(batch)[0].cpu().numpy()
    return features
