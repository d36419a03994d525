"""The paper's evaluation metrics for predicted score distributions, overall and per category.

Murray & Gordo 2017 report, on AVA's test split: KLDIV (mean KL(true || predicted) over the 10
bins), CDLoss (mean r=2 distance between the cumulative distributions), the MSE of the mean
score, Spearman's rho and Pearson's r between true and predicted mean scores, and the binary
accuracy of high vs low quality (mean score >= 5). The first two need a predicted
distribution; for the mean-regression baseline they are None (null in Parquet, "not
measured"), while NaN means "measured but undefined", e.g. a correlation over one image.

Everything is numpy; torch tensors are accepted and converted. Metrics are registered in
``METRICS`` so that a new one is one entry, and :func:`evaluate` returns rows (dicts with the
columns ``EVALUATION_COLUMNS``) ready for ``pyarrow.Table.from_pylist``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import special, stats

from apm.core.registry import Registry
from apm.core.schemas import HIGH_SCORE_THRESHOLD, NUM_BINS
from apm.votes.distributions import SCORES

#: Predicted probabilities are floored here in KLDIV, so that a bin that underflowed to 0 in
#: float32 gives a large, finite divergence instead of an infinite mean.
KL_PRED_FLOOR = 1e-12

#: The ``category`` of the row over all images.
OVERALL = "overall"

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_histograms(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as float64 ``(N, 10)`` non-negative rows with a positive sum (counts or pmfs)."""
    x = _to_numpy(x).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != NUM_BINS:
        raise ValueError(f"{name} must have shape (N, {NUM_BINS}), got {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1) | (x < 0).any(axis=1) | (x.sum(axis=1) <= 0))
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} is not a histogram: {x[bad[0]].tolist()} "
                         f"({bad.size} such rows)")
    return x


def normalise(histograms: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1."""
    return histograms / histograms.sum(axis=1, keepdims=True)


def mean_scores(histograms: np.ndarray) -> np.ndarray:
    """Mean score of each row; exact for integer vote counts, which decides means of exactly 5."""
    return (histograms @ SCORES) / histograms.sum(axis=1)


def kl_divergence(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """KL(true || pred) per row, for normalised rows; empty true bins contribute 0."""
    return special.rel_entr(true, np.maximum(pred, KL_PRED_FLOOR)).sum(axis=1)


def cdf_distance(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """sqrt(mean_k (CDF_true(k) - CDF_pred(k))^2) per row, for normalised rows (CDLoss, r=2)."""
    return np.sqrt(np.mean((np.cumsum(true, axis=1) - np.cumsum(pred, axis=1)) ** 2, axis=1))


def _correlation(fn: Callable[..., Any], a: np.ndarray, b: np.ndarray) -> float:
    """The coefficient of scipy's ``fn``; NaN, without scipy's warning, where it is undefined."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b).statistic)


@dataclass(frozen=True)
class Predictions:
    """True and predicted scores of a set of images; ``pred`` is None without a distribution."""

    true: np.ndarray  # (N, 10) normalised
    true_mean: np.ndarray
    pred: np.ndarray | None  # (N, 10) normalised
    pred_mean: np.ndarray

    def subset(self, rows: np.ndarray) -> Predictions:
        return Predictions(self.true[rows], self.true_mean[rows],
                           None if self.pred is None else self.pred[rows], self.pred_mean[rows])


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it, and whether it needs a predicted distribution."""

    fn: Callable[[Predictions], float]
    needs_dist: bool = False


def _high_accuracy(p: Predictions) -> float:
    return float(np.mean((p.true_mean >= HIGH_SCORE_THRESHOLD) == (p.pred_mean >= HIGH_SCORE_THRESHOLD)))


#: Name -> metric, in the order of the columns of ``evaluate``'s rows.
METRICS: Registry[Metric] = Registry("metric")
METRICS.add("kldiv", Metric(lambda p: float(kl_divergence(p.true, p.pred).mean()), needs_dist=True))
METRICS.add("cdloss", Metric(lambda p: float(cdf_distance(p.true, p.pred).mean()), needs_dist=True))
METRICS.add("mse", Metric(lambda p: float(np.mean((p.true_mean - p.pred_mean) ** 2))))
METRICS.add("spearman", Metric(lambda p: _correlation(stats.spearmanr, p.true_mean, p.pred_mean)))
METRICS.add("pearson", Metric(lambda p: _correlation(stats.pearsonr, p.true_mean, p.pred_mean)))
METRICS.add("accuracy", Metric(_high_accuracy))

#: Columns of every row of :func:`evaluate`.
EVALUATION_COLUMNS = ("category", "n_images", *METRICS)


def _row(category: str, p: Predictions) -> dict[str, str | int | float | None]:
    values = {name: None if metric.needs_dist and p.pred is None else metric.fn(p)
              for name, metric in METRICS.items()}
    return {"category": category, "n_images": len(p.true_mean), **values}


def evaluate(true_dist: ArrayLike, pred_dist: ArrayLike | None = None,
             categories: ArrayLike | None = None, *,
             pred_mean: ArrayLike | None = None) -> list[dict[str, str | int | float | None]]:
    """Every metric over all images (category ``"overall"``), then per category.

    ``true_dist`` is ``(N, 10)``, vote counts or normalised histograms. Give the prediction as
    ``pred_dist`` ``(N, 10)`` (its mean scores are derived) or, for the mean-regression
    baseline, as ``pred_mean`` ``(N,)``. ``categories`` (one label per image, None for
    unknown) adds a row per label, sorted by name; images without a label count in
    ``overall`` only.
    """
    if (pred_dist is None) == (pred_mean is None):
        raise ValueError("give exactly one of pred_dist (a distribution head) and pred_mean (the baseline)")
    true = as_histograms(true_dist, "true_dist")
    if pred_dist is not None:
        pred_hist = as_histograms(pred_dist, "pred_dist")
        pred, means = normalise(pred_hist), mean_scores(pred_hist)
    else:
        pred, means = None, _to_numpy(pred_mean).astype(np.float64).reshape(-1)
    if len(means) != len(true):
        raise ValueError(f"{len(true)} true distributions but {len(means)} predictions")
    everything = Predictions(normalise(true), mean_scores(true), pred, means)
    rows = [_row(OVERALL, everything)]
    if categories is not None:
        labels = [None if c is None else str(c) for c in _to_numpy(categories).reshape(-1).tolist()]
        if len(labels) != len(true):
            raise ValueError(f"{len(true)} true distributions but {len(labels)} categories")
        label_array = np.array(labels, dtype=object)
        for label in sorted({c for c in labels if c is not None}):
            rows.append(_row(label, everything.subset(np.flatnonzero(label_array == label))))
    return rows
