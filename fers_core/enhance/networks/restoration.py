"""Feature restoration network R (method.md section 4), used only in stage-2 training.

R rebuilds the scaled input from F_spa + F_spe: three times (residual block of two 3x3 conv +
BN with ReLU, then a channel-attention gate), finally a 1x1 conv. PyTorch default init.
"""

from torch import nn

from .spatial import SqueezeExcitation


class ResidualBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, + identity, ReLU (channels kept)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class FeatureRestorer(nn.Module):
    """R: (B, bands, H, W) -> (B, bands, H, W), an estimate of the scaled input."""

    def __init__(self, bands, num_blocks=3):
        super().__init__()
        self.bands = int(bands)
        layers = []
        for _ in range(num_blocks):
            layers += [ResidualBlock(self.bands), SqueezeExcitation(self.bands)]
        self.body = nn.Sequential(*layers)
        self.output = nn.Conv2d(self.bands, self.bands, 1)

    def forward(self, x):
        return self.output(self.body(x))
