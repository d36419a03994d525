"""``jobs.generate``: samples of a trained generator for chosen conditions, judged and tabled.

For every requested category x histogram pair it draws ``n`` samples (reproducible from their
seeds), optionally scores them with an APM and classifies their category, and writes
``OUT/samples.parquet`` (``SAMPLES_SCHEMA``) and ``OUT/grid.png`` (categories x conditions).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from apm.core import storage
from apm.core.schemas import NUM_BINS, SAMPLES_SCHEMA
from pfagan.checkpoint import load_generator
from pfagan.evaluation import spearman
from pfagan.grids import sample_grid
from pfagan.judges import APMJudge, CategoryClassifier
from pfagan.sampling import grid_conditions, histogram_mean, sample_on_device

log = logging.getLogger(__name__)

SAMPLES_FILE, GRID_FILE = "samples.parquet", "grid.png"


@dataclass(frozen=True)
class GenerateConfig:
    checkpoint: str  # a generator file from jobs.train_pfagan
    out: str
    histograms: tuple[tuple[float, ...], ...]  # normalised conditions, one grid column each
    categories: tuple[str, ...] = ()  # empty: every category the generator knows
    n: int = 8  # samples per category x histogram
    apm: str | None = None  # APM checkpoint (or random:ARCH) that scores the samples
    classifier: str | None = None  # category classifier file (pfagan.judges) that labels them
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"  # cuda: the generator runs in a Ray task on a GPU node, not here
    grid_samples: int = 4  # samples per grid cell

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.grid_samples < 1:
            raise ValueError("--n, --batch-size and the grid's samples per cell must be at least 1")
        if not self.histograms:
            raise ValueError("give at least one condition: --histogram or --mean")
        for hist in self.histograms:
            if len(hist) != NUM_BINS or abs(sum(hist) - 1) > 1e-6:
                raise ValueError(f"a condition must be a normalised {NUM_BINS}-bin histogram, got {hist}")


@dataclass
class GenerateSummary:
    out: str
    samples: int = 0
    categories: tuple[str, ...] = ()
    condition_means: list[float] = field(default_factory=list)
    pred_mean_by_condition: list[float] = field(default_factory=list)  # NaN without an APM
    category_accuracy: float | None = None  # share of samples classified as their condition
    rho_condition_score: float | None = None  # Spearman(condition mean, APM mean of samples)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        lines = [f"{self.samples} samples of {len(self.categories)} categories x "
                 f"{len(self.condition_means)} conditions in {self.seconds:.1f} s"]
        if not np.all(np.isnan(self.pred_mean_by_condition)):
            pairs = ", ".join(f"{c:.2f} -> {p:.2f}" for c, p in
                              zip(self.condition_means, self.pred_mean_by_condition))
            lines.append(f"condition mean -> APM mean of the samples: {pairs}")
        if self.rho_condition_score is not None:
            lines.append(f"Spearman rho, condition mean vs APM mean of each sample: "
                         f"{self.rho_condition_score:.3f}")
        if self.category_accuracy is not None:
            lines.append(f"classified as their condition's category: {self.category_accuracy:.1%} "
                         f"(chance {1 / len(self.categories):.1%})")
        lines += [f"table: {storage.join(self.out, SAMPLES_FILE)}",
                  f"grid: {storage.join(self.out, GRID_FILE)}"]
        return lines


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _column(name: str, values, n: int) -> pa.Array:
    """``values`` as the schema's column ``name``; nulls where the judge was not asked for."""
    type_ = SAMPLES_SCHEMA.field(name).type
    if values is None:
        return pa.nulls(n, type_)
    if pa.types.is_fixed_size_list(type_):
        flat = pa.array(np.asarray(values, np.float32).ravel())
        return pa.FixedSizeListArray.from_arrays(flat, NUM_BINS).cast(type_)
    return pa.array(values, type_)


def run_generate(config: GenerateConfig) -> GenerateSummary:
    start = time.perf_counter()
    out = storage.normalize(config.out)
    storage.check_output(out)
    stored = load_generator(config.checkpoint)
    names = config.categories or stored.categories
    ids = [stored.category_id(name) for name in names]  # ValueError names an unknown category
    classifier = CategoryClassifier.load(config.classifier) if config.classifier else None
    if classifier and classifier.categories != stored.categories:
        raise ValueError(f"the classifier knows categories {classifier.categories}, the generator "
                         f"{stored.categories}")
    hists = np.asarray(config.histograms, np.float64)
    conditions = grid_conditions(ids, hists, config.n, config.seed)
    images = sample_on_device(stored, conditions, config.batch_size, config.device)
    log.info("drew %d samples at %d px", len(images), stored.config.resolution)

    n = len(images)
    pred_dist = pred_mean = pred_cat = pred_prob = None
    judges: dict[str, APMJudge] = {}
    if config.apm:
        judges[config.apm] = APMJudge(config.apm)
        judged = judges[config.apm](images)
        pred_dist, pred_mean = judged.dist, judged.mean
    if classifier:
        judge = judges.get(classifier.apm_model) or APMJudge(classifier.apm_model, classifier.image_size)
        probs = classifier.probabilities(judge(images).features)
        pred_cat, pred_prob = probs.argmax(axis=1), probs.max(axis=1)

    now = dt.datetime.now(dt.UTC)
    generator_id = "sha256:" + hashlib.sha256(storage.read_bytes(config.checkpoint)).hexdigest()[:16]
    table = pa.table({
        "sample_id": pa.array(np.arange(n), pa.int64()),
        "seed": pa.array(conditions.seeds, pa.int64()),
        "category": pa.array([stored.categories[c] for c in conditions.category_ids], pa.string()),
        "category_id": pa.array(conditions.category_ids, pa.int32()),
        "histogram": _column("histogram", conditions.histograms, n),
        "condition_mean": pa.array(histogram_mean(conditions.histograms), pa.float32()),
        "image_png": pa.array([_png(im) for im in images], pa.binary()),
        "pred_dist": _column("pred_dist", pred_dist, n),
        "pred_mean": _column("pred_mean", pred_mean, n),
        "pred_category": _column("pred_category", None if pred_cat is None
                                 else [stored.categories[c] for c in pred_cat], n),
        "pred_category_prob": _column("pred_category_prob", pred_prob, n),
        "generator_id": pa.array([generator_id] * n, pa.string()),
        "apm_id": pa.array([judges[config.apm].predictor.spec.id if config.apm else None] * n,
                           pa.string()),
        "generated_at": pa.array([now] * n, SAMPLES_SCHEMA.field("generated_at").type),
    }, schema=SAMPLES_SCHEMA)
    storage.write_table(table, storage.join(out, SAMPLES_FILE))

    per_cell = config.n
    cells = [[images[(r * len(hists) + c) * per_cell:][:min(per_cell, config.grid_samples)]
              for c in range(len(hists))] for r in range(len(ids))]
    means = histogram_mean(hists)
    storage.write_bytes(storage.join(out, GRID_FILE), sample_grid(
        cells, list(names), [f"mean {m:.1f}" for m in means],
        f"PFAGAN samples: category x score condition ({stored.config.resolution} px)"))

    summary = GenerateSummary(out, n, tuple(names), [float(m) for m in means])
    column = np.tile(np.repeat(np.arange(len(hists)), per_cell), len(ids))
    summary.pred_mean_by_condition = [float(np.mean(pred_mean[column == c])) if pred_mean is not None
                                      else float("nan") for c in range(len(hists))]
    if pred_mean is not None:
        summary.rho_condition_score = spearman(histogram_mean(conditions.histograms), pred_mean)
    if pred_cat is not None:
        summary.category_accuracy = float(np.mean(pred_cat == conditions.category_ids))
    summary.seconds = time.perf_counter() - start
    return summary
