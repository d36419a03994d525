"""APM checkpoints: the architecture as plain data next to the state dict.

A checkpoint holds only tensors, strings and numbers, so ``torch.load(..., weights_only=True)``
reads it and loading one never runs pickled code. It records the architecture
(``APMConfig``), so a checkpoint can be rebuilt without being told what it is, and loading it as
something else fails with both architectures named instead of a list of missing keys.
Checkpoints are written and read through :mod:`apm.core.storage`, i.e. local paths or ``s3://`` URIs,
or handled as bytes (e.g. for a Ray Train checkpoint).
"""
from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import asdict, fields

import torch
from torch import Tensor

from apm.core import storage
from apm.models.apm import APM, APMConfig
from apm.models.weights import WeightsMismatchError, load_exact

#: Written into every checkpoint; a reader rejects anything else rather than guess.
CHECKPOINT_FORMAT = "apm-checkpoint/1"

#: The first bytes of every file ``torch.save`` writes (a zip archive).
ZIP_MAGIC = b"PK\x03\x04"

#: The fields of ``APMConfig`` that shape the weights. ``dropout`` is not among them: it is a
#: training setting, so a checkpoint may be loaded with another one.
ARCHITECTURE_FIELDS = ("backbone", "head", "num_classes", "num_bins")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not hold the requested architecture."""


def checkpoint_bytes(model: APM, image_size: int | None = None) -> bytes:
    """The checkpoint of ``model`` as bytes; ``image_size``: the crop it was trained on."""
    buffer = io.BytesIO()
    payload = {"format": CHECKPOINT_FORMAT, "config": asdict(model.config),
               "state_dict": model.state_dict()}
    if image_size is not None:
        payload["image_size"] = image_size
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(model: APM, uri: str, image_size: int | None = None) -> None:
    """Write the checkpoint of ``model`` to a local path or ``s3://`` URI."""
    storage.write_bytes(uri, checkpoint_bytes(model, image_size))


def describe_source(source: str | bytes) -> str:
    """How error messages name a checkpoint: its URI, or its size when given as bytes."""
    return f"checkpoint of {len(source)} bytes" if isinstance(source, bytes) else source


def _unreadable(uri: str, err: Exception) -> str:
    """One line naming ``uri`` for a failed read (the storage layer raises OSError, s3fs and
    botocore types)."""
    if isinstance(err, IsADirectoryError):
        return f"{uri}: a folder, not a file"
    if isinstance(err, FileNotFoundError) and "bucket" not in str(err).lower():
        return f"{uri}: no such {'object' if storage.is_s3(uri) else 'file or directory'}"
    if storage.is_s3(uri):
        return str(storage.explain_s3_error(uri, err))
    return f"{uri}: {getattr(err, 'strerror', None) or err}"


def _not_torch_reason(data: bytes, err: Exception) -> str:
    """Why ``data`` is no torch file, in a few words (torch's own messages span many lines)."""
    if not data:
        return "the file is empty"
    if not data.startswith(ZIP_MAGIC):  # torch.save writes zip archives
        return "not a torch file"
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return "a truncated or damaged torch file"
    if isinstance(err, pickle.UnpicklingError):
        return "it holds Python objects other than tensors, strings and numbers (not loaded)"
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def read_source(source: str | bytes, error: type[ValueError] = CheckpointError) -> bytes:
    """The bytes of a file (a URI, or bytes as they are); ``error`` in one line naming it."""
    if isinstance(source, bytes):
        return source
    try:
        return storage.read_bytes(source)
    except Exception as err:  # noqa: BLE001 - every storage failure becomes one clear line
        raise error(_unreadable(source, err)) from err


def read_torch(source: str | bytes, kind: str, error: type[ValueError] = CheckpointError,
               what: str | None = None):
    """What a torch file (a URI or its bytes) holds, read with ``weights_only=True``.

    A missing, unreachable, foreign or damaged file raises ``error`` in one line naming the
    source (or ``what``: the URI that bytes were read from) and ``kind`` ("an APM checkpoint",
    "ImageNet weights", ...).
    """
    what = what or describe_source(source)
    data = read_source(source, error)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or damaged files
        raise error(f"{what}: not readable as {kind}: {_not_torch_reason(data, err)}") from err


def read_format(source: str | bytes, expected: str, kind: str,
                error: type[ValueError] = CheckpointError, what: str | None = None) -> dict:
    """The payload of a torch file written with ``"format": expected`` (a URI or its bytes).

    Files hold only tensors, strings and numbers (``weights_only=True``); a missing, foreign,
    damaged or other-format file raises ``error`` naming the source (or ``what``) and ``kind``.
    """
    what = what or describe_source(source)
    payload = read_torch(source, kind, error, what)
    if not isinstance(payload, dict) or payload.get("format") != expected:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise error(f"{what}: not {kind} (format {found!r}, expected {expected!r})")
    return payload


def _payload(source: str | bytes, what: str | None = None) -> dict:
    return read_format(source, CHECKPOINT_FORMAT, "an APM checkpoint", what=what)


def checkpoint_payload(source: str | bytes, what: str | None = None
                       ) -> tuple[APMConfig, dict[str, Tensor], int | None]:
    """The stored config, state dict and training crop (None: not recorded) of a checkpoint
    (a URI or its bytes; ``what`` names bytes in errors)."""
    what = what or describe_source(source)
    payload = _payload(source, what)
    known = {f.name for f in fields(APMConfig)}
    stored = payload["config"]
    if not stored.keys() <= known:
        raise CheckpointError(f"{what}: config fields this version does not know: "
                              f"{sorted(stored.keys() - known)}")
    return APMConfig(**stored), payload["state_dict"], payload.get("image_size")


def read_checkpoint(source: str | bytes) -> tuple[APMConfig, dict[str, Tensor]]:
    """The stored config and state dict of a checkpoint (a URI or its bytes)."""
    return checkpoint_payload(source)[:2]


#: Model specs ``random:ARCH`` name a randomly initialised model rather than a checkpoint.
RANDOM_PREFIX = "random:"


def trained_image_size(source: str | bytes) -> int | None:
    """The crop size a checkpoint was trained on, when its trainer recorded it (never for a
    ``random:ARCH`` spec)."""
    if isinstance(source, str) and source.startswith(RANDOM_PREFIX):
        return None
    return _payload(source).get("image_size")


def check_architecture(stored: APMConfig, requested: APMConfig, what: str) -> None:
    """CheckpointError naming both architectures when they differ in any ARCHITECTURE_FIELDS."""
    if any(getattr(stored, name) != getattr(requested, name) for name in ARCHITECTURE_FIELDS):
        raise CheckpointError(f"{what}: holds an APM with backbone {stored.describe()}, "
                              f"but backbone {requested.describe()} was requested")


def load_weights(model: APM, state_dict: dict[str, Tensor], what: str) -> None:
    try:
        load_exact(model, state_dict, what, f"APM {model.config.describe()}")
    except WeightsMismatchError as err:
        raise CheckpointError(str(err)) from err


def load_state(model: APM, source: str | bytes) -> APM:
    """Load a checkpoint into ``model``; its architecture must match ``model.config``."""
    what = describe_source(source)
    stored, state_dict = read_checkpoint(source)
    check_architecture(stored, model.config, what)
    load_weights(model, state_dict, what)
    return model


def load_checkpoint(source: str | bytes, expected: APMConfig | None = None,
                    what: str | None = None) -> APM:
    """The APM stored in a checkpoint (in training mode, like any new module).

    With ``expected``, the checkpoint must hold that architecture (CheckpointError naming both
    otherwise) and the model gets ``expected``'s dropout; without, the stored config is used.
    ``what`` names bytes read from a URI in errors.
    """
    what = what or describe_source(source)
    stored, state_dict, _ = checkpoint_payload(source, what)
    if expected is not None:
        check_architecture(stored, expected, what)
    model = APM(expected or stored)
    load_weights(model, state_dict, what)
    return model
