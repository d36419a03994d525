"""Per-cluster statistics, gathered as the assignments stream in, and ``cluster_summary.parquet``.

:class:`ClusterStats` adds up every assignment table (see :func:`apm.clustering.passes.assignments`):
sizes, inertia, the predicted mean scores and the top-1 classes, and keeps per cluster only the
rows nearest to the centroid that its contact sheet shows.

``score_hist[k-1]`` counts the predicted means in ``[k, k+1)`` for k = 1..10, so the last bin
holds the means of exactly 10; a mean-regression head's rare mean outside 1..10 counts in the
first or last bin. Top classes are sorted by count, then by name.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from apm.core.schemas import CLUSTER_SUMMARY_SCHEMA, NUM_BINS

#: How many of a cluster's commonest top-1 classes the summary names.
TOP_CLASSES = 5


def score_bins(mean: np.ndarray) -> np.ndarray:
    """The ``score_hist`` bin (0..9) of each predicted mean."""
    return np.clip(np.floor(mean).astype(np.int64) - 1, 0, NUM_BINS - 1)


class ClusterStats:
    """Running per-cluster totals of the assigned rows."""

    def __init__(self, k: int, nearest: int) -> None:
        self.k, self.nearest = k, nearest
        self.sizes = np.zeros(k, np.int64)
        self.inertia = 0.0
        self.score_sums = np.zeros(k)
        self.scored = np.zeros(k, np.int64)
        self.hist = np.zeros((k, NUM_BINS), np.int64)
        self.classes = [Counter() for _ in range(k)]
        # Per cluster: (distance, key, uri) of its nearest rows so far, nearest first.
        self._closest = [(np.empty(0), np.empty(0, np.uint64), np.empty(0, object))
                         for _ in range(k)]

    def add(self, rows: pa.Table) -> None:
        """Count one table of assignments (``cluster_id``, ``distance``, ``mean``, ``top1``,
        ``key``, ``uri``)."""
        label = rows.column("cluster_id").to_numpy()
        distance = rows.column("distance").to_numpy().astype(np.float64)
        self.sizes += np.bincount(label, minlength=self.k)
        self.inertia += float((distance ** 2).sum())
        mean = rows.column("mean").to_numpy()  # NaN where null
        scored = np.isfinite(mean)
        self.score_sums += np.bincount(label[scored], weights=mean[scored], minlength=self.k)
        self.scored += np.bincount(label[scored], minlength=self.k)
        np.add.at(self.hist, (label[scored], score_bins(mean[scored])), 1)
        for cluster, name in zip(label, rows.column("top1").to_pylist()):
            if name is not None:
                self.classes[cluster][name] += 1
        if self.nearest:
            self._keep_nearest(label, distance, rows.column("key").to_numpy(),
                               np.array(rows.column("uri").to_pylist(), dtype=object))

    def _keep_nearest(self, label: np.ndarray, distance: np.ndarray, key: np.ndarray,
                      uri: np.ndarray) -> None:
        for cluster in np.unique(label):
            mine = label == cluster
            d, kk, u = (np.concatenate([old, new[mine]])
                        for old, new in zip(self._closest[cluster], (distance, key, uri)))
            order = np.lexsort((kk, d))[:self.nearest]
            self._closest[cluster] = (d[order], kk[order], u[order])

    def nearest_uris(self, cluster: int) -> list[str]:
        """The photos nearest to the cluster's centroid, nearest first (ties: by row key)."""
        return [u for u in self._closest[cluster][2] if u is not None]

    def top_classes(self, cluster: int) -> list[tuple[str, float]]:
        """The commonest top-1 classes of the cluster and their shares of its photos."""
        ranked = sorted(self.classes[cluster].items(), key=lambda item: (-item[1], item[0]))
        return [(name, n / self.sizes[cluster]) for name, n in ranked[:TOP_CLASSES]]

    def mean_score(self, cluster: int) -> float | None:
        n = self.scored[cluster]
        return float(self.score_sums[cluster] / n) if n else None

    def table(self, centroids: np.ndarray) -> pa.Table:
        """``cluster_summary.parquet`` (``CLUSTER_SUMMARY_SCHEMA``), one row per cluster."""
        rows = []
        for c in range(self.k):
            top = self.top_classes(c)
            rows.append({"cluster_id": c, "size": int(self.sizes[c]),
                         "centroid": centroids[c].astype(np.float32).tolist(),
                         "top_classes": [name for name, _ in top],
                         "top_class_shares": [share for _, share in top],
                         "mean_score": self.mean_score(c), "score_hist": self.hist[c].tolist()})
        return pa.Table.from_pylist(rows, schema=CLUSTER_SUMMARY_SCHEMA)
