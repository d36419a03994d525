"""How the clusters compare with known categories (``--truth``).

With a synthetic AVA's ``truth.parquet`` (``image_id``, ``category``), every clustered photo is
matched to its true category by ``image_id``; the adjusted Rand index
(:func:`sklearn.metrics.adjusted_rand_score`) and a cluster x category confusion table are
computed over the matched photos, and the unmatched ones are counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import adjusted_rand_score

from apm.clustering.source import require_columns
from apm.core import storage

TRUTH_COLUMNS = ("image_id", "category")


def read_truth(uri: str) -> pa.Table:
    """``image_id`` and ``category`` of a truth table; errors name the file."""
    require_columns(uri, TRUTH_COLUMNS, "--truth takes a synthetic AVA's truth.parquet")
    return storage.read_table(uri, columns=list(TRUTH_COLUMNS))


@dataclass(frozen=True)
class TruthComparison:
    source: str  # the truth table
    ari: float  # adjusted Rand index of clusters vs categories, over the matched photos
    matched: int  # clustered photos with a true category
    unmatched: int  # clustered photos without one (no image_id, or not in the truth table)
    categories: list[str]  # sorted
    confusion: np.ndarray  # (k, len(categories)) photos per cluster and category


def compare_with_truth(clusters: pa.Table, truth: pa.Table, k: int, source: str) -> TruthComparison:
    """Compare ``clusters`` (``image_id``, ``cluster_id``) with ``truth`` (``image_id``, ``category``)."""
    position = pc.index_in(clusters.column("image_id"), value_set=truth.column("image_id"))
    matched = np.asarray(pc.is_valid(position))
    if not matched.any():
        raise ValueError(f"{source}: none of the {clusters.num_rows} clustered photos' image_id "
                         f"is in it; is it the truth of the data that was scored?")
    category = np.array(truth.column("category").take(pc.drop_null(position)).to_pylist(), dtype=object)
    cluster = clusters.column("cluster_id").to_numpy()[matched]
    names, column = np.unique(category.astype(str), return_inverse=True)
    confusion = np.zeros((k, len(names)), np.int64)
    np.add.at(confusion, (cluster, column), 1)
    return TruthComparison(source, float(adjusted_rand_score(column, cluster)), int(matched.sum()),
                           int((~matched).sum()), names.tolist(), confusion)


def confusion_markdown(comparison: TruthComparison) -> list[str]:
    """The confusion table, with each cluster's majority category and its share (purity)."""
    names = comparison.categories
    lines = ["| cluster | " + " | ".join(names) + " | majority | purity |",
             "|---|" + "---|" * (len(names) + 2)]
    for cluster, counts in enumerate(comparison.confusion):
        total = counts.sum()
        majority = f"{names[counts.argmax()]} | {counts.max() / total:.0%}" if total else "— | —"
        lines.append(f"| {cluster} | " + " | ".join(str(n) for n in counts) + f" | {majority} |")
    return lines
