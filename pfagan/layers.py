"""Building blocks: mixed-conditional batch norm and spectrally normalised layers."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class MixedConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift depend on a category and a score histogram.

    For category s and normalised histogram y (``num_bins``), ``o = gamma * (h - mu) / sigma + beta``
    with ``gamma = y W_s^gamma + b_s^gamma`` and ``beta = y W_s^beta + b_s^beta``: one affine map of
    the histogram per category, for the scale and for the shift. W starts at zero, b^gamma at one
    and b^beta at zero, so the layer starts as plain batch norm (gamma = 1, beta = 0).

    Under DDP each worker normalises with its own batch's statistics (no SyncBatchNorm), as BigGAN
    does per device: it saves an all-reduce per layer and forward, and with batches of 32+ per
    worker the statistics are already stable.
    """

    def __init__(self, channels: int, num_categories: int, num_bins: int, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.weight_gamma = nn.Parameter(torch.zeros(num_categories, num_bins, channels))
        self.bias_gamma = nn.Parameter(torch.ones(num_categories, channels))
        self.weight_beta = nn.Parameter(torch.zeros(num_categories, num_bins, channels))
        self.bias_beta = nn.Parameter(torch.zeros(num_categories, channels))

    def scale_shift(self, category: Tensor, hist: Tensor) -> tuple[Tensor, Tensor]:
        """gamma and beta, each (N, channels), for categories (N,) and histograms (N, num_bins)."""
        hist = hist.to(self.weight_gamma.dtype)
        gamma = torch.einsum("nb,nbc->nc", hist, self.weight_gamma[category]) + self.bias_gamma[category]
        beta = torch.einsum("nb,nbc->nc", hist, self.weight_beta[category]) + self.bias_beta[category]
        return gamma, beta

    def forward(self, h: Tensor, category: Tensor, hist: Tensor) -> Tensor:
        gamma, beta = self.scale_shift(category, hist)
        return self.norm(h) * gamma[:, :, None, None] + beta[:, :, None, None]


def sn_conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """A 'same'-padded convolution with spectral norm (one power iteration per forward)."""
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))


def sn_embedding(num_embeddings: int, dim: int) -> nn.Embedding:
    return spectral_norm(nn.Embedding(num_embeddings, dim))
