"""Building and running the Ray Train ``TorchTrainer`` for a :class:`TrainConfig`."""
from __future__ import annotations

import logging
from dataclasses import asdict

import pyarrow as pa
import torch

from apm import storage
from apm.training.data import IngestConfig, image_dataset
from apm.training.loop import MODEL_FILE, STATE_FILE, TrainConfig, train_loop_per_worker

log = logging.getLogger(__name__)


def run_config(name: str, storage_uri: str, max_failures: int):
    """Where checkpoints go (local or S3 through the project's storage layer) and how to recover."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    fs, path = storage.arrow_filesystem(storage_uri)
    storage.makedirs(storage_uri)
    return RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                     failure_config=FailureConfig(max_failures=max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=2),
                     # Workers read photos and initial weights through apm.storage too.
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


def fit(cfg: TrainConfig, rows: pa.Table, storage_uri: str, name: str, max_failures: int = 2):
    """Train on ``rows`` (from :func:`apm.training.data.training_rows`); returns Ray's Result.

    Rerunning with the same ``storage_uri`` and ``name`` resumes from the latest checkpoint.
    """
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if cfg.needs_teacher and "teacher" not in rows.column_names:
        raise ValueError(f"task {cfg.task!r} needs teacher probabilities (--teacher)")
    if cfg.use_gpu and not torch.cuda.is_available():
        log.warning("use_gpu: this driver sees no GPU; the workers must have them")
    warn_if_no_cpu_for_data(cfg.num_workers, cfg.cpus_per_worker)
    dataset = image_dataset(rows, IngestConfig(image_size=cfg.image_size))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(cfg),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=run_config(name, storage_uri, max_failures),
        datasets={"train": dataset},
    )
    return trainer.fit()


def final_state(result) -> dict:
    """The last checkpoint's training state (epoch, step, metric history, config)."""
    with result.checkpoint.as_directory() as folder:
        return torch.load(f"{folder}/{STATE_FILE}", weights_only=True, map_location="cpu")


def model_uri(result, storage_uri: str) -> str:
    """Where the last checkpoint's APM model file (``model.pt``) is, as a storage URI."""
    path = f"{result.checkpoint.path}/{MODEL_FILE}"
    return f"s3://{path}" if storage.is_s3(storage_uri) else path
