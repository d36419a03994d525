"""What a model's metrics mean: the constant predictor below them and, on synthetic data, the
ceiling above them.

* **Constant predictor**: every photo gets the train split's mean vote histogram. It uses no
  pixel, so a model that does not beat it on a metric has learned nothing that metric sees. It
  ranks nothing: its correlations are undefined (NaN) and count as 0 when compared.
* **Ceiling** (synthetic AVA only): every photo gets the pmf its votes were drawn from
  (``truth.parquet``, ``true_pmf``). Its Spearman ρ between the noise-free expected mean and
  the observed vote mean is what a perfect model reaches given a finite number of raters.

:func:`below_baseline` names the metrics on which a model does not beat the constant; the
evaluation report and the pipeline's summary flag them.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apm.core import storage
from apm.core.schemas import NUM_BINS
from apm.votes.distributions import normalise
from apm.votes.fit_report import votes_from_manifest

CONSTANT = "constant: train mean histogram"
CEILING = "ceiling: the truth's pmf (finite raters)"
BASELINES = (CONSTANT, CEILING)

#: Metric -> +1 where higher is better, -1 where lower is.
DIRECTION = {"kldiv": -1, "cdloss": -1, "mse": -1, "spearman": +1, "pearson": +1, "accuracy": +1}

#: Correlations of a predictor that ranks nothing.
NO_RANKING = ("spearman", "pearson")


def train_mean_histogram(manifest_uri: str, split: str = "train") -> np.ndarray:
    """The mean normalised vote histogram of a manifest split, shape (10,)."""
    table = storage.read_table(manifest_uri)
    table = table.filter(pc.equal(table["split"], split))
    if table.num_rows == 0:
        raise ValueError(f"{manifest_uri}: no {split} rows for the constant predictor")
    return normalise(votes_from_manifest(table)[1].astype(np.float64)).mean(axis=0)


def truth_pmfs(truth_uri: str, image_ids: np.ndarray) -> np.ndarray:
    """The synthetic truth's rating pmf for each of ``image_ids`` (NaN rows where absent)."""
    truth = storage.read_table(truth_uri, columns=["image_id", "true_pmf"])
    position = pc.index_in(pa.array(image_ids, pa.int64()), value_set=truth["image_id"])
    pmf = np.full((len(image_ids), NUM_BINS), np.nan)
    found = np.asarray(pc.is_valid(position))
    if found.any():
        rows = np.asarray(pc.drop_null(position))
        pmf[found] = np.stack(truth["true_pmf"].to_numpy(zero_copy_only=False)[rows])
    return pmf


def _worse(value: float | None, reference: float | None, direction: int) -> bool:
    if value is None or reference is None:
        return False
    value = 0.0 if math.isnan(value) else value  # an undefined correlation ranks nothing
    reference = 0.0 if math.isnan(reference) else reference
    return (value - reference) * direction <= 0


def below_baseline(row: dict, constant: dict) -> list[str]:
    """The metrics of ``row`` (an evaluation row) that do not beat the constant predictor's."""
    return [name for name, direction in DIRECTION.items()
            if _worse(row.get(name), constant.get(name), direction)]
