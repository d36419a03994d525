"""The Ray Data passes of distributed k-means; the driver only adds up per-batch results.

1. :func:`read_prepared`: one Ray Data task per Parquet file reads its needed columns through
   :func:`apm.core.storage.arrow_filesystem` (local folders and ``s3://`` alike), prepares them
   (:func:`apm.clustering.features.prepare_batch`), and the result is materialised in the
   object store, where the later passes find it without reading Parquet again.
2. :func:`census`: counts and checks (:class:`apm.clustering.source.Census`).
3. :func:`draw_sample`: the bounded random sample k-means++ seeds from.
4. :func:`lloyd`: per pass, every batch assigns its rows to the nearest centroid in a task and
   returns only its :class:`apm.clustering.kmeans.Partial` (sums, counts, inertia, farthest
   rows); the driver merges those and moves the centroids.
5. :func:`assignments`: the final cluster and distance of every row, streamed to the driver as
   small Arrow tables without features.

A per-batch result travels as one Python object (a one-row object column), so the driver never
holds more than one batch's result and its running total.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm.clustering.features import FeatureSpec, prepare_batch, vectors
from apm.clustering.kmeans import KMeansConfig, Partial, nearest, partial_stats, update_centroids
from apm.clustering.source import Census, census_batch
from apm.core import storage

log = logging.getLogger(__name__)

#: Prepared columns that :func:`assignments` passes on with each row's cluster and distance.
CARRIED_COLUMNS = ["uri", "image_id", "key", "top1", "mean"]


def _read_files(batch: dict[str, np.ndarray], spec: FeatureSpec, seed: int, batch_size: int,
                storage_env: dict[str, str]) -> Iterator[pa.Table]:
    """Prepared batches of every file of ``batch``, read with pyarrow through :mod:`apm.core.storage`."""
    storage.apply_env(storage_env)
    for uri in batch["file"]:
        fs, path = storage.arrow_filesystem(str(uri))
        for records in pq.ParquetFile(path, filesystem=fs).iter_batches(
                batch_size=batch_size, columns=list(spec.columns)):
            yield prepare_batch(pa.Table.from_batches([records]), spec.kind, seed, str(uri))


def read_prepared(files: list[str], spec: FeatureSpec, seed: int, batch_size: int):
    """A materialised Ray Dataset of the prepared rows of ``files``, one read task per file."""
    import ray

    return (ray.data.from_items([{"file": uri} for uri in files])
            .map_batches(_read_files, batch_size=1, batch_format="numpy",
                         fn_kwargs={"spec": spec, "seed": seed, "batch_size": batch_size,
                                    "storage_env": storage.ray_env_vars()})
            .materialize())


def _one_result(batch: pa.Table, fn: Callable, kwargs: dict) -> dict[str, np.ndarray]:
    result = np.empty(1, dtype=object)
    result[0] = fn(batch, **kwargs)
    return {"result": result}


def _per_batch(dataset, fn: Callable, batch_size: int, **kwargs) -> Iterator:
    """``fn(batch, **kwargs)`` for every batch of ``dataset``, computed in Ray Data tasks."""
    results = dataset.map_batches(_one_result, batch_format="pyarrow", batch_size=batch_size,
                                  fn_kwargs={"fn": fn, "kwargs": kwargs})
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        yield from batch["result"]


def census(dataset, spec: FeatureSpec, batch_size: int) -> Census:
    return reduce(Census.merge, _per_batch(dataset, census_batch, batch_size, spec=spec), Census())


def _keys(batch: pa.Table, rows: np.ndarray) -> np.ndarray:
    return batch.column("key").to_numpy()[rows]


def _sample_batch(batch: pa.Table, spec: FeatureSpec, dim: int, size: int,
                  threshold: int | None) -> tuple[np.ndarray, np.ndarray]:
    rows, x = vectors(batch, spec, dim)
    keys = _keys(batch, rows)
    order = np.argsort(keys, kind="stable")[:size]
    if threshold is not None:
        order = order[keys[order] <= np.uint64(threshold)]
    return keys[order], x[order]


def draw_sample(dataset, spec: FeatureSpec, dim: int, size: int, population: int,
                batch_size: int) -> np.ndarray:
    """About ``min(size, population)`` usable rows, sorted by key: those with the smallest keys,
    a uniform random sample that does not depend on how the rows are split into batches.

    A batch sends at most ``size`` rows, and only those whose key is below a threshold that
    ``size + 10 sqrt(size)`` rows pass on average (every row when ``population`` is small);
    the driver keeps the ``size`` smallest keys as batches arrive.
    """
    share = (size + 10 * math.sqrt(size)) / population
    threshold = None if share >= 1 else int(share * 2 ** 64)
    keys, x = np.empty(0, np.uint64), np.empty((0, dim))
    for batch_keys, batch_x in _per_batch(dataset, _sample_batch, batch_size, spec=spec, dim=dim,
                                          size=size, threshold=threshold):
        keys, x = np.concatenate([keys, batch_keys]), np.concatenate([x, batch_x])
        order = np.argsort(keys, kind="stable")[:size]
        keys, x = keys[order], x[order]
    return x


def _partial_batch(batch: pa.Table, spec: FeatureSpec, centroids: np.ndarray) -> Partial:
    rows, x = vectors(batch, spec, centroids.shape[1])
    return partial_stats(x, _keys(batch, rows), centroids)


@dataclass(frozen=True)
class LloydResult:
    centroids: np.ndarray  # (k, d) float64
    iterations: int
    converged: bool  # the last iteration moved no centroid farther than tol, and none was empty
    shift: float  # the largest centroid move of the last iteration
    reseeded: int  # empty clusters restarted at far rows, over all iterations


def lloyd(dataset, centroids: np.ndarray, spec: FeatureSpec, config: KMeansConfig,
          batch_size: int) -> LloydResult:
    """Lloyd iterations from ``centroids`` until convergence or ``config.max_iter`` passes."""
    reseeded, shift = 0, math.inf
    for iteration in range(1, config.max_iter + 1):
        total = reduce(Partial.merge, _per_batch(dataset, _partial_batch, batch_size, spec=spec,
                                                 centroids=centroids))
        new, empty = update_centroids(centroids, total)
        shift = float(np.linalg.norm(new - centroids, axis=1).max())
        centroids, reseeded = new, reseeded + len(empty)
        log.info("k-means iteration %d: inertia %.6g, largest centroid move %.3g, %d empty "
                 "cluster(s) restarted", iteration, total.inertia, shift, len(empty))
        if len(empty) == 0 and shift <= config.tol:
            return LloydResult(centroids, iteration, True, shift, reseeded)
    return LloydResult(centroids, config.max_iter, False, shift, reseeded)


def _assign_batch(batch: pa.Table, spec: FeatureSpec, centroids: np.ndarray) -> pa.Table:
    rows, x = vectors(batch, spec, centroids.shape[1])
    labels, sqdist = nearest(x, centroids)
    kept = batch.filter(pa.array(rows)).select(CARRIED_COLUMNS)
    return (kept.append_column("cluster_id", pa.array(labels, pa.int32()))
            .append_column("distance", pa.array(np.sqrt(sqdist), pa.float32())))


def assignments(dataset, centroids: np.ndarray, spec: FeatureSpec,
                batch_size: int) -> Iterator[pa.Table]:
    """Tables of :data:`CARRIED_COLUMNS`, ``cluster_id`` (the nearest centroid) and
    ``distance`` (Euclidean, in feature space) for every usable row, as Ray Data completes them."""
    assigned = dataset.map_batches(_assign_batch, batch_format="pyarrow", batch_size=batch_size,
                                   fn_kwargs={"spec": spec, "centroids": centroids})
    yield from assigned.iter_batches(batch_size=None, batch_format="pyarrow")
