"""The ``teacher_softmax`` stage: an ImageNet teacher's softmax for every photo, with Ray Data.

The photos come from a manifest (its ``uri`` and ``image_id``) or from a folder / prefix,
listed afresh into ``OUT/_listing`` as bulk scoring lists its input (:mod:`apm.data.listing`). The
shared inference pipeline (:func:`apm.stages.inference.predict_rows`) decodes them for a pool of
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
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm.core import storage
from apm.core.rows import STATUS_ERROR, STATUS_OK
from apm.core.schemas import NUM_IMAGENET_CLASSES, TEACHER_SCHEMA
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.data.listing import LISTING_FOLDER, ListingConfig, fresh_listing
from apm.models.teachers import DEFAULT_TEACHER, create_teacher, teacher_spec, top_k
from apm.models.transforms import ImageTransform, resize_size
from apm.stages.base import BatchStage, Tally, check_batch_options, fixed_lists
from apm.stages.inference import default_concurrency, predict_rows

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
    precision: str | None = None  # fp32 | bf16; default: the device's (apm.core.precision)
    batch_size: int | None = None  # None: the device's (apm.stages.base.DEFAULT_BATCH_SIZE)
    concurrency: int | None = None  # inference actors; default one per GPU / CPU of the cluster
    limits: ImageLimits = DEFAULT_LIMITS  # what one photo may cost
    # Crop side; None: the teacher's own protocol (224 of 256). A smaller crop costs less and
    # suits small photos (the demo's are 128 px), at some cost in the teacher's accuracy.
    image_size: int | None = None

    def __post_init__(self) -> None:
        teacher_spec(self.teacher)  # TeacherError (a ValueError) listing the choices
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image size must be at least 16 pixels, got {self.image_size}")
        # Frozen: the batch size the device calls for is filled in once, here.
        object.__setattr__(self, "batch_size", check_batch_options(
            self.device, self.batch_size, self.concurrency, self.precision))

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

    @property
    def listing_uri(self) -> str:
        return storage.join(storage.normalize(self.out), LISTING_FOLDER)


@dataclass
class TeacherSummary(Tally):  # rows: one per photo
    out_uri: str
    teacher: str
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.rows / self.seconds if self.seconds else 0.0
        out = [f"teacher: {self.teacher}",
               f"images: {self.rows} = {self.ok} ok + {self.rows - self.ok} error",
               f"throughput: {rate:.1f} images/s ({self.seconds:.1f} s)",
               f"output: {self.out_uri}"]
        return out + self.error_lines()


# --- inputs and the Ray Data stage ---------------------------------------------------------

def list_inputs(source: str, folder: str) -> pa.Table:
    """(uri, image_id, error) per photo of ``source``, listed afresh into ``folder``
    (:mod:`apm.data.listing`); ``error`` is set where the photo is known to be bad.

    A source ending in ``.parquet`` is a manifest: rows whose ``image_status`` is not ``ok``
    keep their reason and are not read. Anything else is a folder or prefix, searched for
    :data:`apm.core.rows.IMAGE_SUFFIXES`. Ray must be up.
    """
    source = storage.normalize(source)
    table = fresh_listing(ListingConfig(source, folder)).read(["uri", "image_id", "error"])
    if table.column("uri").null_count == table.num_rows:
        raise storage.StorageError(f"{source}: no row has a photo uri "
                                   "(run prepare_ava with --images)")
    return table


class TeacherPredictor(BatchStage):
    """Ray Data callable class: each actor loads the teacher once and scores batches of crops."""

    def __init__(self, teacher: str, weights: str | None, device: str,
                 storage_env: dict[str, str], precision: str | None = None) -> None:
        super().__init__(device, storage_env)  # the weights may be on S3
        self.teacher = create_teacher(teacher, weights, device, precision)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {"probs": np.zeros((n, NUM_IMAGENET_CLASSES), dtype=np.float32)}

    def process(self, batch: dict[str, np.ndarray], ok: np.ndarray,
                out: dict[str, np.ndarray]) -> None:
        out["probs"][ok] = self.teacher.probabilities(batch["crop"][ok]).numpy()


# --- output ---------------------------------------------------------------------------------

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
        "probs": fixed_lists(probs, TEACHER_SCHEMA.field("probs").type, valid),
        "top5_ids": fixed_lists(best.ids, TEACHER_SCHEMA.field("top5_ids").type, valid),
        "top5_names": pa.array([n if v else None for n, v in zip(best.names, valid)],
                               TEACHER_SCHEMA.field("top5_names").type),
        "top5_probs": fixed_lists(best.probs, TEACHER_SCHEMA.field("top5_probs").type, valid),
        "status": pa.array([STATUS_OK if v else STATUS_ERROR for v in valid], pa.string()),
        "error": pa.array(errors, pa.string()),
        "teacher": pa.array([teacher] * len(valid), pa.string()),
    }, schema=TEACHER_SCHEMA)


def _score(inputs: pa.Table, rows: np.ndarray, config: TeacherJobConfig
           ) -> Iterator[dict[str, np.ndarray]]:
    """Batches of (row, error, probs) for ``inputs[rows]``, as Ray Data completes them."""
    return predict_rows(inputs, rows, config.transform, TeacherPredictor,
                        {"teacher": config.teacher, "weights": config.weights,
                         "precision": config.precision},
                        batch_size=config.batch_size,
                        concurrency=config.concurrency or default_concurrency(config.device),
                        device=config.device, limits=config.limits)


def run_teacher(config: TeacherJobConfig) -> TeacherSummary:
    """Score every photo of ``config.input`` and write ``config.out_uri``; Ray must be up."""
    import ray

    start = time.perf_counter()
    inputs = list_inputs(config.input, config.listing_uri)
    good = inputs.column("error").null_count
    log.info("%d photos to score, %d known bad", good, inputs.num_rows - good)
    if config.device == "cuda" and not ray.cluster_resources().get("GPU"):
        # Not an error: an autoscaling cluster adds GPU nodes once the actors ask for them.
        log.warning("the Ray cluster has no GPU now; the inference actors wait for one")
    summary = TeacherSummary(out_uri=config.out_uri, teacher=config.teacher)
    try:
        with storage.open_file(config.out_uri, "wb") as sink, \
                pq.ParquetWriter(sink, TEACHER_SCHEMA, compression="zstd") as writer:

            # Rows known to be bad (a manifest's image_status) come back as error rows unread.
            for batch in _score(inputs, np.arange(inputs.num_rows), config):
                errors = [e or None for e in batch["error"]]
                writer.write_table(teacher_table(inputs.take(pa.array(batch["row"])), errors,
                                                 batch["probs"], config.teacher))
                summary.record(errors)
    except BaseException:
        # Closing the writer completed the file: a partial table must not pass for a result.
        storage.remove(config.out_uri)
        raise
    summary.seconds = time.perf_counter() - start
    return summary
