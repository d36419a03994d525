"""The ``fit_distributions`` stage: tables, report and plots of the score-distribution fits.

The builders turn a :class:`apm.votes.distributions.FitResult` into the outputs: the per-image table
(``PER_IMAGE_FIT_SCHEMA``), the RMSE per mean-score bucket (``BUCKET_RMSE_SCHEMA``),
``report.md`` and three PNG plots. They do no I/O, so they work on arrays in tests and in the
benchmark job; :func:`run` is the stage itself (read the manifest, fit, write through
:mod:`apm.core.storage`), shared by ``jobs.fit_distributions`` and ``jobs.pipeline``.

Buckets are ``[1,2)`` .. ``[8,9)`` by the image's mean vote, as the schema names them; an image
with a mean of 9 or more (none in AVA, whose highest mean is 8.6) counts only in ``overall``,
and the report says how many there are.

The pmf construction (``binned`` or ``density``, see :mod:`apm.votes.distributions`) is one per run:
``report.md`` and the summary :func:`run` returns name it, and ``per_image.parquet`` keeps its
schema (its ``method`` column, no pmf column), so a run's tables go with its report.
"""
from __future__ import annotations

import io
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from apm.core import storage
from apm.core.schemas import BUCKET_RMSE_SCHEMA, NUM_BINS, PER_IMAGE_FIT_SCHEMA
from apm.votes.distributions import (
    DEFAULT_METHOD,
    DEFAULT_METHOD_REASON,
    DEFAULT_PMF,
    DEFAULT_PMF_REASON,
    FAMILIES,
    METHODS,
    PMFS,
    SCORES,
    FitResult,
    VotesError,
    check_choice,
    fit_all,
    normalise,
    validate_votes,
)
from apm.votes.metrics import OVERALL

#: The manifest columns the fits read.
MANIFEST_COLUMNS: tuple[str, ...] = ("image_id", "votes")
#: Lower edges of the mean-score buckets [1,2) .. [8,9).
BUCKET_LOWS: tuple[int, ...] = tuple(range(1, 9))
#: The 'overall' row spans the whole rating scale.
OVERALL_RANGE = (1.0, 10.0)
LABELS: dict[str, str] = {
    "gaussian": "Gaussian",
    "gamma": "Gamma",
    "gamma_mirrored": "mirrored Gamma",
}
BUCKET_TABLE_NOTE = ("Bold: the lowest mean RMSE of the bucket. 'share best': share of the "
                     "bucket's images whose lowest RMSE is that family's.")
#: Quantiles of the image mean at which ``example_fits.png`` shows an image.
EXAMPLE_QUANTILES: tuple[float, ...] = (0.01, 0.5, 0.99)


@dataclass(frozen=True)
class Timing:
    """Seconds spent reading the manifest and fitting (the report states both)."""

    read_s: float
    fit_s: float


def votes_from_manifest(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``image_id`` (int64) and ``votes`` (N, 10) of a manifest table, validated.

    Errors name the manifest row and its image id, so a bad row can be found in the source.
    """
    missing = set(MANIFEST_COLUMNS) - set(table.column_names)
    if missing:
        raise ValueError(f"manifest lacks column(s) {sorted(missing)}; "
                         f"it has {table.column_names}")
    image_id = table.column("image_id").to_numpy().astype(np.int64)
    column = table.column("votes").combine_chunks()
    nulls = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
    if nulls.size:
        raise ValueError(f"manifest row {nulls[0]} (image_id {image_id[nulls[0]]}) has null votes")
    if not pa.types.is_fixed_size_list(column.type):
        lengths = column.value_lengths().to_numpy()
        bad = np.flatnonzero(lengths != NUM_BINS)
        if bad.size:
            raise ValueError(f"manifest row {bad[0]} (image_id {image_id[bad[0]]}) has "
                             f"{lengths[bad[0]]} vote counts, expected {NUM_BINS}")
    votes = column.flatten().to_numpy().reshape(-1, NUM_BINS)
    try:
        return image_id, validate_votes(votes)
    except VotesError as err:
        if err.row is None:
            raise
        raise VotesError(f"manifest row {err.row} (image_id {image_id[err.row]}): {err}",
                         err.row) from err


# --- tables --------------------------------------------------------------------------------

def per_image_table(image_id: np.ndarray, fit: FitResult) -> pa.Table:
    """One row per image, columns exactly as ``PER_IMAGE_FIT_SCHEMA``."""
    m = fit.moments
    columns: dict[str, object] = {
        "image_id": image_id,
        "n_votes": m.n_votes,
        "mean": m.mean,
        "std": m.std,
        "skewness": m.skewness,
        "method": [fit.method] * len(image_id),
        "best_family": fit.best_family,
    }
    for name, family in FAMILIES.items():
        for param, values in zip(family.param_names, fit.params[name]):
            columns[f"{name}_{param}"] = values
        columns[f"rmse_{name}"] = fit.rmse[name]
    return _table(columns, PER_IMAGE_FIT_SCHEMA)


def bucket_of(mean: np.ndarray) -> np.ndarray:
    """Index into ``BUCKET_LOWS`` of each mean; -1 for a mean outside [1, 9)."""
    index = np.floor(mean).astype(np.int64) - BUCKET_LOWS[0]
    return np.where((index >= 0) & (index < len(BUCKET_LOWS)), index, -1)


def _bucket_rows(fit: FitResult) -> Iterable[tuple[str, float, float, np.ndarray]]:
    """(name, low, high, row mask) for each bucket, then for 'overall'."""
    bucket = bucket_of(fit.moments.mean)
    for i, low in enumerate(BUCKET_LOWS):
        yield f"[{low},{low + 1})", float(low), float(low + 1), bucket == i
    yield OVERALL, *OVERALL_RANGE, np.ones(len(bucket), dtype=bool)


def bucket_table(fit: FitResult) -> pa.Table:
    """Mean RMSE per family in each mean-score bucket and overall (``BUCKET_RMSE_SCHEMA``).

    An empty bucket keeps its row, with ``n_images`` 0 and null RMSE, so every run has the same
    eight buckets and tables from different runs line up.
    """
    columns: dict[str, list] = {f.name: [] for f in BUCKET_RMSE_SCHEMA}
    for name, low, high, rows in _bucket_rows(fit):
        n = int(rows.sum())
        columns["bucket"].append(name)
        columns["bucket_low"].append(low)
        columns["bucket_high"].append(high)
        columns["n_images"].append(n)
        for family in FAMILIES:
            columns[f"rmse_{family}"].append(float(fit.rmse[family][rows].mean()) if n else None)
    return _table(columns, BUCKET_RMSE_SCHEMA)


def _table(columns: dict[str, object], schema: pa.Schema) -> pa.Table:
    """Columns in schema order with the schema's types; a missing column is a KeyError."""
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema],
                                schema=schema)


# --- markdown ------------------------------------------------------------------------------

def bucket_winner(row: dict) -> str | None:
    """The family with the lowest mean RMSE in a bucket row (None when the bucket is empty)."""
    if not row["n_images"]:
        return None
    return min(FAMILIES, key=lambda family: row[f"rmse_{family}"])


def bucket_markdown(bucket: pa.Table, fit: FitResult) -> str:
    """The bucket table as markdown: mean RMSE per family, the winner, and the share of images
    each family fits best (the winner by mean RMSE can differ from the most frequent best)."""
    best = fit.best_family
    families = list(FAMILIES)
    header = (["bucket", "images"] + [f"RMSE {LABELS[f]}" for f in families] + ["lowest mean RMSE"]
              + [f"share best: {LABELS[f]}" for f in families])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, (_, _, _, rows) in zip(bucket.to_pylist(), _bucket_rows(fit)):
        n = row["n_images"]
        winner = bucket_winner(row)
        cells = [row["bucket"], f"{n:,}"]
        cells += [fmt_rmse(row[f"rmse_{f}"], bold=f == winner) for f in families]
        cells.append(LABELS[winner] if winner else "–")
        cells += [f"{np.mean(best[rows] == f):.0%}" if n else "–" for f in families]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_rmse(value: float | None, bold: bool = False, digits: int = 4) -> str:
    """An RMSE for a markdown table: '–' for an empty bucket, bold for the bucket's lowest."""
    if value is None:
        return "–"
    return f"**{value:.{digits}f}**" if bold else f"{value:.{digits}f}"


def winners_summary(bucket: pa.Table) -> str:
    """Which family wins where, as sentences: consecutive buckets with one winner are merged."""
    rows = bucket.to_pylist()
    overall = rows[-1]
    ranked = sorted(FAMILIES, key=lambda f: overall[f"rmse_{f}"])
    parts = [f"Overall the {LABELS[ranked[0]]} has the lowest mean RMSE "
             f"({overall[f'rmse_{ranked[0]}']:.4f}), then the "
             + ", then the ".join(f"{LABELS[f]} ({overall[f'rmse_{f}']:.4f})" for f in ranked[1:])
             + "."]
    runs: list[tuple[str, float, float]] = []
    for row in rows[:-1]:
        winner = bucket_winner(row)
        if winner is None:
            continue
        if runs and runs[-1][0] == winner and runs[-1][2] == row["bucket_low"]:
            runs[-1] = (winner, runs[-1][1], row["bucket_high"])
        else:
            runs.append((winner, row["bucket_low"], row["bucket_high"]))
    parts += [f"For means in [{low:g}, {high:g}) the {LABELS[w]} wins." for w, low, high in runs]
    return " ".join(parts)


def _why(choice: str, default: str, reason: str) -> str:
    return f"the default, because {reason}" if choice == default \
        else f"chosen instead of the default, {default}"


def render_report(bucket: pa.Table, fit: FitResult, timing: Timing, source: str) -> str:
    """``report.md``: method, pmf construction, timing, the bucket table, who wins where, and
    the plots."""
    n = len(fit.moments.mean)
    outside = int(np.sum(bucket_of(fit.moments.mean) < 0))
    return "\n".join([
        "# Score-distribution fits",
        "",
        f"Source: `{source}`, {n:,} images.",
        "",
        f"Method: **{fit.method}**: {METHODS[fit.method]} "
        f"({_why(fit.method, DEFAULT_METHOD, DEFAULT_METHOD_REASON)}).",
        "",
        f"pmf construction: **{fit.construction}**: {PMFS[fit.construction]} "
        f"({_why(fit.construction, DEFAULT_PMF, DEFAULT_PMF_REASON)}). This is how each "
        "family's continuous density becomes a 10-bin pmf. RMSE is over the 10 bins, between "
        "the normalised vote histogram and the fitted pmf; bucket values are the mean of the "
        "per-image RMSE.",
        "",
        f"Timing: fit {timing.fit_s:.2f} s ({n / max(timing.fit_s, 1e-9):,.0f} images/s, all "
        f"three families), reading the manifest {timing.read_s:.2f} s.",
        "",
        "## RMSE by mean-score bucket",
        "",
        bucket_markdown(bucket, fit),
        "",
        BUCKET_TABLE_NOTE
        + (f" {outside:,} image(s) with a mean outside [1, 9) count only in 'overall'."
           if outside else ""),
        "",
        "## Which family wins where",
        "",
        winners_summary(bucket),
        "",
        "## Plots",
        "",
        "![RMSE by bucket](rmse_by_bucket.png)",
        "",
        "![Example fits](example_fits.png)",
        "",
        "![Std vs mean](std_vs_mean.png)",
        "",
    ])


# --- plots ---------------------------------------------------------------------------------

def png_bytes(fig: Figure) -> bytes:
    """Render with the Agg canvas (no display, no pyplot global state) to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_rmse_by_bucket(bucket: pa.Table) -> bytes:
    """Mean RMSE of each family per bucket; tick labels carry the bucket size."""
    rows = bucket.to_pylist()[:-1]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for family in FAMILIES:
        values = [np.nan if r[f"rmse_{family}"] is None else r[f"rmse_{family}"] for r in rows]
        ax.plot(x, values, marker="o", label=LABELS[family])
    ax.set_xticks(x, [f"{r['bucket']}\nn={r['n_images']:,}" for r in rows], fontsize=8)
    ax.set_xlabel("image mean score")
    ax.set_ylabel("mean RMSE over the 10 bins")
    ax.set_title("Fit error by mean-score bucket")
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(fig)


def example_rows(mean: np.ndarray) -> list[int]:
    """The image closest to each of ``EXAMPLE_QUANTILES`` of the mean: low, middle, high."""
    return [int(np.argmin(np.abs(mean - np.quantile(mean, q)))) for q in EXAMPLE_QUANTILES]


def plot_example_fits(image_id: np.ndarray, votes: np.ndarray, fit: FitResult) -> bytes:
    """Histogram bars and the three fitted pmfs for a low-, a middle- and a high-mean image."""
    rows = example_rows(fit.moments.mean)
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, len(rows), sharey=True)
    for ax, row in zip(np.atleast_1d(axes), rows):
        ax.bar(SCORES, normalise(votes[row:row + 1])[0], color="0.8", label="votes")
        for family in FAMILIES:
            ax.plot(SCORES, fit.pmf(family, slice(row, row + 1))[0], marker="o", markersize=3,
                    label=f"{LABELS[family]} (RMSE {fit.rmse[family][row]:.3f})")
        ax.set_title(f"image {image_id[row]}: mean {fit.moments.mean[row]:.2f}, "
                     f"{fit.moments.n_votes[row]} votes", fontsize=9)
        ax.set_xticks(SCORES)
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("share of votes")
    fig.suptitle(f"Example fits ({fit.method}, {fit.construction} pmf)")
    return png_bytes(fig)


def plot_std_vs_mean(fit: FitResult) -> bytes:
    """Std of the votes against their mean, with the largest std a mean allows on [1, 10].

    The bound ``sqrt((m - 1)(10 - m))`` (Bhatia-Davis) shows how much room the scale leaves at
    each mean: near either end the spread can only grow towards the middle, i.e. by skewing.
    """
    mean, std = fit.moments.mean, fit.moments.std
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    hexes = ax.hexbin(mean, std, gridsize=60, bins="log", mincnt=1, cmap="viridis")
    fig.colorbar(hexes, ax=ax, label="images (log)")
    m = np.linspace(1, 10, 200)
    ax.plot(m, np.sqrt((m - 1) * (10 - m)), "r--", label="largest possible std")
    ax.set_ylim(0, max(float(std.max()) * 1.2, 0.5))
    ax.set_xlim(1, 10)
    ax.set_xlabel("mean score")
    ax.set_ylabel("std of the votes")
    ax.set_title("Spread of the votes against their mean")
    ax.legend(loc="upper right")
    return png_bytes(fig)


def build_outputs(image_id: np.ndarray, votes: np.ndarray, fit: FitResult, timing: Timing,
                  source: str) -> dict[str, pa.Table | str | bytes]:
    """Every output file of the job, by file name: Parquet tables, markdown text, PNG bytes."""
    bucket = bucket_table(fit)
    return {
        "per_image.parquet": per_image_table(image_id, fit),
        "bucket_rmse.parquet": bucket,
        "report.md": render_report(bucket, fit, timing, source),
        "rmse_by_bucket.png": plot_rmse_by_bucket(bucket),
        "example_fits.png": plot_example_fits(image_id, votes, fit),
        "std_vs_mean.png": plot_std_vs_mean(fit),
    }


def _write(uri: str, content: pa.Table | str | bytes) -> None:
    if isinstance(content, pa.Table):
        storage.write_table(content, uri)
    elif isinstance(content, str):
        storage.write_text(uri, content)
    else:
        storage.write_bytes(uri, content)


def run(manifest_uri: str, out_uri: str, method: str = DEFAULT_METHOD,
        pmf: str = DEFAULT_PMF) -> dict[str, object]:
    """Fit every image of the manifest with ``method`` and the pmf construction ``pmf`` (keys
    of ``METHODS`` and ``PMFS``) and write all outputs under ``out_uri``.

    Both locations are checked before any work, so a typo fails in seconds, not after the fit.
    Returns a flat summary (one line each when printed): counts, the method and pmf, seconds,
    the overall mean RMSE per family and where each output is.
    """
    check_choice(method, METHODS, "method")
    check_choice(pmf, PMFS, "pmf")
    storage.check_input(manifest_uri)
    storage.check_output(out_uri)
    start = time.perf_counter()
    try:
        table = storage.read_table(manifest_uri, columns=list(MANIFEST_COLUMNS))
    except pa.ArrowInvalid as err:  # most often a missing column; the first line says which
        raise ValueError(f"{manifest_uri}: cannot read the columns {', '.join(MANIFEST_COLUMNS)}"
                         f" ({str(err).splitlines()[0]})") from err
    image_id, votes = votes_from_manifest(table)
    if len(image_id) == 0:
        raise ValueError(f"{manifest_uri}: the manifest has no rows")
    read_s = time.perf_counter() - start
    fit = fit_all(votes, method, pmf)
    fit_s = time.perf_counter() - start - read_s
    outputs = build_outputs(image_id, votes, fit, Timing(read_s=read_s, fit_s=fit_s),
                            source=manifest_uri)
    for name, content in outputs.items():
        _write(storage.join(out_uri, name), content)
    return {
        "images": len(image_id),
        "method": method,
        "pmf": pmf,
        "fit_seconds": round(fit_s, 2),
        "total_seconds": round(time.perf_counter() - start, 2),
        **{f"rmse_{family}": round(float(fit.rmse[family].mean()), 5) for family in FAMILIES},
        **{name: storage.join(out_uri, name) for name in outputs},
    }
