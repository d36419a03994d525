"""The photos an explanation job works on: a library listing, or a scores table's selection.

``input`` is either

* the scoring job's output folder (it holds ``scores/``, ``SCORES_SCHEMA``): only rows with
  status ``ok`` are explained, and a selection can pick the lowest or highest predicted means;
  error rows of the scores table are counted, not explained;
* anything else the scoring job lists (:mod:`apm.data.listing`): a folder or ``s3://`` prefix of
  photos, or a manifest ``.parquet`` (rows whose ``image_status`` is not ok are error rows).
  The listing goes to ``OUT/_listing``, listed afresh by every run.

``sample`` keeps at most that many photos, chosen by ``select``: ``first`` (table order),
``random`` (seeded), ``lowest`` / ``highest`` predicted mean (scores input only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apm.clustering.source import require_columns, scores_files
from apm.core import storage
from apm.core.rows import STATUS_OK
from apm.core.schemas import SCORES_FOLDER
from apm.data.listing import LISTING_FOLDER, ListingConfig, fresh_listing

SELECTIONS = ("first", "random", "lowest", "highest")
BY_SCORE = ("lowest", "highest")  # the selections that need a scores input
SCORES_COLUMNS = ("uri", "image_id", "status", "mean")


@dataclass(frozen=True)
class Selection:
    """Which photos of the input to explain."""

    sample: int | None = None  # at most this many photos; None: all
    select: str = "first"  # first | random | lowest | highest
    seed: int = 0  # for 'random'

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ValueError(f"--select: unknown selection {self.select!r}; choose one of "
                             f"{', '.join(SELECTIONS)}")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"--sample must be at least 1, got {self.sample}")


@dataclass
class Inputs:
    """The photos to explain: ``uri``, ``image_id``, ``error`` (known before reading, or null)."""

    table: pa.Table
    lines: list[str] = field(default_factory=list)  # for the job summary


def is_scores_output(uri: str) -> bool:
    """Whether ``uri`` is the scoring job's output folder."""
    return not uri.lower().endswith(".parquet") and storage.exists(storage.join(uri, SCORES_FOLDER))


def pick(n: int, selection: Selection, means: np.ndarray | None = None) -> np.ndarray:
    """Positions of the rows ``selection`` keeps out of ``n``, in the order to explain them."""
    if selection.select in BY_SCORE:
        assert means is not None, "select_inputs only picks by score from a scores table"
        order = np.argsort(means if selection.select == "lowest" else -means, kind="stable")
    elif selection.select == "random":
        order = np.random.default_rng(selection.seed).permutation(n)
    else:
        order = np.arange(n)
    return order[:selection.sample]


def _from_scores(uri: str, selection: Selection) -> Inputs:
    files = scores_files(uri)
    for file in files:
        require_columns(file, SCORES_COLUMNS, "is it the output of jobs.score (SCORES_SCHEMA)?")
    table = pa.concat_tables(storage.read_table(f, list(SCORES_COLUMNS)) for f in files)
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    if ok.num_rows == 0:
        raise ValueError(f"{uri}: no scores row has status ok; nothing to explain")
    rows = pick(ok.num_rows, selection, ok.column("mean").to_numpy(zero_copy_only=False))
    chosen = ok.take(pa.array(rows, pa.int64()))
    return Inputs(
        table=pa.table({"uri": chosen["uri"], "image_id": chosen["image_id"],
                        "error": pa.nulls(chosen.num_rows, pa.string())}),
        lines=[f"input: scores table {uri} ({len(files)} files, {table.num_rows} rows: "
               f"{ok.num_rows} ok, {table.num_rows - ok.num_rows} error rows not explained); "
               f"{len(rows)} chosen ({selection.select})"])


def _from_listing(uri: str, out: str, selection: Selection) -> Inputs:
    listing = fresh_listing(ListingConfig(uri, storage.join(out, LISTING_FOLDER)))
    table = listing.read(["uri", "image_id", "error"])
    rows = pick(table.num_rows, selection)
    return Inputs(table=table.take(pa.array(rows, pa.int64())),
                  lines=[*listing.lines(), f"{len(rows)} of {table.num_rows} chosen "
                                           f"({selection.select})"])


def select_inputs(uri: str, out: str, selection: Selection) -> Inputs:
    """The photos of ``uri`` to explain (see the module docstring); Ray must be up."""
    uri = storage.normalize(uri)
    if is_scores_output(uri):
        return _from_scores(uri, selection)
    if selection.select in BY_SCORE:
        raise ValueError(f"--select {selection.select} needs predicted scores, and {uri} is not "
                         f"a scores output: give the output folder of jobs.score as --input")
    return _from_listing(uri, out, selection)
