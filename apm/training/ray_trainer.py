"""The one ``TorchTrainer`` builder of APM and PFAGAN training: a run that resumes, on a worker
group sized for the cluster (DDP over gloo on CPUs, NCCL on GPUs), checkpoints in the project's
storage, Ray Train's console at the project's log level."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from apm.core import progress, storage
from apm.training.guard import StopOnNonFiniteLoss
from apm.training.runs import prepare_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerGroup:
    """How many training workers, and what each holds."""

    num_workers: int
    use_gpu: bool
    cpus_per_worker: float


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
                     # Workers read photos and initial weights through apm.core.storage too (the
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


def torch_trainer(loop: Callable[[dict], None], loop_config: dict, workers: WorkerGroup, *,
                  storage_uri: str, name: str, run_record: dict, datasets: Callable[[], dict],
                  max_failures: int, force: bool):
    """A ``TorchTrainer`` of ``loop`` for run ``name`` under ``storage_uri``; ``.fit()`` it.

    The run is checked first (:func:`apm.training.runs.prepare_run`: a rerun with another
    ``run_record`` is refused unless ``force``), then ``datasets()`` is built.
    """
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    prepare_run(storage_uri, name, run_record, force)
    if workers.use_gpu and not torch.cuda.is_available():
        log.warning("use_gpu: this driver sees no GPU; the workers must have them")
    warn_if_no_cpu_for_data(workers.num_workers, workers.cpus_per_worker)
    gpu = {"GPU": 1} if workers.use_gpu else {}
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu,
                                     resources_per_worker={"CPU": workers.cpus_per_worker, **gpu}),
        torch_config=TorchConfig(backend="nccl" if workers.use_gpu else "gloo"),
        run_config=run_config(name, storage_uri, max_failures),
        datasets=datasets(),
    )
