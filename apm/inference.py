"""Batch inference over photos with Ray Data: the one pipeline of the teacher, evaluation and scoring.

Photos are read and decoded (:func:`decode_batch`) into small uint8 crops for a pool of actors
that each load their model once (Ray's batch-inference pattern: a callable class, ``__call__``
on a dict of numpy arrays). With GPUs, decoding runs in a bounded pool of CPU tasks that feeds
one actor per GPU; on CPUs Ray Data fuses decoding into the actors (same resources), which
saves a copy through the object store. A photo that is missing, unreadable, too large or not an
image keeps its row with the reason in ``error``; it never stops the job.
"""
from __future__ import annotations

import math
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from apm import storage
from apm.decode import DEFAULT_MAX_PIXELS, DecodeError

if TYPE_CHECKING:  # torch stays out of processes that only list objects
    from apm.teacher import ImageTransform

STATUS_OK, STATUS_ERROR = "ok", "error"

#: Files a folder / prefix input is searched for (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: The ``error`` of a good photo inside the Ray pipeline. Not None: Ray Data turns a batch
#: whose column is all None into a float NaN array.
NO_ERROR = ""

#: Most rows per input block: the unit of work an actor takes at a time.
ROWS_PER_BLOCK = 256


def image_id_from_name(uri: str) -> int | None:
    """AVA names its photos ID.jpg; other names have no id."""
    stem = posixpath.splitext(posixpath.basename(uri))[0]
    return int(stem) if stem.isdigit() else None


def known_errors(uris: list[str | None], statuses: list[str | None],
                 details: list[str | None]) -> list[str | None]:
    """Why each manifest row cannot be scored before any photo is read (None: it can)."""
    errors: list[str | None] = []
    for uri, status, why in zip(uris, statuses, details):
        if uri is None:
            errors.append("the manifest has no uri for this row")
        elif status not in (None, STATUS_OK):
            errors.append(f"manifest image_status {status!r}" + (f": {why}" if why else ""))
        else:
            errors.append(None)
    return errors


def default_concurrency(device: str) -> int:
    """Inference actors when none are asked for: one per GPU on 'cuda', else one per CPU."""
    import ray

    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if device == "cuda" else "CPU", 1)))


def decode_batch(batch: dict[str, np.ndarray], transform: ImageTransform,
                 storage_env: dict[str, str], max_pixels: int = DEFAULT_MAX_PIXELS
                 ) -> dict[str, np.ndarray]:
    """Read and decode each photo into a uint8 crop; a failure becomes ``error``.

    Also returns each photo's stored ``width`` and ``height`` (0 where it failed).
    """
    storage.apply_env(storage_env)
    size = transform.crop_size
    n = len(batch["uri"])
    crops = np.zeros((n, size, size, 3), dtype=np.uint8)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    errors = []
    for i, uri in enumerate(batch["uri"]):
        try:
            crops[i], width[i], height[i] = transform.crop_decoded(storage.read_bytes(str(uri)),
                                                                   max_pixels)
            errors.append(NO_ERROR)
        except FileNotFoundError:
            errors.append("not found")
        except DecodeError as err:  # its message says why
            errors.append(str(err))
        except Exception as err:  # noqa: BLE001 - one bad photo must not stop the job
            errors.append(f"{type(err).__name__}: {err}")
    return {"row": batch["row"], "error": np.array(errors, dtype=object), "crop": crops,
            "width": width, "height": height}


def predict_rows(inputs: pa.Table, rows: np.ndarray, transform: ImageTransform,
                 predictor: type, predictor_kwargs: dict, *, batch_size: int, concurrency: int,
                 device: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode_concurrency: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Decode ``inputs[rows]`` in Ray Data tasks, then run ``predictor`` in an actor pool.

    ``predictor`` is a callable class built once per actor with ``predictor_kwargs`` (plus the
    device and the storage settings) and called on decoded batches (``row``, ``error``,
    ``crop``, ``width``, ``height``); its output batches stream back as Ray Data completes
    them, in no particular order. One GPU per actor on 'cuda'; ``decode_concurrency`` caps
    the decoding tasks there (default: as many as the cluster's CPUs allow).
    """
    import ray

    if not len(rows):
        return
    env = storage.ray_env_vars()
    table = pa.table({"row": pa.array(rows, pa.int64()),
                      "uri": inputs.column("uri").take(pa.array(rows, pa.int64()))})
    # Small inputs still get a few blocks per actor, so that every actor has work.
    per_block = max(1, min(ROWS_PER_BLOCK, math.ceil(len(rows) / (4 * concurrency))))
    blocks = [table.slice(i, per_block) for i in range(0, table.num_rows, per_block)]
    on_gpu = device == "cuda"
    dataset = (
        ray.data.from_arrow(blocks)
        .map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                     fn_kwargs={"transform": transform, "storage_env": env,
                                "max_pixels": max_pixels},
                     # A task pool of its own only feeds GPU actors; on CPUs it fuses into them.
                     compute=(ray.data.TaskPoolStrategy(size=decode_concurrency)
                              if on_gpu and decode_concurrency else None),
                     udf_modifying_row_count=False)
        .map_batches(predictor, batch_size=batch_size, batch_format="numpy",
                     fn_constructor_kwargs={**predictor_kwargs, "device": device,
                                            "storage_env": env},
                     compute=ray.data.ActorPoolStrategy(size=concurrency),
                     num_gpus=1 if on_gpu else None,
                     udf_modifying_row_count=False)
    )
    # Whole blocks as they complete: the driver sees progress without waiting to fill a batch.
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
