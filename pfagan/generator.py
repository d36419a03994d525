"""The PFAGAN generator: noise, a category and a score histogram -> an image in [-1, 1].

A linear map of the noise gives a 4x4 feature map; ``config.num_blocks`` ResNet up-blocks
(BigGAN's pre-activation layout) double its side up to the resolution, and every batch norm
inside them is mixed-conditional, so the category and the histogram steer every scale.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pfagan.config import GANConfig
from pfagan.layers import MixedConditionalBatchNorm2d

BASE = 4  # side of the first feature map
MAX_DOUBLINGS = 3  # the widest blocks have 2**3 = 8x the last block's channels


def generator_widths(config: GANConfig) -> list[int]:
    """Channels of the 4x4 base and after each up-block: halving towards the image, capped at 8x."""
    n = config.num_blocks
    return [config.g_channels * 2 ** min(n - k, MAX_DOUBLINGS) for k in range(n + 1)]


class UpBlock(nn.Module):
    """MCBN-ReLU-up-conv-MCBN-ReLU-conv, plus an upsampled 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, config: GANConfig) -> None:
        super().__init__()
        k, b = config.num_categories, config.num_bins
        self.bn1 = MixedConditionalBatchNorm2d(in_channels, k, b)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = MixedConditionalBatchNorm2d(out_channels, k, b)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, category: Tensor, hist: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, category, hist)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), category, hist)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        widths = generator_widths(config)
        self.linear = nn.Linear(config.z_dim, widths[0] * BASE * BASE)
        self.blocks = nn.ModuleList(UpBlock(widths[i], widths[i + 1], config)
                                    for i in range(config.num_blocks))
        # The output layer is shared by all conditions: plain batch norm, as in BigGAN.
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor, category: Tensor, hist: Tensor) -> Tensor:
        """Images (N, 3, R, R) in [-1, 1] for noise (N, z_dim), category ids (N,) and
        normalised histograms (N, num_bins)."""
        h = self.linear(z).view(len(z), -1, BASE, BASE)
        for block in self.blocks:
            h = block(h, category, hist)
        return self.out_conv(F.relu(self.out_norm(h))).tanh()
