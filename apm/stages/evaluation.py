"""Evaluating APM checkpoints on a manifest split: predictions, the paper's metrics, report, plots.

The model runs in bulk scoring's predictor (:class:`apm.models.predictor.Predictor`: batch
norm folded, the same precision), so the metrics measure the model exactly as it is scored:
:class:`EvaluationPredictor` is a Ray Data callable class (each actor builds the model once)
and :func:`prediction_table` runs it over any (uri, error) table. Photos are decoded exactly as
for scoring (:func:`apm.stages.inference.decode_batch`: short side ``image_size * 8/7``, centre crop),
and a photo that cannot be read becomes an error row; it never stops the job.

:func:`run_evaluation` scores the test split with each model, computes
:func:`apm.votes.metrics.evaluate` overall and per semantic category, and writes under ``OUT``:
``metrics.parquet`` (``EVALUATION_SCHEMA``), ``metrics.md``, ``predictions.parquet`` and the
plots ``scatter.png`` and ``calibration.png``.
"""
from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from apm.core import storage
from apm.core.rows import STATUS_ERROR, STATUS_OK, known_errors
from apm.core.schemas import EVALUATION_SCHEMA, NUM_BINS
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.models import ModelSpec
from apm.models.predictor import Predictor
from apm.models.transforms import image_transform
from apm.stages.base import BatchStage, check_batch_options
from apm.stages.inference import default_concurrency, predict_rows
from apm.votes.baselines import (
    BASELINES,
    CEILING,
    CONSTANT,
    NO_RANKING,
    below_baseline,
    train_mean_histogram,
    truth_pmfs,
)
from apm.votes.fit_report import png_bytes, votes_from_manifest
from apm.votes.metrics import OVERALL, evaluate, mean_scores

log = logging.getLogger(__name__)

#: The category of images whose manifest row has no tag (and no ``--truth`` category).
UNKNOWN = "unknown"

#: Bins of predicted std in the calibration plot (equal-count bins).
CALIBRATION_BINS = 8

DIST_TYPE = pa.list_(pa.float32(), NUM_BINS)

@dataclass(frozen=True)
class EvaluationConfig:
    """What ``evaluate`` runs; invalid values raise ValueError before any work."""

    manifest: str
    models: tuple[str | ModelSpec, ...]  # checkpoint paths / URIs or random:ARCH, or resolved
    out: str
    variants: tuple[str, ...] = ()  # one name per model; default: the checkpoint file names
    split: str = "test"
    truth: str | None = None  # synthetic truth.parquet: categories from its `category`
    image_size: int | None = None  # default: each checkpoint's training crop (else 224)
    device: str = "cpu"
    precision: str | None = None  # fp32 | bf16; default: the device's (apm.core.precision)
    batch_size: int | None = None  # None: the device's (apm.stages.base.DEFAULT_BATCH_SIZE)
    concurrency: int | None = None  # predictor actors; default one per GPU / CPU of the cluster
    limits: ImageLimits = DEFAULT_LIMITS  # what one photo may cost

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("give at least one model checkpoint")
        if self.variants and len(self.variants) != len(self.models):
            raise ValueError(f"{len(self.models)} models but {len(self.variants)} variant names")
        names = self.variant_names
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct, got {list(names)}; use --variant")
        # Frozen: the batch size the device calls for is filled in once, here.
        object.__setattr__(self, "batch_size", check_batch_options(
            self.device, self.batch_size, self.concurrency, self.precision, self.image_size))

    @property
    def model_uris(self) -> tuple[str, ...]:
        return tuple(m.spec if isinstance(m, ModelSpec) else m for m in self.models)

    @property
    def variant_names(self) -> tuple[str, ...]:
        return self.variants or tuple(posixpath.splitext(posixpath.basename(m.rstrip("/")))[0]
                                      for m in self.model_uris)

    def out_uri(self, name: str) -> str:
        return storage.join(storage.normalize(self.out), name)


# --- prediction -----------------------------------------------------------------------------

class EvaluationPredictor(BatchStage):
    """Ray Data callable class: each actor builds the model once (:class:`Predictor`, as
    scoring does) and returns per row the predicted mean, and for the distribution head the
    distribution and its std (NaN for the mean head, which predicts no distribution)."""

    def __init__(self, model: str | ModelSpec, image_size: int | None, device: str,
                 storage_env: dict[str, str], precision: str | None = None) -> None:
        super().__init__(device, storage_env)
        self.predictor = Predictor(model, image_size, device, precision)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {"mean": np.full(n, np.nan, np.float64), "std": np.full(n, np.nan, np.float64),
                "dist": np.full((n, NUM_BINS), np.nan, np.float32)}

    def process(self, batch: dict[str, np.ndarray], ok: np.ndarray,
                out: dict[str, np.ndarray]) -> None:
        p = self.predictor.predict(batch["crop"][ok])
        out["mean"][ok], out["std"][ok], out["dist"][ok] = p.mean, p.std, p.dist


def prediction_table(inputs: pa.Table, model: str | ModelSpec, config: EvaluationConfig
                     ) -> pa.Table:
    """Predictions of ``model`` for every row of ``inputs`` (columns ``uri`` and ``error``), in
    input order; Ray must be up.

    Columns: ``pred_mean``, ``pred_std``, ``pred_dist`` (null for the mean head and for
    errors), ``status`` (ok | error) and ``error``. Rows whose ``error`` is already set are
    not read.
    """
    spec = ModelSpec.resolve(model)
    crop = spec.crop(config.image_size)
    n = inputs.num_rows
    errors: list[str | None] = [None] * n
    mean, std = np.full(n, np.nan), np.full(n, np.nan)
    dist = np.full((n, NUM_BINS), np.nan, np.float32)
    batches = predict_rows(
        inputs, np.arange(n), image_transform(spec.architecture.backbone, crop),
        EvaluationPredictor, {"model": spec, "image_size": crop, "precision": config.precision},
        batch_size=config.batch_size, device=config.device, limits=config.limits,
        concurrency=config.concurrency or default_concurrency(config.device))
    for batch in batches:
        rows = batch["row"].astype(np.int64)
        mean[rows], std[rows], dist[rows] = batch["mean"], batch["std"], batch["dist"]
        for row, error in zip(rows, batch["error"]):
            errors[row] = error or None
    ok = np.array([e is None for e in errors], dtype=bool)
    has_dist = ok & np.isfinite(dist).all(axis=1)
    flat = pa.array(np.nan_to_num(dist).ravel(), pa.float32())
    return pa.table({
        "pred_mean": pa.array(mean, pa.float64(), mask=~ok),
        "pred_std": pa.array(std, pa.float64(), mask=~has_dist),
        "pred_dist": pa.FixedSizeListArray.from_arrays(flat, type=DIST_TYPE, mask=pa.array(~has_dist)),
        "status": pa.array([STATUS_OK if v else STATUS_ERROR for v in ok], pa.string()),
        "error": pa.array(errors, pa.string()),
    })


# --- inputs ---------------------------------------------------------------------------------

def evaluation_inputs(manifest_uri: str, split: str | None, truth_uri: str | None = None) -> pa.Table:
    """One row per manifest row of ``split``: image_id, uri, votes, true mean/std, category, error.

    The category is the synthetic truth's ``category`` (joined on image_id) with ``truth_uri``,
    else the manifest's ``tag1_name``; ``unknown`` where there is none. ``error`` is set where
    the photo is known to be unusable (no uri, ``image_status`` not ok): such rows are counted
    as errors, not read.
    """
    table = storage.read_table(manifest_uri)
    if split:
        table = table.filter(pc.equal(table["split"], split))
    if table.num_rows == 0:
        raise ValueError(f"{manifest_uri}: no rows for split {split!r}")
    image_id, votes = votes_from_manifest(table)
    if truth_uri:
        truth = storage.read_table(truth_uri, columns=["image_id", "category"])
        position = pc.index_in(pa.array(image_id), value_set=truth["image_id"])
        category = pc.take(truth["category"], position)
    else:
        category = table["tag1_name"]
    errors = known_errors(table["uri"].to_pylist(), table["image_status"].to_pylist(),
                          table["image_error"].to_pylist())
    return pa.table({
        "image_id": pa.array(image_id, pa.int64()),
        "uri": table["uri"].cast(pa.string()),
        "votes": pa.FixedSizeListArray.from_arrays(pa.array(votes.ravel(), pa.int64()), NUM_BINS),
        "true_mean": table["mean"].cast(pa.float64()),
        "true_std": table["std"].cast(pa.float64()),
        "category": pc.fill_null(category, UNKNOWN),
        "error": pa.array(errors, pa.string()),
    })


# --- metrics --------------------------------------------------------------------------------

def metric_rows(variant: str, model_uri: str, predictions: pa.Table) -> list[dict]:
    """Rows of ``EVALUATION_SCHEMA`` for one variant's predictions (overall, then per category).

    Metrics use the scored photos; ``n_errors`` counts the photos of the row that could not be
    scored. A category whose every photo failed still gets a row, with null metrics.
    """
    ok = np.asarray(pc.equal(predictions["status"], STATUS_OK))
    category = np.array(predictions["category"].to_pylist(), dtype=object)
    if not ok.any():
        raise ValueError(f"{variant}: no photo could be scored")
    votes = np.stack(predictions["votes"].to_numpy(zero_copy_only=False)[ok])
    has_dist = predictions["pred_dist"].null_count < predictions.num_rows
    if has_dist:
        pred = {"pred_dist": np.stack(predictions["pred_dist"].to_numpy(zero_copy_only=False)[ok])}
    else:
        pred = {"pred_mean": predictions["pred_mean"].to_numpy()[ok]}
    scored = {row["category"]: row for row in evaluate(votes, categories=category[ok], **pred)}
    rows = []
    for name in [OVERALL, *sorted(set(category))]:
        errors = int(np.sum(~ok if name == OVERALL else ~ok & (category == name)))
        metrics = scored.get(name) or {"category": name, "n_images": 0}
        rows.append({**{f.name: None for f in EVALUATION_SCHEMA}, **metrics,
                     "variant": variant, "model_uri": model_uri, "n_errors": errors})
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


METRIC_HEADERS = {"kldiv": "KLDIV", "cdloss": "CDLoss", "mse": "MSE", "spearman": "Spearman ρ",
                  "pearson": "Pearson r", "accuracy": "accuracy (≥5)"}


#: What marks a model's metric that does not beat the constant predictor.
FLAG = "⚠"


def _markdown_table(first: str, rows: list[dict]) -> list[str]:
    header = [first, "images", *METRIC_HEADERS.values(), "errors"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    constant = next((r for r in rows if r[first] == CONSTANT), None)
    for row in rows:
        flagged = (below_baseline(row, constant)
                   if constant is not None and row[first] not in BASELINES else [])
        cells = [row[first], str(row["n_images"]),
                 *(_fmt(row[k]) + (f" {FLAG}" if k in flagged else "") for k in METRIC_HEADERS),
                 str(row["n_errors"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def metrics_markdown(metrics: pa.Table, source: str) -> str:
    """The paper-style table (one row per variant, overall), then one table per category."""
    rows = metrics.to_pylist()
    lines = [f"# Evaluation on {source}", "",
             "KLDIV and CDLoss need a predicted distribution (— for the mean-regression head); "
             "accuracy is high (mean ≥ 5) vs low. NaN: undefined, e.g. a correlation over one image.",
             "",
             f"*{CONSTANT}* gives every photo the train split's mean histogram: it uses no pixel "
             "and ranks nothing (its correlations are NaN, counted as 0), so a model must beat it "
             f"to have learned anything; {FLAG} marks a model's figure that does not. "
             f"*{CEILING}* (synthetic data) predicts the pmf the votes were drawn from: its "
             "Spearman ρ is what a perfect model reaches given the finite number of raters.",
             "", "## Overall", "", *_markdown_table("variant", [r for r in rows if r["category"] == OVERALL])]
    for category in sorted({r["category"] for r in rows} - {OVERALL}):
        lines += ["", f"## {category}", "",
                  *_markdown_table("variant", [r for r in rows if r["category"] == category])]
    return "\n".join(lines) + "\n"


def baseline_rows(inputs: pa.Table, scored: np.ndarray, config: EvaluationConfig) -> list[dict]:
    """Metric rows of the constant predictor and, with a truth table, the ceiling
    (:mod:`apm.votes.baselines`), over the photos every model scored (``scored``, a mask of
    ``inputs``), so that they compare like with like."""
    usable = inputs.filter(pa.array(scored))
    n = usable.num_rows
    if n == 0:
        return []
    predictions = {CONSTANT: (np.tile(train_mean_histogram(config.manifest), (n, 1)),
                              f"the train split of {config.manifest}")}
    if config.truth:
        predictions[CEILING] = (truth_pmfs(config.truth, usable["image_id"].to_numpy()),
                                f"true_pmf of {config.truth}")
    rows = []
    for name, (dist, source) in predictions.items():
        known = np.isfinite(dist).all(axis=1)
        part = usable.filter(pa.array(known)).drop_columns(["error"])
        dist = dist[known]
        part = part.append_column("pred_dist", pa.FixedSizeListArray.from_arrays(
            pa.array(dist.ravel(), pa.float32()), type=DIST_TYPE))
        part = part.append_column("pred_mean", pa.array(mean_scores(dist), pa.float64()))
        part = part.append_column("status", pa.array([STATUS_OK] * part.num_rows, pa.string()))
        scored = metric_rows(name, source, part)
        if name == CONSTANT:
            # A constant ranks nothing: its correlations would only measure float rounding.
            scored = [row | {k: float("nan") for k in NO_RANKING} for row in scored]
        rows += scored
    return rows


# --- plots ----------------------------------------------------------------------------------

def _variants(predictions: pa.Table) -> list[tuple[str, pa.Table]]:
    ok = predictions.filter(pc.equal(predictions["status"], STATUS_OK))
    return [(name, ok.filter(pc.equal(ok["variant"], name)))
            for name in dict.fromkeys(predictions["variant"].to_pylist())]


def plot_scatter(predictions: pa.Table) -> bytes:
    """Predicted vs true mean score, one panel per variant, with the diagonal."""
    variants = _variants(predictions)
    fig = Figure(figsize=(4 * len(variants), 4))
    for i, (name, table) in enumerate(variants):
        ax = fig.add_subplot(1, len(variants), i + 1)
        ax.scatter(table["true_mean"].to_numpy(), table["pred_mean"].to_numpy(), s=6, alpha=0.5)
        ax.plot([1, 10], [1, 10], color="grey", lw=1)
        ax.set(title=name, xlabel="true mean score", ylabel="predicted mean score",
               xlim=(1, 10), ylim=(1, 10))
    return png_bytes(fig)


def plot_calibration(predictions: pa.Table) -> bytes:
    """Is the predicted std informative? Per equal-count bin of predicted std: the mean
    |error| of the predicted mean and the mean true std of the votes (distribution heads)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, table in _variants(predictions):
        if table["pred_std"].null_count == table.num_rows:
            continue  # the mean head predicts no std
        std = table["pred_std"].to_numpy()
        err = np.abs(table["pred_mean"].to_numpy() - table["true_mean"].to_numpy())
        true_std = table["true_std"].to_numpy()
        bins = np.array_split(np.argsort(std), min(CALIBRATION_BINS, len(std)))
        x = [std[b].mean() for b in bins]
        ax.plot(x, [err[b].mean() for b in bins], "o-", label=f"{name}: |error| of mean")
        ax.plot(x, [true_std[b].mean() for b in bins], "s--", label=f"{name}: true std")
    ax.axline((0, 0), slope=1, color="grey", lw=1)
    ax.set(xlabel="predicted std (binned)", ylabel="observed", title="calibration of predicted std")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png_bytes(fig)


# --- the stage ------------------------------------------------------------------------------

@dataclass
class EvaluationSummary:
    metrics: pa.Table
    outputs: dict[str, str]  # name -> URI
    seconds: float

    def lines(self) -> list[str]:
        out = []
        overall = self.metrics.filter(pc.equal(self.metrics["category"], OVERALL)).to_pylist()
        constant = next((r for r in overall if r["variant"] == CONSTANT), None)
        for row in overall:
            line = (f"{row['variant']}: {row['n_images']} images, {row['n_errors']} errors, "
                    f"MSE {_fmt(row['mse'])}, Spearman {_fmt(row['spearman'])}, "
                    f"KLDIV {_fmt(row['kldiv'])}, accuracy {_fmt(row['accuracy'])}")
            flagged = (below_baseline(row, constant)
                       if constant is not None and row["variant"] not in BASELINES else [])
            if flagged:
                line += (f"  {FLAG} not better than the constant predictor on "
                         + ", ".join(METRIC_HEADERS[k] for k in flagged))
            out.append(line)
        out += [f"{name}: {uri}" for name, uri in self.outputs.items()]
        return [*out, f"time: {self.seconds:.1f} s"]


def run_evaluation(config: EvaluationConfig) -> EvaluationSummary:
    """Score the split with every model and write the metrics, report, predictions and plots."""
    start = time.perf_counter()
    inputs = evaluation_inputs(config.manifest, config.split, config.truth)
    log.info("%d %s photos, %d known bad", inputs.num_rows, config.split,
             inputs.num_rows - pc.sum(pc.is_null(inputs["error"])).as_py())
    parts, rows = [], []
    everywhere = np.ones(inputs.num_rows, bool)  # scored by every model
    for variant, model, uri in zip(config.variant_names, config.models, config.model_uris):
        scored = prediction_table(inputs, model, config)
        everywhere &= np.asarray(pc.equal(scored["status"], STATUS_OK))
        part = inputs.drop_columns(["error"])
        for name in scored.column_names:
            part = part.append_column(name, scored[name])
        n = part.num_rows
        part = part.add_column(0, "model_uri", pa.array([uri] * n, pa.string()))
        part = part.add_column(0, "variant", pa.array([variant] * n, pa.string()))
        rows += metric_rows(variant, uri, part)
        parts.append(part)
    predictions = pa.concat_tables(parts)
    rows += baseline_rows(inputs, everywhere, config)
    metrics = pa.Table.from_pylist(rows, schema=EVALUATION_SCHEMA)
    outputs = {
        "metrics.parquet": metrics,
        "metrics.md": metrics_markdown(metrics, f"{config.manifest} (split {config.split})"),
        "predictions.parquet": predictions.drop_columns(["votes"]),
        "scatter.png": plot_scatter(predictions),
        "calibration.png": plot_calibration(predictions),
    }
    uris = {}
    for name, content in outputs.items():
        uris[name] = config.out_uri(name)
        if isinstance(content, pa.Table):
            storage.write_table(content, uris[name])
        elif isinstance(content, str):
            storage.write_text(uris[name], content)
        else:
            storage.write_bytes(uris[name], content)
    return EvaluationSummary(metrics, uris, time.perf_counter() - start)
