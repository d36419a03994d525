"""The ``teacher_softmax`` stage: an ImageNet teacher's softmax for every photo, with Ray Data.

The photos come from a manifest (its ``uri`` and ``image_id``) or from a folder / prefix. The
shared inference pipeline (:func:`apm.inference.predict_rows`) decodes them for a pool of
actors (:class:`TeacherPredictor`) that each load the teacher once. The driver streams the
results into one Parquet file, ``OUT/teacher.parquet`` (``TEACHER_SCHEMA``), so no worker
writes to the store and the output can be larger than any worker's memory. Rows come in
completion order, not input order.

A photo that is missing, unreadable or not an image becomes a row with ``status = 'error'``
and the reason; it never stops the job.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm import storage
from apm.decode import DEFAULT_LIMITS, ImageLimits
from apm.inference import (
    IMAGE_SUFFIXES,
    NO_ERROR,
    STATUS_ERROR,
    STATUS_OK,
    default_concurrency,
    known_errors,
    predict_rows,
)
from apm.names import image_id_from_name
from apm.schemas import NUM_IMAGENET_CLASSES, TEACHER_SCHEMA
from apm.preprocessing import resize_size
from apm.teacher import DEFAULT_TEACHER, DEVICES, ImageTransform, create_teacher, teacher_spec, top_k

log = logging.getLogger(__name__)

#: Rows per Parquet row group of the output (~4 MB of probabilities).
ROWS_PER_GROUP = 1024


@dataclass(frozen=True)
class TeacherJobConfig:
    """What ``teacher_softmax`` runs; invalid values raise ValueError before any work."""

    input: str  # manifest .parquet, or a folder / prefix of photos
    out: str  # folder / prefix; the table goes to OUT/teacher.parquet
    teacher: str = DEFAULT_TEACHER
    weights: str | None = None  # path or s3:// URI; None: the teacher's installed weights
    device: str = "cpu"
    batch_size: int = 64
    concurrency: int | None = None  # inference actors; default one per GPU / CPU of the cluster
    limits: ImageLimits = DEFAULT_LIMITS  # what one photo may cost
    # Crop side; None: the teacher's own protocol (224 of 256). A smaller crop costs less and
    # suits small photos (the demo's are 128 px), at some cost in the teacher's accuracy.
    image_size: int | None = None

    def __post_init__(self) -> None:
        teacher_spec(self.teacher)  # TeacherError (a ValueError) listing the choices
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image size must be at least 16 pixels, got {self.image_size}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.batch_size < 1 or (self.concurrency is not None and self.concurrency < 1):
            raise ValueError("batch size and concurrency must be at least 1")

    @property
    def transform(self) -> ImageTransform:
        """The teacher's crop, at ``image_size`` when given (the same 8/7 resize ratio)."""
        own = teacher_spec(self.teacher).transform
        if self.image_size is None:
            return own
        return replace(own, resize_size=resize_size(self.image_size), crop_size=self.image_size)

    @property
    def out_uri(self) -> str:
        return storage.join(storage.normalize(self.out), "teacher.parquet")


@dataclass
class TeacherSummary:
    out_uri: str
    teacher: str
    images: int = 0
    ok: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)  # reason -> count

    def lines(self) -> list[str]:
        rate = self.images / self.seconds if self.seconds else 0.0
        out = [f"teacher: {self.teacher}",
               f"images: {self.images} = {self.ok} ok + {self.images - self.ok} error",
               f"throughput: {rate:.1f} images/s ({self.seconds:.1f} s)",
               f"output: {self.out_uri}"]
        out += [f"  error x{n}: {reason}" for reason, n in self.errors.most_common(10)]
        if len(self.errors) > 10:
            out.append(f"  ... and {len(self.errors) - 10} more kinds of error")
        return out


# --- inputs ---------------------------------------------------------------------------------

def _manifest_inputs(uri: str) -> pa.Table:
    table = storage.read_table(uri)
    if "uri" not in table.column_names:
        raise storage.StorageError(f"{uri}: has no 'uri' column; is it a manifest?")
    if table.column("uri").null_count == table.num_rows:
        raise storage.StorageError(f"{uri}: no row has a photo uri (run prepare_ava with --images)")
    n = table.num_rows
    ids = table.column("image_id") if "image_id" in table.column_names else pa.nulls(n, pa.int64())
    status = (table.column("image_status").to_pylist() if "image_status" in table.column_names
              else [None] * n)
    detail = (table.column("image_error").to_pylist() if "image_error" in table.column_names
              else [None] * n)
    errors = known_errors(table.column("uri").to_pylist(), status, detail)
    return pa.table({"uri": table.column("uri").cast(pa.string()),
                     "image_id": ids.cast(pa.int64()),
                     "error": pa.array(errors, pa.string())})


def _folder_inputs(prefix: str) -> pa.Table:
    uris = [info.uri for info in storage.list_files(prefix, IMAGE_SUFFIXES)]
    if not uris:
        raise storage.StorageError(f"{prefix}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return pa.table({"uri": pa.array(uris, pa.string()),
                     "image_id": pa.array([image_id_from_name(u) for u in uris], pa.int64()),
                     "error": pa.nulls(len(uris), pa.string())})


def list_inputs(source: str) -> pa.Table:
    """(uri, image_id, error) per photo; ``error`` is set where the photo is known to be bad.

    A source ending in ``.parquet`` is a manifest: rows whose ``image_status`` is not ``ok``
    keep their reason and are not read. Anything else is a folder or prefix, searched for
    :data:`IMAGE_SUFFIXES`.
    """
    source = storage.normalize(source)
    if source.lower().endswith(".parquet"):
        return _manifest_inputs(source)
    return _folder_inputs(source)


# --- Ray Data stages ------------------------------------------------------------------------

class TeacherPredictor:
    """Ray Data callable class: each actor loads the teacher once and scores batches of crops."""

    def __init__(self, teacher: str, weights: str | None, device: str,
                 storage_env: dict[str, str]) -> None:
        storage.apply_env(storage_env)  # the weights may be on S3
        self.teacher = create_teacher(teacher, weights, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == NO_ERROR
        probs = np.zeros((len(ok), NUM_IMAGENET_CLASSES), dtype=np.float32)
        if ok.any():
            probs[ok] = self.teacher.probabilities(batch["crop"][ok]).numpy()
        return {"row": batch["row"], "error": batch["error"], "probs": probs}


# --- output ---------------------------------------------------------------------------------

def _fixed_lists(values: np.ndarray, type_: pa.DataType, valid: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).ravel(), type=type_.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, type=type_, mask=pa.array(~valid))


def teacher_table(inputs: pa.Table, errors: list[str | None], probs: np.ndarray,
                  teacher: str) -> pa.Table:
    """Rows of ``TEACHER_SCHEMA`` for ``inputs`` (uri, image_id) and their results.

    ``probs`` is (N, 1000); rows with an error get nulls instead of probabilities.
    """
    valid = np.array([e is None for e in errors], dtype=bool)
    best = top_k(probs)
    return pa.table({
        "uri": inputs.column("uri"),
        "image_id": inputs.column("image_id"),
        "probs": _fixed_lists(probs, TEACHER_SCHEMA.field("probs").type, valid),
        "top5_ids": _fixed_lists(best.ids, TEACHER_SCHEMA.field("top5_ids").type, valid),
        "top5_names": pa.array([n if v else None for n, v in zip(best.names, valid)],
                               TEACHER_SCHEMA.field("top5_names").type),
        "top5_probs": _fixed_lists(best.probs, TEACHER_SCHEMA.field("top5_probs").type, valid),
        "status": pa.array([STATUS_OK if v else STATUS_ERROR for v in valid], pa.string()),
        "error": pa.array(errors, pa.string()),
        "teacher": pa.array([teacher] * len(valid), pa.string()),
    }, schema=TEACHER_SCHEMA)


def _record(summary: TeacherSummary, table: pa.Table) -> None:
    statuses = table.column("status").to_pylist()
    summary.images += len(statuses)
    summary.ok += statuses.count(STATUS_OK)
    summary.errors.update(e for e in table.column("error").to_pylist() if e is not None)


def _score(inputs: pa.Table, rows: np.ndarray, config: TeacherJobConfig
           ) -> Iterator[dict[str, np.ndarray]]:
    """Batches of (row, error, probs) for ``inputs[rows]``, as Ray Data completes them."""
    return predict_rows(inputs, rows, config.transform, TeacherPredictor,
                        {"teacher": config.teacher, "weights": config.weights},
                        batch_size=config.batch_size,
                        concurrency=config.concurrency or default_concurrency(config.device),
                        device=config.device, limits=config.limits)


def run_teacher(config: TeacherJobConfig) -> TeacherSummary:
    """Score every photo of ``config.input`` and write ``config.out_uri``; Ray must be up."""
    import ray

    start = time.perf_counter()
    inputs = list_inputs(config.input)
    known_bad = np.array([e is not None for e in inputs.column("error").to_pylist()], dtype=bool)
    todo = np.flatnonzero(~known_bad)
    log.info("%d photos to score, %d known bad", len(todo), int(known_bad.sum()))
    if config.device == "cuda" and not ray.cluster_resources().get("GPU"):
        # Not an error: an autoscaling cluster adds GPU nodes once the actors ask for them.
        log.warning("the Ray cluster has no GPU now; the inference actors wait for one")
    summary = TeacherSummary(out_uri=config.out_uri, teacher=config.teacher)
    try:
        with storage.open_file(config.out_uri, "wb") as sink, \
                pq.ParquetWriter(sink, TEACHER_SCHEMA, compression="zstd") as writer:

            def write(table: pa.Table) -> None:
                writer.write_table(table)
                _record(summary, table)

            if known_bad.any():
                bad = inputs.filter(pa.array(known_bad))
                write(teacher_table(bad, bad.column("error").to_pylist(),
                                    np.zeros((bad.num_rows, NUM_IMAGENET_CLASSES), np.float32),
                                    config.teacher))
            for batch in _score(inputs, todo, config):
                write(teacher_table(inputs.take(pa.array(batch["row"])),
                                    [e or None for e in batch["error"]], batch["probs"],
                                    config.teacher))
    except BaseException:
        # Closing the writer completed the file: a partial table must not pass for a result.
        storage.remove(config.out_uri)
        raise
    summary.seconds = time.perf_counter() - start
    return summary
