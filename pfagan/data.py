"""What PFAGAN trains on: photos with a category and a normalised score histogram.

Three sources of conditioning, chosen by which tables are given (:class:`ConditioningSource`):

* ``truth``: a synthetic AVA; the category from its ``truth.parquet``, the histogram from the
  manifest's ``votes`` (joined on ``image_id``);
* ``clusters``: the ``clusters.parquet`` of ``jobs.cluster`` (category ``cluster_N``), with the
  histogram from a manifest's votes (joined on ``image_id``) or, for a library without votes,
  from the distribution the scoring job predicted (its ``dist``, joined on ``uri``);
* ``tags``: a manifest alone; the category is AVA's first semantic tag (rows without one are
  left out).

Category ids number the sorted names of the whole label table, so every split of the same data
gets the same ids. Photos are decoded by :mod:`apm.training.data` (short side resized to the
resolution, a square window, horizontal flips) and travel as uint8, four times smaller than
float32 in the object store; :func:`to_model_range` maps them to [-1, 1] on the worker.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch import Tensor

from apm.clustering.source import require_columns, scores_files
from apm.core import storage
from apm.training.data import IngestConfig, image_dataset, training_rows

log = logging.getLogger(__name__)

#: Columns of :attr:`Conditioning.rows`.
ROW_COLUMNS = ("uri", "image_id", "category_id", "target")


@dataclass(frozen=True)
class ConditioningSource:
    manifest: str | None = None  # jobs.prepare_ava's manifest.parquet: photos and votes
    truth: str | None = None  # a synthetic AVA's truth.parquet: categories
    clusters: str | None = None  # jobs.cluster's clusters.parquet: categories
    scores: str | None = None  # jobs.score's output: predicted histograms (with clusters only)
    split: str | None = "train"  # manifest split; None for all rows

    def __post_init__(self) -> None:
        if self.truth and self.clusters:
            raise ValueError("give categories from --truth or from --clusters, not both")
        if self.scores and not self.clusters:
            raise ValueError("--scores gives histograms for --clusters only")
        if self.clusters and bool(self.manifest) == bool(self.scores):
            raise ValueError("--clusters needs histograms from exactly one of --manifest (votes) "
                             "and --scores (predicted distributions)")
        if not self.clusters and not self.manifest:
            raise ValueError("--manifest is required (photos and votes), unless --clusters "
                             "comes with --scores")

    @property
    def kind(self) -> str:
        return "truth" if self.truth else "clusters" if self.clusters else "tags"

    @property
    def inputs(self) -> list[str]:
        return [u for u in (self.manifest, self.truth, self.clusters, self.scores) if u]


@dataclass(frozen=True)
class Conditioning:
    rows: pa.Table  # ROW_COLUMNS; target: the normalised histogram (float32, sums to 1)
    categories: tuple[str, ...]  # category id -> name

    def describe(self) -> str:
        ids, counts = np.unique(self.rows.column("category_id").to_numpy(), return_counts=True)
        return ", ".join(f"{self.categories[i]}={n}" for i, n in zip(ids, counts))


def _with_categories(rows: pa.Table, labels: pa.Table, key: str, what: str) -> Conditioning:
    """``rows`` (with ``key``) plus the category id of ``labels`` (``key``, ``category``);
    rows without a label are left out."""
    labels = labels.filter(pc.is_valid(labels["category"]))
    names = sorted(set(labels.column("category").to_pylist()))
    position = pc.index_in(rows[key], value_set=labels[key])
    matched = pc.is_valid(position)
    missing = rows.num_rows - pc.sum(matched).as_py()
    if missing == rows.num_rows:
        raise ValueError(f"{what}: no category for any of the {rows.num_rows} photos (joined on {key}); "
                         f"is it the table of the same photos?")
    if missing:
        log.warning("%s: no category for %d of %d photos; they are left out", what, missing,
                    rows.num_rows)
    rows = rows.filter(matched)
    category = labels["category"].take(pc.drop_null(position))
    category_id = pc.index_in(category, value_set=pa.array(names)).cast(pa.int32())
    table = pa.table({"uri": rows["uri"], "image_id": rows["image_id"], "category_id": category_id,
                      "target": rows["target"]})
    return Conditioning(table, tuple(names))


def _from_truth(source: ConditioningSource) -> Conditioning:
    # Not apm.clustering.truth.read_truth: its module imports scikit-learn, and every Train
    # worker imports this one.
    require_columns(source.truth, ("image_id", "category"), "--truth takes a synthetic AVA's truth.parquet")
    labels = storage.read_table(source.truth, columns=["image_id", "category"])
    return _with_categories(training_rows(source.manifest, source.split), labels, "image_id", source.truth)


def _from_tags(source: ConditioningSource) -> Conditioning:
    rows = training_rows(source.manifest, source.split)
    tags = storage.read_table(source.manifest, columns=["image_id", "tag1_name"])
    return _with_categories(rows, tags.rename_columns(["image_id", "category"]), "image_id",
                            f"{source.manifest} (tag1_name)")


def _predicted_rows(scores: str) -> pa.Table:
    """uri, image_id and the predicted distribution (renormalised) of the scored photos."""
    files = scores_files(scores)
    for uri in files:
        require_columns(uri, ("uri", "image_id", "status", "dist"),
                        "--scores takes the output of jobs.score (with a distribution head)")
    table = pa.concat_tables(storage.read_table(f, columns=["uri", "image_id", "status", "dist"])
                             for f in files)
    table = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["dist"])))
    if table.num_rows == 0:
        raise ValueError(f"{scores}: no scored photo with a predicted distribution")
    dist = np.stack(table.column("dist").to_numpy(zero_copy_only=False)).astype(np.float32)
    dist /= dist.sum(axis=1, keepdims=True)
    return pa.table({"uri": table["uri"], "image_id": table["image_id"],
                     "target": pa.FixedSizeListArray.from_arrays(pa.array(dist.reshape(-1)),
                                                                 dist.shape[1])})


def _from_clusters(source: ConditioningSource) -> Conditioning:
    require_columns(source.clusters, ("uri", "image_id", "cluster_id"),
                    "--clusters takes the clusters.parquet of jobs.cluster")
    clusters = storage.read_table(source.clusters, columns=["uri", "image_id", "cluster_id"])
    ids = clusters.column("cluster_id").to_numpy()
    # Padded like jobs.cluster's contact sheets (sheets/cluster_NN.png), so names match files.
    width = len(str(ids.max())) if len(ids) else 1
    names = pa.array([f"cluster_{i:0{width}d}" for i in ids])
    if source.scores:
        rows, key = _predicted_rows(source.scores), "uri"
    else:
        rows, key = training_rows(source.manifest, source.split), "image_id"
    labels = pa.table({key: clusters[key], "category": names})
    return _with_categories(rows, labels, key, source.clusters)


#: How each kind of source becomes rows; ``ConditioningSource.kind`` picks one.
LOADERS: dict[str, Callable[[ConditioningSource], Conditioning]] = {
    "truth": _from_truth, "tags": _from_tags, "clusters": _from_clusters}


def load_conditioning(source: ConditioningSource) -> Conditioning:
    return LOADERS[source.kind](source)


def gan_dataset(conditioning: Conditioning, resolution: int, augment: bool = True,
                shuffle: bool = True, seed: int = 0):
    """A Ray Dataset of uint8 HWC images at ``resolution`` with ``category_id`` and ``target``,
    in a new order every epoch when ``shuffle`` (reproducible from ``seed``)."""
    rows = conditioning.rows.select(["uri", "category_id", "target"])
    # resize_ratio 1: the short side becomes the resolution, the square window only slides
    # along the long side, so no photo loses more than its ends.
    return image_dataset(rows, IngestConfig(image_size=resolution, resize_ratio=1.0, augment=augment,
                                            shuffle=shuffle, seed=seed))


def to_model_range(images: Tensor) -> Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the generator's output range."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
