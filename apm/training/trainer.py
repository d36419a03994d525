"""Training APM with Ray Train for a :class:`TrainConfig`, and reading back its result."""
from __future__ import annotations

from dataclasses import asdict

import pyarrow as pa
import torch

from apm.core import storage
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.training.data import IngestConfig, image_dataset
from apm.training.guard import nonfinite_cause
from apm.training.loop import MODEL_FILE, STATE_FILE, TrainConfig, train_loop_per_worker
from apm.training.ray_trainer import WorkerGroup, torch_trainer


def fit(cfg: TrainConfig, rows: pa.Table, storage_uri: str, name: str, max_failures: int = 2,
        limits: ImageLimits = DEFAULT_LIMITS, data: dict | None = None, force: bool = False):
    """Train on ``rows`` (from :func:`apm.training.data.training_rows`), reading photos within
    ``limits``; returns Ray's Result.

    Rerunning with the same ``storage_uri`` and ``name`` resumes from the latest checkpoint,
    unless ``cfg`` or ``data`` (where the rows came from: manifest, split, ...) differ from what
    the run was started with (RunMismatchError); ``force`` starts the run over. Raises Ray's
    TrainingFailedError when training fails (see :func:`describe_failure`).
    """
    if cfg.needs_teacher and "teacher" not in rows.column_names:
        raise ValueError(f"task {cfg.task!r} needs teacher probabilities (--teacher)")
    # Ray Data splits the rows equally between the workers; the last partial batch is dropped.
    steps_per_epoch = max(1, rows.num_rows // cfg.num_workers // cfg.batch_size)
    ingest = IngestConfig(image_size=cfg.image_size, limits=limits, shuffle=cfg.shuffle,
                          seed=cfg.seed)
    return torch_trainer(
        train_loop_per_worker, {"train": asdict(cfg), "steps_per_epoch": steps_per_epoch},
        WorkerGroup(cfg.num_workers, cfg.use_gpu, cfg.cpus_per_worker), storage_uri=storage_uri,
        name=name, run_record={**asdict(cfg), **(data or {})},
        datasets=lambda: {"train": image_dataset(rows, ingest)}, max_failures=max_failures,
        force=force).fit()


def describe_failure(err: BaseException) -> str:
    """One line for a failed ``trainer.fit()``: the NaN stop as the workers worded it, else the
    first worker's error (Ray's own message spans every worker's traceback)."""
    found = nonfinite_cause(err)
    if found is not None:
        return str(found)
    failures = list(getattr(err, "worker_failures", {}).values())
    first = failures[0] if failures else getattr(err, "controller_failure", err)
    text = str(first).strip().splitlines()
    return f"training failed: {type(first).__name__}: {text[0] if text else ''}"


def final_state(result) -> dict:
    """The last checkpoint's training state (epoch, step, metric history, config)."""
    with result.checkpoint.as_directory() as folder:
        return torch.load(f"{folder}/{STATE_FILE}", weights_only=True, map_location="cpu")


def model_uri(result, storage_uri: str) -> str:
    """Where the last checkpoint's APM model file (``model.pt``) is, as a storage URI."""
    path = f"{result.checkpoint.path}/{MODEL_FILE}"
    return f"s3://{path}" if storage.is_s3(storage_uri) else path
