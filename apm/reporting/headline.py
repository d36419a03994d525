"""The figures a reader of the pipeline's report looks at first, each beside what it must beat.

Read back from the stages' outputs in a work folder (nothing is recomputed from pixels):

* APM (``eval/metrics.parquet``): the fine-tuned model's Spearman ρ, MSE and accuracy on the
  test split against the constant predictor's, and the ceiling's ρ (:mod:`apm.votes.baselines`);
* clusters (``clusters/clusters.parquet`` + the synthetic truth): the adjusted Rand index, whose
  chance level is 0;
* explanations (``explain/explanations.parquet``): the median |change of the predicted mean| of
  the edits that moved the score the asked way, and the share that did;
* PFAGAN (``generated/samples.parquet``): Spearman ρ between the conditioning mean and the
  APM's mean of the samples, and the share of samples a classifier trained on real photos
  assigns to the asked category (chance: 1 / categories).

A figure is *flagged* when it does not beat its baseline; the report and the printed summary
show the flag. Targets are what the demo is meant to reach (issue 15 of the project); missing
a target is shown, not flagged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.compute as pc
from scipy import stats

from apm.core import storage
from apm.votes.baselines import CEILING, CONSTANT
from apm.votes.metrics import OVERALL

#: What the embedded demo is built to reach on its own test split.
DEMO_TARGETS = {"apm_spearman": 0.5, "cluster_ari": 0.6, "explain_median_change": 0.3,
                "gan_spearman": 0.5, "gan_category_accuracy": 0.4}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float
    baseline: float | None  # what it must beat (None: nothing to beat)
    baseline_label: str
    higher_is_better: bool = True
    target: float | None = None

    @property
    def flagged(self) -> bool:
        """Not better than its baseline (an undefined value counts as not better)."""
        if self.baseline is None:
            return False
        if math.isnan(self.value):
            return True
        gain = self.value - self.baseline
        return gain <= 0 if self.higher_is_better else gain >= 0

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        if math.isnan(self.value):
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def line(self) -> str:
        text = f"{self.label}: {self.value:.3f}"
        if self.baseline is not None:
            text += f" ({self.baseline_label} {self.baseline:.3f})"
        elif self.baseline_label:
            text += f" ({self.baseline_label})"
        if self.target is not None:
            text += f"; target {'≥' if self.higher_is_better else '≤'} {self.target:g}"
            text += "" if self.meets_target else " — not reached"
        return text + ("  ⚠ not better than its baseline" if self.flagged else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "flagged": self.flagged, "meets_target": self.meets_target}

    @classmethod
    def from_dict(cls, data: dict) -> Figure:
        """The inverse of :meth:`to_dict` (the derived verdicts are recomputed)."""
        return cls(**{k: v for k, v in data.items() if k not in ("flagged", "meets_target")})


def _apm(work: str, model: str) -> list[Figure]:
    uri = storage.join(work, "eval", "metrics.parquet")
    if not storage.exists(uri):
        return []
    rows = {r["variant"]: r for r in storage.read_table(uri).to_pylist() if r["category"] == OVERALL}
    if model not in rows or CONSTANT not in rows:
        return []
    row, constant = rows[model], rows[CONSTANT]
    ceiling = rows.get(CEILING)
    return [
        Figure("apm_spearman", f"APM ({model}) Spearman ρ on the test split"
               + (f" (ceiling {ceiling['spearman']:.3f})" if ceiling else ""), row["spearman"],
               0.0, "constant predictor", target=DEMO_TARGETS["apm_spearman"]),
        Figure("apm_mse", f"APM ({model}) MSE of the mean score", row["mse"], constant["mse"],
               "constant predictor", higher_is_better=False),
        Figure("apm_accuracy", f"APM ({model}) accuracy (mean ≥ 5)", row["accuracy"],
               constant["accuracy"], "constant predictor"),
    ]


def _clusters(work: str, truth: str | None) -> list[Figure]:
    uri = storage.join(work, "clusters", "clusters.parquet")
    if not (truth and storage.exists(uri)):
        return []
    from apm.clustering.truth import compare_with_truth, read_truth

    clusters = storage.read_table(uri, columns=["image_id", "cluster_id"])
    k = int(pc.max(clusters["cluster_id"]).as_py()) + 1
    ari = compare_with_truth(clusters, read_truth(truth), k, truth).ari
    return [Figure("cluster_ari", "clusters: adjusted Rand index vs the true categories", ari, 0.0,
                   "chance", target=DEMO_TARGETS["cluster_ari"])]


def _explanations(work: str) -> list[Figure]:
    uri = storage.join(work, "explain", "explanations.parquet")
    if not storage.exists(uri):
        return []
    table = storage.read_table(uri, columns=["direction", "status", "delta"])
    table = table.filter(pc.equal(table["status"], "ok"))
    if table.num_rows == 0:
        return []
    delta = table["delta"].to_numpy().astype(np.float64)
    sign = np.where(np.asarray(table["direction"].to_pylist()) == "raise", 1.0, -1.0)
    moved = delta * sign  # > 0: the asked way
    return [Figure("explain_median_change",
                   "explanations: median change of the predicted mean, the asked way",
                   float(np.median(moved)), 0.0, "no change",
                   target=DEMO_TARGETS["explain_median_change"]),
            Figure("explain_share_moved", "explanations: share moved the asked way",
                   float(np.mean(moved > 0)), None, "")]


def _gan(work: str) -> list[Figure]:
    uri = storage.join(work, "generated", "samples.parquet")
    if not storage.exists(uri):
        return []
    table = storage.read_table(uri, columns=["category", "condition_mean", "pred_mean",
                                             "pred_category"])
    figures = []
    condition = table["condition_mean"].to_numpy().astype(np.float64)
    if table["pred_mean"].null_count == 0 and len(np.unique(condition)) > 1:
        rho = float(stats.spearmanr(condition, table["pred_mean"].to_numpy()).statistic)
        figures.append(Figure("gan_spearman", "PFAGAN: Spearman ρ, conditioning mean vs APM mean "
                              "of the samples", rho, 0.0, "no control",
                              target=DEMO_TARGETS["gan_spearman"]))
    if table["pred_category"].null_count == 0:
        asked = np.asarray(table["category"].to_pylist())
        accuracy = float(np.mean(asked == np.asarray(table["pred_category"].to_pylist())))
        chance = 1.0 / len(set(asked))
        figures.append(Figure("gan_category_accuracy", "PFAGAN: samples classified as the asked "
                              "category", accuracy, chance, "chance",
                              target=DEMO_TARGETS["gan_category_accuracy"]))
    return figures


def headline_figures(work: str, model: str = "finetuned", truth: str | None = None) -> list[Figure]:
    """Every figure of the module docstring whose stage output exists in ``work``."""
    return [*_apm(work, model), *_clusters(work, truth), *_explanations(work), *_gan(work)]


def condition_table(work: str) -> list[str]:
    """Markdown: per conditioning mean, the APM mean of the samples (mean ± sd, n)."""
    table = storage.read_table(storage.join(work, "generated", "samples.parquet"),
                               columns=["condition_mean", "pred_mean"]).to_pandas()
    if table["pred_mean"].isna().all():
        return []
    lines = ["| conditioning mean | APM mean of the samples | sd | samples |", "|---|---|---|---|"]
    for mean, group in table.groupby("condition_mean"):
        lines.append(f"| {mean:.2f} | {group['pred_mean'].mean():.3f} | "
                     f"{group['pred_mean'].std():.3f} | {len(group)} |")
    return lines
