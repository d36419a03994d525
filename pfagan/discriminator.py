"""The PFAGAN discriminator: ResNet down-blocks with spectral norm and a joint projection head.

``config.num_blocks`` down-blocks (SNGAN's layout; the first one without a leading ReLU, so the
image itself is not rectified) take the image to 4x4; ReLU and a sum over positions give the
features phi(x). The output is a projection discriminator's (Miyato & Koyama, 2018) over the
semantic and the aesthetic condition jointly:

    D(x, s, y) = psi(phi(x)) + <E[s], phi(x)> + <V y, phi(x)>

i.e. the projection of phi(x) on the embedding of the concatenated condition [one-hot(s), y]
with the stacked matrix [E; V]: the category picks a row of E, the histogram mixes the columns
of V. Everything that touches phi is spectrally normalised, E and V included.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pfagan.config import GANConfig
from pfagan.layers import sn_conv, sn_embedding, sn_linear

MAX_DOUBLINGS = 3  # the widest blocks have 8x the first block's channels


def discriminator_widths(config: GANConfig) -> list[int]:
    """Channels after each down-block: doubling away from the image, capped at 8x."""
    return [config.d_channels * 2 ** min(k, MAX_DOUBLINGS) for k in range(config.num_blocks)]


class DownBlock(nn.Module):
    """[ReLU]-conv-ReLU-conv-avgpool, plus a 1x1-conv shortcut, all spectrally normalised."""

    def __init__(self, in_channels: int, out_channels: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.conv1 = sn_conv(in_channels, out_channels)
        self.conv2 = sn_conv(out_channels, out_channels)
        self.shortcut = sn_conv(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        h = F.avg_pool2d(h, 2)
        # Both maps are linear, so pooling before the 1x1 conv gives the same result, 4x cheaper.
        return h + self.shortcut(F.avg_pool2d(x, 2))


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        widths = discriminator_widths(config)
        self.blocks = nn.ModuleList(DownBlock(c_in, c_out, first=i == 0)
                                    for i, (c_in, c_out) in enumerate(zip([3, *widths], widths)))
        self.psi = sn_linear(widths[-1], 1)
        self.embed = sn_embedding(config.num_categories, widths[-1])  # E
        self.hist_embed = sn_linear(config.num_bins, widths[-1], bias=False)  # V

    def features(self, x: Tensor) -> Tensor:
        """phi(x): (N, channels), ReLU then a sum over positions."""
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))

    def project(self, phi: Tensor, category: Tensor, hist: Tensor) -> Tensor:
        """The logits (N,) for features phi: psi(phi) + <E[s] + V y, phi>."""
        condition = self.embed(category) + self.hist_embed(hist.to(phi.dtype))
        return self.psi(phi).squeeze(1) + (condition * phi).sum(1)

    def forward(self, x: Tensor, category: Tensor, hist: Tensor) -> Tensor:
        return self.project(self.features(x), category, hist)
