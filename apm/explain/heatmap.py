"""Where an image was changed: the heatmap of a perturbation, its peak region, its concentration.

The heatmap of a perturbation ``delta`` (N, H, W, 3) is, per pixel, the Euclidean length of its
change over the three channels, smoothed by a Gaussian of standard deviation ``sigma`` pixels
(reflected at the borders) and divided by its maximum, so that it lies in [0, 1] with its peak
at 1 (all zeros where nothing changed). It lives on the model's input crop: pixel (x, y) of the
heatmap is pixel (x, y) of the centre crop the model scored.

The peak region is the connected set (8-neighbourhood) of heatmap pixels >= ``threshold`` times
the maximum that holds the maximum; :func:`peak_bbox` gives its bounding box in crop pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torch.nn import functional as F

#: A box in crop pixels: x0, y0 (inclusive), x1, y1 (exclusive).
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class HeatmapConfig:
    """How a perturbation becomes a heatmap and a peak region."""

    smooth: float = 0.02  # Gaussian sigma as a fraction of the crop side (0: none)
    peak_threshold: float = 0.5  # peak region: pixels >= this times the maximum

    def __post_init__(self) -> None:
        if not 0 <= self.smooth < 1:
            raise ValueError(f"--smooth must be in [0, 1) (a fraction of the crop side), "
                             f"got {self.smooth}")
        if not 0 < self.peak_threshold <= 1:
            raise ValueError(f"--peak-threshold must be in (0, 1], got {self.peak_threshold}")


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """(N, H, W) maps smoothed by a separable Gaussian of ``sigma`` pixels; 0 leaves them as is.

    The kernel reaches 3 sigma (at most to the map's border) and the borders are reflected.
    """
    if sigma <= 0:
        return maps
    radius = min(math.ceil(3 * sigma), maps.shape[-2] - 1, maps.shape[-1] - 1)
    if radius < 1:
        return maps
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps[:, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def change_heatmap(delta: Tensor, sigma: float) -> Tensor:
    """(N, H, W) heatmaps in [0, 1] of (N, H, W, 3) perturbations (see the module docstring)."""
    heat = gaussian_blur(delta.float().norm(dim=-1), sigma)
    peak = heat.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, heat / peak.clamp_min(torch.finfo(heat.dtype).tiny), 0.0)


def peak_bbox(heat: np.ndarray, threshold: float) -> Box | None:
    """The bounding box of the region around the maximum of an (H, W) heatmap; None if all 0."""
    if not heat.max() > 0:
        return None
    labels, _ = ndimage.label(heat >= threshold * heat.max(), structure=np.ones((3, 3)))
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    ys, xs = np.nonzero(labels == labels[y, x])
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of an (H, W) heatmap's mass where the boolean ``mask`` is set (NaN if no mass)."""
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else math.nan
