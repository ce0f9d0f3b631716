"""Stage 2: the spatial "rebellious student" with the spectral network frozen (method.md section 4).

Trained together: the :class:`~fers_core.enhance.networks.SpatialStudent` and a
:class:`~fers_core.enhance.networks.FeatureRestorer` R that rebuilds the scaled input from F_spa + F_spe.

Loss = L_cc + 0.1 L_cos + 0.1 L_var + MSE(R(F_spa + F_spe), x) + 0.01 (1 - SSIM 5x5).

The spectral network runs in eval mode without gradients, as in the reference. The spatial
backbone has no ImageNet weights: it starts from torchvision's ResNet initialisation (Kaiming
normal, fan-out) or from the initial model's spatial branch, and is trained here with the rest.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..enhance.networks import FeatureRestorer
from .losses import cosine_similarity_loss, cross_covariance_loss, ssim_loss, variance_loss

COSINE_WEIGHT = 0.1
VARIANCE_WEIGHT = 0.1
SSIM_WEIGHT = 0.01


class SpatialStage:
    """Stage-2 trainer for :func:`fers_core.training.loop.run_stage`."""

    name = "spatial"
    number = 2

    def __init__(self, spectral, spatial, learning_rate=5e-3, device="cpu"):
        self.network = nn.ModuleDict({
            "spectral": spectral.requires_grad_(False),
            "spatial": spatial,
            "restorer": FeatureRestorer(spatial.bands),
        }).to(device)
        parameters = list(self.network["spatial"].parameters()) + list(self.network["restorer"].parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=learning_rate, betas=(0.5, 0.999))

    def modules(self):
        """Everything a checkpoint must hold to continue exactly."""
        return {"network": self.network}

    def train_mode(self):
        self.network.train()
        self.network["spectral"].eval()

    def losses(self, x):
        with torch.no_grad():
            spectral = self.network["spectral"](x)
        spatial = self.network["spatial"](x)
        restored = self.network["restorer"](spatial + spectral)
        terms = {
            "cc": cross_covariance_loss(spectral, spatial),
            "cos": cosine_similarity_loss(spectral, spatial),
            "var": variance_loss(spatial),
            "mse": F.mse_loss(restored, x),
            "ssim": ssim_loss(restored, x),
        }
        total = (terms["cc"] + COSINE_WEIGHT * terms["cos"] + VARIANCE_WEIGHT * terms["var"] + terms["mse"]
                 + SSIM_WEIGHT * terms["ssim"])
        return total, terms

    def step(self, batch):
        total, terms = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {"loss": float(total.detach()), **{key: float(value.detach()) for key, value in terms.items()}}

    def result(self):
        """The trained SpatialStudent (CPU, eval mode)."""
        return self.network["spatial"].cpu().eval()
