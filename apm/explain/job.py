"""The explanation job: photos -> perturbations, heatmaps, panels and ``OUT/explanations.parquet``.

:func:`run_explain` selects the photos (:mod:`apm.explain.source`), runs the shared inference
pipeline (:func:`apm.stages.inference.predict_rows`) with :class:`~apm.explain.predictor.ExplainPredictor`
actors, and writes one table, ``OUT/explanations.parquet`` (``EXPLANATIONS_SCHEMA``), with one
row per chosen photo and direction, sorted by the photo's position in the input and then by
direction. A photo that cannot be read, decoded or written keeps its rows with
``status = 'error'`` and the reason; it never stops the job. An existing table is only
replaced with ``overwrite``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from apm.core import storage
from apm.core.rows import STATUS_ERROR, STATUS_OK
from apm.core.schemas import EXPLANATIONS_SCHEMA
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.explain.attack import DIRECTIONS, AttackConfig
from apm.explain.heatmap import HeatmapConfig
from apm.explain.predictor import (
    HEATMAPS_FOLDER,
    NO_BOX,
    PANELS_FOLDER,
    ExplainPredictor,
    artefact_uri,
)
from apm.explain.source import Selection, select_inputs
from apm.models import ModelSpec
from apm.models.transforms import image_transform
from apm.stages.base import Tally, check_batch_options
from apm.stages.inference import default_concurrency, predict_rows

log = logging.getLogger(__name__)

TABLE_FILE = "explanations.parquet"
#: ``--direction both`` explains each photo twice, in this order.
BOTH = "both"


@dataclass(frozen=True)
class ExplainConfig:
    """What ``explain`` runs; invalid values raise ValueError (naming the option) before any work."""

    input: str  # folder / s3:// prefix / manifest .parquet, or the output folder of jobs.score
    out: str
    model: str | ModelSpec  # checkpoint path / URI, or random:ARCH (resolved: read once)
    attack: AttackConfig
    direction: str = BOTH  # lower | raise | both
    heatmap: HeatmapConfig = field(default_factory=HeatmapConfig)
    selection: Selection = field(default_factory=Selection)
    panels: bool = True
    device: str = "cpu"
    precision: str | None = None  # fp32 | bf16; default: the device's (apm.core.precision)
    image_size: int | None = None  # default: the checkpoint's training crop, else 224
    batch_size: int = 16
    concurrency: int | None = None  # actors; default one per GPU / CPU of the cluster
    limits: ImageLimits = DEFAULT_LIMITS  # what one photo may cost
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (*DIRECTIONS, BOTH):
            raise ValueError(f"--direction: unknown direction {self.direction!r}; choose one of "
                             f"{', '.join((*DIRECTIONS, BOTH))}")
        check_batch_options(self.device, self.batch_size, self.concurrency, self.precision,
                            self.image_size)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(DIRECTIONS) if self.direction == BOTH else (self.direction,)

    def uri(self, *parts: str) -> str:
        return storage.join(storage.normalize(self.out), *parts)


@dataclass
class ExplainSummary(Tally):  # rows: one per photo and direction
    out: str
    model_id: str
    input_lines: list[str]
    images: int = 0
    changes: dict[str, list[float]] = field(default_factory=dict)  # direction -> score deltas
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.images / self.seconds if self.seconds else 0.0
        out = [*self.input_lines, f"model: {self.model_id}",
               f"explained: {self.images} photos -> {self.rows} rows = {self.ok} ok + "
               f"{self.rows - self.ok} error in {self.seconds:.1f} s ({rate:.2f} photos/s)"]
        for direction, deltas in self.changes.items():
            if deltas:
                d = np.asarray(deltas)
                moved = np.mean(np.sign(d) == DIRECTIONS[direction])
                out.append(f"  {direction}: score change median {np.median(d):+.3f}, mean "
                           f"{d.mean():+.3f}, min {d.min():+.3f}, max {d.max():+.3f}; "
                           f"{100 * moved:.0f}% moved the asked way")
        out += self.error_lines()
        out.append(f"output: {storage.join(self.out, TABLE_FILE)} ({self.rows} rows), PNGs in "
                   f"{storage.join(self.out, HEATMAPS_FOLDER)} and "
                   f"{storage.join(self.out, PANELS_FOLDER)}")
        return out


def explanations_table(inputs: pa.Table, result: dict[str, np.ndarray], config: ExplainConfig,
                       model_id_: str) -> pa.Table:
    """``EXPLANATIONS_SCHEMA`` rows of one result batch: its photos for the first direction,
    then for the next (:func:`row_order` sorts them)."""
    rows = result["row"].astype(np.int64)
    n = len(rows)
    listed = inputs.take(pa.array(rows))
    errors = [e or None for e in result["error"]]
    ok = np.array([e is None for e in errors], dtype=bool)
    out = storage.normalize(config.out)
    tables = []
    for j, direction in enumerate(config.directions):
        before, after = result["score_before"], result["score_after"][:, j]
        box = np.ascontiguousarray(result["bbox"][:, j])
        has_box = ok & (box[:, 0] != NO_BOX)
        tables.append(pa.table({
            "uri": listed.column("uri"),
            "image_id": listed.column("image_id"),
            "direction": pa.array([direction] * n, pa.string()),
            "status": pa.array([STATUS_OK if v else STATUS_ERROR for v in ok], pa.string()),
            "error": pa.array(errors, pa.string()),
            "score_before": pa.array(before, pa.float32(), mask=~ok),
            "score_after": pa.array(after, pa.float32(), mask=~ok),
            "delta": pa.array(after - before, pa.float32(), mask=~ok),
            "norm": pa.array([config.attack.norm] * n, pa.string()),
            "budget": pa.array(np.full(n, config.attack.budget), pa.float32()),
            "steps": pa.array(np.full(n, config.attack.steps), pa.int32()),
            "perturbation_norm": pa.array(result["perturbation_norm"][:, j], pa.float32(),
                                          mask=~ok),
            "crop_size": pa.array(np.full(n, config.image_size), pa.int32()),
            "peak_bbox": pa.FixedSizeListArray.from_arrays(
                pa.array(box.ravel(), pa.int32()), type=EXPLANATIONS_SCHEMA.field("peak_bbox").type,
                mask=pa.array(~has_box)),
            "heatmap_uri": pa.array([artefact_uri(out, HEATMAPS_FOLDER, r, direction) if v
                                     else None for r, v in zip(rows, ok)], pa.string()),
            "panel_uri": pa.array([artefact_uri(out, PANELS_FOLDER, r, direction)
                                   if v and config.panels else None
                                   for r, v in zip(rows, ok)], pa.string()),
            "model_id": pa.array([model_id_] * n, pa.string()),
        }, schema=EXPLANATIONS_SCHEMA))
    return pa.concat_tables(tables)


def row_order(rows: np.ndarray, directions: int) -> np.ndarray:
    """Sort keys of :func:`explanations_table`'s rows: by input row, then by direction."""
    return np.concatenate([rows.astype(np.int64) * directions + j for j in range(directions)])


def _prepare_out(config: ExplainConfig) -> None:
    table = config.uri(TABLE_FILE)
    if storage.exists(table) and not config.overwrite:
        raise ValueError(f"{table} exists; use --overwrite to replace it, or another --out")
    for name in (TABLE_FILE, HEATMAPS_FOLDER, PANELS_FOLDER):
        if storage.exists(config.uri(name)):
            storage.remove(config.uri(name), recursive=name != TABLE_FILE)


def _record(summary: ExplainSummary, table: pa.Table) -> None:
    summary.record(table.column("error").to_pylist())
    for direction, delta in zip(table.column("direction").to_pylist(),
                                table.column("delta").to_pylist()):
        if delta is not None:
            summary.changes.setdefault(direction, []).append(delta)


def run_explain(config: ExplainConfig) -> ExplainSummary:
    """Explain the chosen photos of ``config.input`` into ``config.out``; Ray must be up."""
    start = time.perf_counter()
    spec = ModelSpec.resolve(config.model)  # read once; a bad checkpoint fails here, in one line
    config = replace(config, model=spec, image_size=spec.crop(config.image_size))
    identity = spec.id
    _prepare_out(config)
    inputs = select_inputs(config.input, config.uri(), config.selection)
    table = inputs.table
    summary = ExplainSummary(storage.normalize(config.out), identity, inputs.lines,
                             images=table.num_rows)
    directions = len(config.directions)
    pieces: list[pa.Table] = []
    keys: list[np.ndarray] = []

    def add(batch: dict[str, np.ndarray]) -> None:
        pieces.append(explanations_table(table, batch, config, identity))
        keys.append(row_order(batch["row"], directions))
        _record(summary, pieces[-1])
        log.info("explained %d/%d photos", summary.rows // directions, table.num_rows)

    # Rows known to be bad (a manifest's image_status) come back as error rows unread.
    batches = predict_rows(
        table, np.arange(table.num_rows),
        image_transform(spec.architecture.backbone, config.image_size), ExplainPredictor,
        {"model": spec, "image_size": config.image_size, "precision": config.precision,
         "attack_config": config.attack, "heatmap": config.heatmap,
         "directions": config.directions, "out": summary.out, "panels": config.panels},
        batch_size=config.batch_size, device=config.device, limits=config.limits,
        concurrency=config.concurrency or default_concurrency(config.device))
    for batch in batches:
        add(batch)
    result = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(keys))))
    if result.num_rows != table.num_rows * directions:
        raise RuntimeError(f"internal error: {result.num_rows} rows for {table.num_rows} photos "
                           f"and {directions} directions")
    storage.write_table(result, config.uri(TABLE_FILE))
    summary.seconds = time.perf_counter() - start
    return summary
