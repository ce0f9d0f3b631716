"""Stage 1: the spectral network (FEN) by reverse distillation with spectral feature alignment.

Reverse distillation (Deng and Li, CVPR 2022) as FERD uses it (method.md section 5), around the
:class:`~fers_core.enhance.networks.SpectralEnhancer`:

- teacher: ``convh(pad(x))`` -> ``encoder.layer1`` (the FEN's encoder, 256 ch, stride 1) -> two
  deeper stages (512 ch at stride 2, 1024 ch at stride 4);
- one-class bottleneck: strided 3x3 convolutions bring the stage-1 and stage-2 maps to the stage-3
  size, the three are concatenated and compressed by one bottleneck block (stride 8);
- student decoder: mirrored stages that rebuild the three teacher scales, and a 1x1 ``deconvh`` from
  the rebuilt stage-1 map back to the input bands;
- spectral feature alignment: the pixel head is applied to the cropped teacher and decoder stage-1
  maps; ``sigmoid(conv3(|difference|))`` is pushed towards 0 by binary cross-entropy.

Loss = sum over the 3 scales of mean(1 - cosine similarity of flattened maps)
       + 0.1 MSE(x, deconvh(decoder)) + 0.1 BCE(alignment map, 0).

**No ImageNet weights exist offline**, so the teacher's deeper stages (kept only for training) are
frozen, randomly initialised (Kaiming normal, fan-out) and one block deep each, and the training
network around the FEN is narrower than the reference's Wide-ResNet decoder: a CPU can train it.
Teacher options for the kept encoder (``TEACHER_OPTIONS``):

- ``frozen-random``: ``encoder.layer1`` stays as initialised (random, or the initial model's);
  ``convh``, the pixel head, bottleneck, decoder and ``deconvh`` are trained (the FERD recipe with a
  random teacher instead of an ImageNet one);
- ``trained``: the encoder is trained too, with the same losses (the whole FEN learns).

Kept for inference: ``convh``, ``encoder.layer1`` and the pixel head, i.e. the SpectralEnhancer.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..enhance.networks.spatial import kaiming_init
from ..enhance.networks.spectral import ENCODER_CHANNELS, SpectralEnhancer, pad_image_edges
from .defaults import DEFAULT_TEACHER, TEACHER_OPTIONS
from .losses import alignment_loss, distillation_cosine_loss

TEACHER_CHANNELS = (ENCODER_CHANNELS, 512, 1024)
BOTTLENECK_CHANNELS = 512
PROJECTION_CHANNELS = 128
MSE_WEIGHT = 0.1
ALIGNMENT_WEIGHT = 0.1


def conv_bn_relu(in_channels, out_channels, kernel_size=1, stride=1):
    """Conv (no bias) -> BN -> ReLU; 3x3 kernels pad by 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TeacherStages(nn.Module):
    """Frozen random teacher stages 2 and 3: 256 -> 512 (stride 2) -> 1024 (stride 4)."""

    def __init__(self):
        super().__init__()
        c1, c2, c3 = TEACHER_CHANNELS
        self.layer2 = nn.Sequential(conv_bn_relu(c1, c1, 3, 2), conv_bn_relu(c1, c2))
        self.layer3 = nn.Sequential(conv_bn_relu(c2, c2 // 2, 3, 2), conv_bn_relu(c2 // 2, c3))
        kaiming_init(self)

    def forward(self, stage1):
        stage2 = self.layer2(stage1)
        return stage2, self.layer3(stage2)


class OneClassBottleneck(nn.Module):
    """Stage-1 and stage-2 maps brought to the stage-3 size, concatenated, compressed to 1/8 resolution."""

    def __init__(self):
        super().__init__()
        c1, c2, c3 = TEACHER_CHANNELS
        width = PROJECTION_CHANNELS
        self.from_stage1 = nn.Sequential(conv_bn_relu(c1, width, 3, 2), conv_bn_relu(width, width, 3, 2))
        self.from_stage2 = conv_bn_relu(c2, width, 3, 2)
        self.compress = nn.Sequential(
            conv_bn_relu(2 * width + c3, BOTTLENECK_CHANNELS // 2),
            conv_bn_relu(BOTTLENECK_CHANNELS // 2, BOTTLENECK_CHANNELS // 2, 3, 2),
            conv_bn_relu(BOTTLENECK_CHANNELS // 2, BOTTLENECK_CHANNELS),
        )

    def forward(self, stage1, stage2, stage3):
        size = stage3.shape[-2:]
        parts = [F.interpolate(self.from_stage1(stage1), size=size), F.interpolate(self.from_stage2(stage2), size=size),
                 stage3]
        return self.compress(torch.cat(parts, dim=1))


class DecoderStage(nn.Module):
    """1x1 reduce at the input size, upsample to the target size, 3x3 conv, 1x1 expand (BN + ReLU each)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        middle = max(out_channels // 4, 32)
        self.reduce = conv_bn_relu(in_channels, middle)
        self.mix = conv_bn_relu(middle, middle, 3)
        self.expand = conv_bn_relu(middle, out_channels)

    def forward(self, x, size):
        x = F.interpolate(self.reduce(x), size=size, mode="bilinear", align_corners=False)
        return self.expand(self.mix(x))


class StudentDecoder(nn.Module):
    """Rebuilds the teacher's three scales (1024 @ 1/4, 512 @ 1/2, 256 @ 1) from the bottleneck."""

    def __init__(self):
        super().__init__()
        c1, c2, c3 = TEACHER_CHANNELS
        self.stage3 = DecoderStage(BOTTLENECK_CHANNELS, c3)
        self.stage2 = DecoderStage(c3, c2)
        self.stage1 = DecoderStage(c2, c1)

    def forward(self, code, sizes):
        d3 = self.stage3(code, sizes[2])
        d2 = self.stage2(d3, sizes[1])
        return self.stage1(d2, sizes[0]), d2, d3


class ReverseDistillation(nn.Module):
    """The stage-1 training network around a SpectralEnhancer (see the module docstring)."""

    def __init__(self, spectral):
        super().__init__()
        self.spectral = spectral
        self.teacher = TeacherStages().requires_grad_(False)
        self.bottleneck = kaiming_init(OneClassBottleneck())
        self.decoder = kaiming_init(StudentDecoder())
        self.deconvh = nn.Conv2d(TEACHER_CHANNELS[0], spectral.bands, 1)

    def losses(self, x):
        """The loss terms for a batch of scaled patches (B, bands, P, P)."""
        pad = SpectralEnhancer.PADDING
        stem = self.spectral.convh(pad_image_edges(x, pad, pad, pad, pad))
        t1 = self.spectral.encoder(stem)
        t2, t3 = self.teacher(t1)
        d1, d2, d3 = self.decoder(self.bottleneck(t1, t2, t3), [t.shape[-2:] for t in (t1, t2, t3)])
        cosine = distillation_cosine_loss([t1, t2, t3], [d1, d2, d3])
        t1_cut, d1_cut = t1[..., pad:-pad, pad:-pad], d1[..., pad:-pad, pad:-pad]
        head = self.spectral.pixel_head
        logits = head.alignment_map(head(d1_cut) - head(t1_cut))
        alignment = alignment_loss(logits)
        reconstruction = F.mse_loss(self.deconvh(d1_cut), x)
        total = cosine + MSE_WEIGHT * reconstruction + ALIGNMENT_WEIGHT * alignment
        return total, {"cosine": cosine, "mse": reconstruction, "alignment": alignment}


class SpectralStage:
    """Stage-1 trainer for :func:`fers_core.training.loop.run_stage`."""

    name = "spectral"
    number = 1

    def __init__(self, spectral, teacher=DEFAULT_TEACHER, learning_rate=5e-3, device="cpu"):
        if teacher not in TEACHER_OPTIONS:
            raise ValueError(f"unknown teacher option {teacher!r}")
        self.teacher = teacher
        self.network = ReverseDistillation(spectral).to(device)
        self.device = device
        if teacher == "frozen-random":
            spectral.encoder.requires_grad_(False)
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(parameters, lr=learning_rate, betas=(0.5, 0.999))

    def modules(self):
        """Everything a checkpoint must hold to continue exactly."""
        return {"network": self.network}

    def train_mode(self):
        self.network.train()
        self.network.teacher.eval()
        if self.teacher == "frozen-random":
            self.network.spectral.encoder.eval()

    def step(self, batch):
        total, terms = self.network.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {"loss": float(total.detach()), **{key: float(value.detach()) for key, value in terms.items()}}

    def result(self):
        """The trained SpectralEnhancer (CPU, eval mode)."""
        return self.network.spectral.cpu().eval()
