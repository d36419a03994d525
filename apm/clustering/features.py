"""Feature vectors of scored photos, built from Arrow batches inside Ray Data tasks.

Two kinds (``--features``):

* ``embedding``: the scoring job's pooled backbone features (``embedding``, float16);
* ``semantic``: a 1000-d vector holding the semantic head's top-5 probabilities at their
  ImageNet ids (``top5_ids``, ``top5_probs``), zeros elsewhere.

By default every vector is L2-normalised, so that Euclidean k-means compares directions (as
the cosine similarity does); an all-zero vector stays zero.

:func:`prepare_batch` runs once, as the scores are read: it keeps the columns the later passes
need, compact as stored, and adds each row's key. :func:`vectors` builds the dense float64
matrix of a prepared batch's usable rows (status ``ok``, features present) in every pass.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apm.core.rows import STATUS_OK
from apm.core.schemas import NUM_IMAGENET_CLASSES, TEACHER_TOP_K

FEATURES = ("embedding", "semantic")

#: The scores columns each kind of feature is built from.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {"embedding": ("embedding",),
                                              "semantic": ("top5_ids", "top5_probs")}

#: The scores columns every kind needs (identity, status, the summary's score and top class).
BASE_COLUMNS = ("uri", "image_id", "status", "mean", "top5_names")


@dataclass(frozen=True)
class FeatureSpec:
    """Which vectors k-means clusters."""

    kind: str = "embedding"  # one of FEATURES
    normalize: bool = True  # L2-normalise every vector

    def __post_init__(self) -> None:
        if self.kind not in FEATURES:
            raise ValueError(f"--features must be one of {', '.join(FEATURES)}, got {self.kind!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        return (*BASE_COLUMNS, *SOURCE_COLUMNS[self.kind])

    def describe(self) -> str:
        return f"{self.kind} features" + (", L2-normalised" if self.normalize else "")


def row_keys(uris: list[str | None], image_ids: list[int | None], seed: int) -> np.ndarray:
    """A uint64 hash of (seed, uri, image_id) per row: a random-looking but reproducible order
    that does not depend on how the table is split into files or batches."""
    keys = np.empty(len(uris), np.uint64)
    for i, (uri, image_id) in enumerate(zip(uris, image_ids)):
        digest = hashlib.blake2b(f"{seed}\0{uri}\0{image_id}".encode(), digest_size=8).digest()
        keys[i] = int.from_bytes(digest, "little")
    return keys


def prepare_batch(batch: pa.Table, kind: str, seed: int, path: str) -> pa.Table:
    """uri, image_id, status, mean, top1 (the top class name), key, path (the Parquet file the
    batch comes from) and the feature's source columns."""
    names = batch.column("top5_names").to_pylist()
    return pa.table({
        "uri": batch.column("uri"),
        "image_id": batch.column("image_id"),
        "status": batch.column("status"),
        "mean": batch.column("mean").cast(pa.float64()),
        "top1": pa.array([n[0] if n else None for n in names], pa.string()),
        "key": pa.array(row_keys(batch.column("uri").to_pylist(),
                                 batch.column("image_id").to_pylist(), seed), pa.uint64()),
        "path": pa.array([path] * batch.num_rows, pa.string()),
        **{name: batch.column(name) for name in SOURCE_COLUMNS[kind]},
    })


def _bools(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _stack(column: pa.ChunkedArray, rows: np.ndarray, width: int) -> np.ndarray:
    """The lists of ``column`` at the boolean ``rows`` (valid, ``width`` long) as an array."""
    taken = column.filter(pa.array(rows)).combine_chunks()
    return pc.list_flatten(taken).to_numpy(zero_copy_only=False).reshape(len(taken), width)


def embedding_lengths(batch: pa.Table) -> np.ndarray:
    """Length of every embedding (0 where null)."""
    return pc.fill_null(pc.list_value_length(batch.column("embedding")), 0).to_numpy()


def is_ok(batch: pa.Table) -> np.ndarray:
    """Rows whose status is ``ok``."""
    return _bools(pc.equal(batch.column("status"), STATUS_OK))


def usable(batch: pa.Table, kind: str) -> np.ndarray:
    """Rows with status ``ok`` whose features are present (and, for ``semantic``, whose ids
    are ImageNet class ids)."""
    rows = is_ok(batch)
    if kind == "embedding":
        return rows & (embedding_lengths(batch) > 0)
    rows &= _bools(pc.and_(pc.is_valid(batch.column("top5_ids")),
                           pc.is_valid(batch.column("top5_probs"))))
    ids = _stack(batch.column("top5_ids"), rows, TEACHER_TOP_K)
    rows[rows] = ((ids >= 0) & (ids < NUM_IMAGENET_CLASSES)).all(axis=1)
    return rows


def vectors(batch: pa.Table, spec: FeatureSpec, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The usable rows (boolean mask) of a prepared batch and their (n, dim) float64 features.

    ``dim`` is the embedding length every usable row has (checked before, by the census), or
    1000 for ``semantic``.
    """
    rows = usable(batch, spec.kind)
    if spec.kind == "embedding":
        x = _stack(batch.column("embedding"), rows, dim).astype(np.float64)
    else:
        x = np.zeros((int(rows.sum()), dim))
        ids = _stack(batch.column("top5_ids"), rows, TEACHER_TOP_K).astype(np.int64)
        np.put_along_axis(x, ids, _stack(batch.column("top5_probs"), rows, TEACHER_TOP_K), axis=1)
    if spec.normalize:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.where(norm > 0, norm, 1.0)
    return rows, x
