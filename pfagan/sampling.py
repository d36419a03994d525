"""Drawing samples from a trained generator for given conditions.

A condition is a category and a normalised 10-bin score histogram. Users often think in mean
scores rather than histograms: :func:`histogram_for_mean` turns a mean into the binned Gaussian
histogram (the Gaussian of :mod:`apm.votes.distributions`) whose mean is exactly that score.

On GPUs the drawing runs in a Ray task that holds a GPU (:func:`sample_on_device`): under
``ray job submit`` the driver runs on the head, which has none.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import ray
import torch

from apm.core.schemas import NUM_BINS
from apm.votes.distributions import SCORES, gaussian_pmf
from pfagan.checkpoint import StoredGenerator

log = logging.getLogger(__name__)

#: Spread of the histogram made from a mean: about the median std of AVA's vote histograms.
DEFAULT_STD = 1.45


def parse_histogram(values: list[float]) -> np.ndarray:
    """A normalised histogram from 10 non-negative counts or shares (``--histogram``)."""
    hist = np.asarray(values, dtype=np.float64)
    if hist.shape != (NUM_BINS,):
        raise ValueError(f"--histogram needs {NUM_BINS} values (scores 1..{NUM_BINS}), got {hist.size}")
    if not np.all(np.isfinite(hist)) or (hist < 0).any() or hist.sum() <= 0:
        raise ValueError("--histogram values must be finite, non-negative and not all zero")
    return hist / hist.sum()


def histogram_for_mean(mean: float, std: float = DEFAULT_STD) -> np.ndarray:
    """The binned Gaussian histogram of spread ``std`` whose mean score is ``mean``.

    Binning folds the tails into scores 1 and 10, which pulls the mean towards the middle, so
    the Gaussian's centre is found by bisection (the binned mean grows with the centre).
    """
    if not 1.0 < mean < NUM_BINS:
        raise ValueError(f"--mean must be strictly between 1 and {NUM_BINS}, got {mean}")
    if not std > 0:
        raise ValueError(f"the histogram's std must be positive, got {std}")

    def binned_mean(centre: float) -> float:
        return float(gaussian_pmf(np.array([centre]), np.array([std]))[0] @ SCORES)

    low, high = -4.0 * NUM_BINS, 5.0 * NUM_BINS
    for _ in range(80):
        centre = (low + high) / 2
        low, high = (centre, high) if binned_mean(centre) < mean else (low, centre)
    return gaussian_pmf(np.array([(low + high) / 2]), np.array([std]))[0]


def histogram_mean(hist: np.ndarray) -> np.ndarray:
    return np.asarray(hist) @ SCORES


@dataclass(frozen=True)
class Conditions:
    """One row per sample: category id, normalised histogram and noise seed."""

    category_ids: np.ndarray  # (N,) int
    histograms: np.ndarray  # (N, NUM_BINS) float, rows sum to 1
    seeds: np.ndarray  # (N,) int: sample i is reproducible from its seed alone

    def __len__(self) -> int:
        return len(self.category_ids)


def grid_conditions(category_ids: list[int], histograms: np.ndarray, per_cell: int,
                    seed: int = 0) -> Conditions:
    """Every category x histogram pair, ``per_cell`` samples each (category-major order)."""
    cells = [(c, h) for c in category_ids for h in range(len(histograms))]
    cats = np.repeat([c for c, _ in cells], per_cell)
    hists = np.repeat(np.asarray(histograms, np.float64)[[h for _, h in cells]], per_cell, axis=0)
    return Conditions(cats.astype(np.int64), hists, seed + np.arange(len(cats), dtype=np.int64))


def noise(seeds: np.ndarray, z_dim: int) -> torch.Tensor:
    """Standard-normal noise, one row per seed (independent of batch size and order)."""
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows)


@torch.inference_mode()
def sample(stored: StoredGenerator, conditions: Conditions, batch_size: int = 64,
           device: str = "cpu") -> np.ndarray:
    """uint8 images (N, R, R, 3) for ``conditions``, drawn in eval mode (running BN statistics)."""
    generator = stored.generator.to(device).eval()
    out = []
    for start in range(0, len(conditions), batch_size):
        part = slice(start, start + batch_size)
        z = noise(conditions.seeds[part], stored.config.z_dim).to(device)
        category = torch.as_tensor(conditions.category_ids[part], device=device)
        hist = torch.as_tensor(conditions.histograms[part], dtype=torch.float32, device=device)
        images = generator(z, category, hist).float()
        out.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                   .permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


@ray.remote
def _sample_task(stored: StoredGenerator, conditions: Conditions, batch_size: int,
                 device: str) -> tuple[np.ndarray, str]:
    """:func:`sample` in a Ray worker, and the node it ran on (for the log)."""
    return sample(stored, conditions, batch_size, device), ray.get_runtime_context().get_node_id()


def sampling_task(device: str):
    """The Ray task that draws samples on a node with ``device``: it holds one GPU for cuda."""
    return _sample_task.options(num_gpus=1 if device == "cuda" else 0)


def sample_on_device(stored: StoredGenerator, conditions: Conditions, batch_size: int = 64,
                     device: str = "cpu") -> np.ndarray:
    """:func:`sample` where ``device`` is: in this process on CPU; for cuda in a Ray task on a
    GPU node (joining the Ray of ``RAY_ADDRESS`` if none is up), so the driver needs no CUDA."""
    if device != "cuda":
        return sample(stored, conditions, batch_size, device)
    images, node = ray.get(sampling_task(device).remote(stored, conditions, batch_size, device))
    log.info("drew %d samples on the GPU of node %s", len(images), node)
    return images
