"""The skeleton every batch stage shares: the teacher, scoring, evaluation and explanations.

A stage checks its options (:func:`check_batch_options`) before any work, runs a
:class:`BatchStage` subclass in the actors of :func:`apm.stages.inference.predict_rows` (``setup`` in
the constructor, once per actor; :meth:`BatchStage.process` on the good rows of each batch,
every output prefilled by :meth:`BatchStage.empty` for the others), and counts its rows in a
:class:`Tally` whose :meth:`Tally.error_lines` end its summary. Rows known to be bad (a
manifest's ``image_status``) go through the same pipeline: they come back as error rows,
unread, with the outputs of :meth:`BatchStage.empty`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from apm.core import storage
from apm.core.precision import check_device, resolve_precision
from apm.core.rows import NO_ERROR

#: Photos per batch when a stage is given none: a GPU needs a few hundred at a time to stay
#: busy (docs/operations.md); on a CPU larger batches buy nothing and cost actor memory.
DEFAULT_BATCH_SIZE = {"cpu": 32, "cuda": 256}

#: The commonest error reasons a summary names; it counts the rest.
ERRORS_SHOWN = 10


def check_batch_options(device: str, batch_size: int | None, concurrency: int | None,
                        precision: str | None = None, image_size: int | None = None) -> int:
    """ValueError unless the device and precision (None: the device's) are known, and the
    batch size, actors and crop (None: defaults) are at least 1; returns the batch size
    (None: the device's, :data:`DEFAULT_BATCH_SIZE`)."""
    resolve_precision(precision, check_device(device))
    if image_size is not None and image_size < 1:
        raise ValueError(f"image size must be at least 1, got {image_size}")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE[device]
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return batch_size


def fixed_lists(values: np.ndarray, type_: pa.DataType, valid: np.ndarray) -> pa.Array:
    """A fixed-size list column of an output table from an (N, k) array, null where not
    ``valid`` (an error row's prefilled values are not written)."""
    flat = pa.array(np.ascontiguousarray(values).ravel(), type=type_.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, type=type_, mask=pa.array(~valid))


class BatchStage:
    """A Ray Data callable class: built once per actor, called on decoded batches (``row``,
    ``error``, ``error_kind``, ``crop``, ``width``, ``height``).

    A subclass's constructor calls this one (the store's settings, the device) and then sets
    its model up; it gives :meth:`empty` and :meth:`process`. The batch's ``passed`` columns
    are returned as they are.
    """

    passed: tuple[str, ...] = ("row", "error")

    def __init__(self, device: str, storage_env: dict[str, str]) -> None:
        storage.apply_env(storage_env)  # the model and the outputs may be on S3
        self.device = check_device(device)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        """The outputs of ``n`` rows before any is processed (NaN, zeros: an error row's)."""
        raise NotImplementedError

    def process(self, batch: dict[str, np.ndarray], ok: np.ndarray,
                out: dict[str, np.ndarray]) -> None:
        """Fill ``out``'s rows ``ok`` (a mask of the batch, with at least one row)."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == NO_ERROR
        out = {key: batch[key] for key in self.passed} | self.empty(len(ok))
        if ok.any():
            self.process(batch, ok, out)
        return out


@dataclass(kw_only=True)
class Tally:
    """Rows written, those ok, and the errors by reason (a stage summary's counts)."""

    rows: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)  # reason -> rows

    def record(self, errors: Iterable[str | None]) -> None:
        """Count rows by their error (None or empty: ok)."""
        errors = list(errors)
        failed = [e for e in errors if e]
        self.rows += len(errors)
        self.ok += len(errors) - len(failed)
        self.errors.update(failed)

    def error_lines(self) -> list[str]:
        """The commonest reasons, then how many other kinds there are."""
        out = [f"  error x{n}: {reason}" for reason, n in self.errors.most_common(ERRORS_SHOWN)]
        if len(self.errors) > ERRORS_SHOWN:
            out.append(f"  ... and {len(self.errors) - ERRORS_SHOWN} more kinds of error")
        return out
