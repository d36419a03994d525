"""Building and running the Ray Train ``TorchTrainer`` for a :class:`TrainConfig`."""
from __future__ import annotations

import logging
from dataclasses import asdict

import pyarrow as pa
import torch

from apm import progress, storage
from apm.decode import DEFAULT_LIMITS, ImageLimits
from apm.training.data import IngestConfig, image_dataset
from apm.training.guard import StopOnNonFiniteLoss, nonfinite_cause
from apm.training.loop import MODEL_FILE, STATE_FILE, TrainConfig, train_loop_per_worker
from apm.training.runs import prepare_run

log = logging.getLogger(__name__)


def run_config(name: str, storage_uri: str, max_failures: int):
    """Where checkpoints go (local or S3 through the project's storage layer) and how to recover."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    fs, path = storage.arrow_filesystem(storage_uri)
    storage.makedirs(storage_uri)
    return RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                     logging_config=progress.train_logging_config(),  # Ray Train's own console
                     # max_failures restarts cure crashes; a NaN loss would only recur.
                     failure_config=FailureConfig(max_failures=max_failures),
                     callbacks=[StopOnNonFiniteLoss()],
                     checkpoint_config=CheckpointConfig(num_to_keep=2),
                     # Workers read photos and initial weights through apm.storage too (the
                     # S3 settings; credentials come from each node's own environment).
                     worker_runtime_env={"env_vars": storage.ray_env_vars()})


def warn_if_no_cpu_for_data(num_workers: int, cpus_per_worker: float) -> None:
    """Ray Data decodes the photos with the CPUs the training workers leave free; with none left
    training waits forever unless the cluster grows, so say so before it starts."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    left = total - num_workers * cpus_per_worker
    if left < 1:
        log.warning("%d workers x %g CPUs reserve %g of the cluster's %g CPUs, leaving %g to decode "
                    "photos: training will wait for data unless the cluster adds nodes; lower "
                    "--cpus-per-worker or --num-workers", num_workers, cpus_per_worker,
                    num_workers * cpus_per_worker, total, max(left, 0.0))


def fit(cfg: TrainConfig, rows: pa.Table, storage_uri: str, name: str, max_failures: int = 2,
        limits: ImageLimits = DEFAULT_LIMITS, data: dict | None = None, force: bool = False):
    """Train on ``rows`` (from :func:`apm.training.data.training_rows`), reading photos within
    ``limits``; returns Ray's Result.

    Rerunning with the same ``storage_uri`` and ``name`` resumes from the latest checkpoint,
    unless ``cfg`` or ``data`` (where the rows came from: manifest, split, ...) differ from what
    the run was started with (RunMismatchError); ``force`` starts the run over. Raises Ray's
    TrainingFailedError when training fails (see :func:`describe_failure`).
    """
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if cfg.needs_teacher and "teacher" not in rows.column_names:
        raise ValueError(f"task {cfg.task!r} needs teacher probabilities (--teacher)")
    prepare_run(storage_uri, name, {**asdict(cfg), **(data or {})}, force)
    if cfg.use_gpu and not torch.cuda.is_available():
        log.warning("use_gpu: this driver sees no GPU; the workers must have them")
    warn_if_no_cpu_for_data(cfg.num_workers, cfg.cpus_per_worker)
    dataset = image_dataset(rows, IngestConfig(image_size=cfg.image_size, limits=limits,
                                               shuffle=cfg.shuffle, seed=cfg.seed))
    # Ray Data splits the rows equally between the workers; the last partial batch is dropped.
    steps_per_epoch = max(1, rows.num_rows // cfg.num_workers // cfg.batch_size)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": asdict(cfg), "steps_per_epoch": steps_per_epoch},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=run_config(name, storage_uri, max_failures),
        datasets={"train": dataset},
    )
    return trainer.fit()


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
