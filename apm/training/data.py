"""Ray Data ingest for training: manifest (+ teacher soft targets) -> decoded, augmented batches.

Decoding and augmentation run in Ray Data tasks, so they scale with the cluster's CPUs while the
Train workers only run the model; each worker reads its shard with ``get_dataset_shard``.
Images leave this module as uint8 HWC arrays (4x smaller than float32 in the object store);
the training loop normalises them for the backbone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from apm.core import storage
from apm.core.rows import retrying_task_args
from apm.data.decode import (
    DEFAULT_LIMITS,
    DecodeError,
    ImageLimits,
    decode_image,
    random_crop,
    read_image_bytes,
)
from apm.models.transforms import RESIZE_RATIO, resize_size
from apm.votes.fit_report import votes_from_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    image_size: int = 224  # square crop fed to the network
    resize_ratio: float = RESIZE_RATIO  # short side before cropping = image_size * ratio
    augment: bool = True  # random crop + horizontal flip; else a centre crop
    # Random crops need the whole short-side-resized photo: max_aspect bounds how long it is.
    limits: ImageLimits = DEFAULT_LIMITS
    shuffle: bool = True  # a new order of the rows every epoch, the same orders for one seed
    seed: int = 0

    @property
    def resize(self) -> int:
        return resize_size(self.image_size, self.resize_ratio)


def training_rows(manifest_uri: str, split: str | None, teacher_uri: str | None = None) -> pa.Table:
    """Rows to train on: uri, image_id, the normalised vote histogram and (optional) teacher probs.

    Rows whose photo is known to be missing or unreadable are left out and counted in the log.
    """
    table = storage.read_table(manifest_uri)
    if split:
        table = table.filter(pc.equal(table["split"], split))
    usable = pc.and_(pc.is_valid(table["uri"]),
                     pc.or_(pc.is_null(table["image_status"]),
                            pc.equal(table["image_status"], "ok")))
    left_out = table.num_rows - pc.sum(usable).as_py()
    if left_out:
        log.warning("%s: %d of %d %s rows left out (no usable photo)", manifest_uri, left_out,
                    table.num_rows, split or "")
    table = table.filter(usable)
    if table.num_rows == 0:
        raise ValueError(f"{manifest_uri}: no usable rows for split {split!r}")
    image_id, votes = votes_from_manifest(table)
    target = (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)
    rows = pa.table({
        "uri": table["uri"],
        "image_id": pa.array(image_id),
        "target": pa.FixedSizeListArray.from_arrays(pa.array(target.reshape(-1)), target.shape[1]),
    })
    if teacher_uri:
        rows = _join_teacher(rows, teacher_uri)
    return rows


def _join_teacher(rows: pa.Table, teacher_uri: str) -> pa.Table:
    teacher = storage.read_table(teacher_uri, columns=["uri", "probs", "status"])
    teacher = teacher.filter(pc.equal(teacher["status"], "ok"))
    # Arrow's hash join cannot carry fixed-size-list columns, so match the uris by position.
    position = pc.index_in(rows["uri"], value_set=teacher["uri"])
    matched = pc.is_valid(position)
    missing = rows.num_rows - pc.sum(matched).as_py()
    if missing:
        log.warning("%s: no teacher probabilities for %d of %d images; they are left out",
                    teacher_uri, missing, rows.num_rows)
    if missing == rows.num_rows:
        raise ValueError(f"{teacher_uri}: no teacher probabilities match the manifest's uris")
    rows = rows.filter(matched)
    probs = teacher["probs"].take(pc.drop_null(position))
    return rows.append_column("teacher", probs)


def load_images(batch: dict[str, np.ndarray], config: IngestConfig,
                storage_env: dict[str, str]) -> dict[str, np.ndarray]:
    """Read, decode and crop a batch.

    An undecodable photo is logged and replaced by another photo of the same batch (by a grey
    frame if none decoded), so the row count never changes: Ray Train gives every worker an equal
    share, and DDP workers that disagree on their number of steps would wait for each other
    forever.
    """
    storage.apply_env(storage_env)
    rng = np.random.default_rng()  # fresh crops every epoch: the pipeline reruns per epoch
    size = config.image_size
    crops: list[np.ndarray | None] = []
    for uri in batch["uri"]:
        try:
            data = read_image_bytes(str(uri), config.limits)
            # A centre crop resizes only what it keeps; random crops need the whole photo.
            rgb = decode_image(data, size=config.resize, limits=config.limits,
                               crop=None if config.augment else size).rgb
        except storage.TransientStorageError:
            raise  # the store's fault, not the photo's: Ray retries the task
        except (DecodeError, OSError) as err:
            log.warning("cannot train on %s (%s); a neighbour stands in", uri, err)
            crops.append(None)
            continue
        crop = random_crop(rgb, size, rng) if config.augment else rgb
        crops.append(np.ascontiguousarray(crop))
    good = [c for c in crops if c is not None]
    grey = np.full((size, size, 3), 128, np.uint8)
    filled = [c if c is not None else (good[i % len(good)] if good else grey)
              for i, c in enumerate(crops)]
    out = {key: value for key, value in batch.items() if key != "uri"}
    out["image"] = np.stack(filled)
    return out


def image_dataset(rows: pa.Table, config: IngestConfig, batch_size: int = 32):
    """A Ray Dataset of decoded images with their targets (and teacher probs when present).

    With ``config.shuffle`` the rows (uris and targets, before any pixel is read) are shuffled
    anew each time the dataset runs, i.e. every epoch: Ray Data reseeds from ``config.seed``
    and the execution's index, so a rerun with the same seed sees the same orders. The order
    is kept through decoding (``preserve_order``), so which worker gets which rows depends on
    the seed too, not on which task finished first.
    """
    import ray

    blocks = [rows.slice(i, batch_size) for i in range(0, rows.num_rows, batch_size)]
    dataset = ray.data.from_arrow(blocks)
    if config.shuffle:
        dataset = dataset.random_shuffle(
            seed=ray.data.RandomSeedConfig(config.seed, reseed_after_execution=True))
        dataset.context.execution_options.preserve_order = True  # this dataset's own context
    return dataset.map_batches(
        load_images, batch_size=batch_size, batch_format="numpy",
        fn_kwargs={"config": config, "storage_env": storage.ray_env_vars()},
        **retrying_task_args())
