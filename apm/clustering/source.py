"""The scores table to cluster: where its Parquet files are, and whether they can be clustered.

``--scores`` is the scoring job's output folder (its table is ``OUT/scores/part-*.parquet``,
``SCORES_SCHEMA``), a folder of Parquet files, or one ``.parquet`` file; local or ``s3://``.
Files and folders whose name starts with ``_`` or ``.`` are not part of a table (the scoring
job's ``_listing``, markers), as for Spark and Ray Data.

Before any clustering, every file's schema is checked (:func:`check_columns`) and a census of
the rows (:class:`Census`, one pass) counts the error rows, finds ``ok`` rows that lack their
features and the feature length; :meth:`Census.check` turns what cannot be clustered into one
error that names the file and says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm.clustering.features import FeatureSpec, embedding_lengths, is_ok, usable
from apm.core import storage
from apm.core.schemas import NUM_IMAGENET_CLASSES, SCORES_FOLDER

#: Where the scoring job writes its table under its output folder.


def _in_table(uri: str, root: str) -> bool:
    relative = uri[len(root):].lstrip("/")
    return not any(part.startswith(("_", ".")) for part in relative.split("/"))


def scores_files(source: str) -> list[str]:
    """The Parquet files of ``source`` (see the module docstring), sorted."""
    source = storage.normalize(source)
    if source.lower().endswith(".parquet"):
        return [source]
    nested = storage.join(source, SCORES_FOLDER)
    root = nested if storage.exists(nested) else source
    files = [f.uri for f in storage.list_files(root, (".parquet",)) if _in_table(f.uri, root)]
    if not files:
        raise storage.StorageError(
            f"{source}: no Parquet files; expected the scoring job's output folder "
            f"(OUT/{SCORES_FOLDER}/part-*.parquet), a folder of Parquet files or a .parquet file")
    return files


def require_columns(uri: str, columns: tuple[str, ...], hint: str) -> None:
    """``uri`` must be a Parquet file with ``columns``; the error names it and adds ``hint``."""
    fs, path = storage.arrow_filesystem(uri)
    try:
        names = pq.read_schema(path, filesystem=fs).names
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{uri}: not a readable Parquet file ({err})") from err
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{uri}: lacks column(s) {missing}; {hint}")


def check_columns(files: list[str], spec: FeatureSpec) -> None:
    """Every file must be Parquet with the columns ``spec`` needs."""
    for uri in files:
        require_columns(uri, spec.columns, f"clustering {spec.kind} features reads "
                        f"{', '.join(spec.columns)}; is it a scores table (SCORES_SCHEMA)?")


@dataclass
class Census:
    """What the rows of a prepared table (see :func:`apm.clustering.features.prepare_batch`)
    hold; censuses of disjoint row sets merge."""

    rows: int = 0
    errors: int = 0  # status other than 'ok': reported, not clustered
    unusable: int = 0  # 'ok' rows without usable features
    unusable_file: str | None = None  # the first file (by name) with such a row
    lengths: dict[int, str] = field(default_factory=dict)  # feature length -> first file with it

    @property
    def usable(self) -> int:
        return self.rows - self.errors - self.unusable

    def merge(self, other: Census) -> Census:
        lengths = dict(self.lengths)
        for length, uri in other.lengths.items():
            lengths[length] = min(uri, lengths.get(length, uri))
        files = [f for f in (self.unusable_file, other.unusable_file) if f]
        return Census(self.rows + other.rows, self.errors + other.errors,
                      self.unusable + other.unusable, min(files) if files else None, lengths)

    @property
    def dim(self) -> int:
        """The length of every feature vector (call :meth:`check` first)."""
        return next(iter(self.lengths))

    def check(self, spec: FeatureSpec, k: int, source: str) -> None:
        """Raise ValueError, naming the file and the remedy, unless k-means can run."""
        if self.unusable and spec.kind == "embedding":
            raise ValueError(
                f"{self.unusable_file}: {self.unusable} of {self.rows - self.errors} 'ok' rows have no "
                f"embedding (the scoring ran without embeddings); rerun jobs.score without "
                f"--no-embedding, or cluster with --features semantic")
        if self.unusable:
            raise ValueError(f"{self.unusable_file}: {self.unusable} 'ok' rows have no valid "
                             f"top5_ids / top5_probs (ImageNet class ids 0..999)")
        if len(self.lengths) > 1:
            found = ", ".join(f"{n} in {uri}" for n, uri in sorted(self.lengths.items()))
            raise ValueError(f"{source}: embeddings of different lengths ({found}); were the "
                             f"files scored by different models?")
        if self.usable == 0:
            raise ValueError(f"{source}: no row with status 'ok' to cluster "
                             f"({self.errors} error rows)")
        if k > self.usable:
            raise ValueError(f"--k {k} is more than the {self.usable} photos with status 'ok' "
                             f"in {source}")


def census_batch(batch: pa.Table, spec: FeatureSpec) -> Census:
    """The :class:`Census` of one prepared batch."""
    ok = is_ok(batch)
    rows = usable(batch, spec.kind)
    missing = ok & ~rows
    paths = np.array(batch.column("path").to_pylist(), dtype=object)
    lengths = (embedding_lengths(batch) if spec.kind == "embedding"
               else np.full(batch.num_rows, NUM_IMAGENET_CLASSES))[rows]
    return Census(rows=batch.num_rows, errors=int((~ok).sum()), unusable=int(missing.sum()),
                  unusable_file=min(paths[missing]) if missing.any() else None,
                  lengths={int(n): min(paths[rows][lengths == n]) for n in np.unique(lengths)})
