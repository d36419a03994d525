"""PFAGAN on Ray Train: the per-worker GAN loop (DDP for both networks) and the trainer.

Every batch is one discriminator step on real photos and generated ones with the same
conditions; every ``n_critic``-th batch is followed by a generator step and an update of the
generator's moving average. Each epoch ends with a checkpoint reported through
``ray.train.report``: rank 0 writes ``state.pt`` (G, D, the averaged G, both optimisers, the
epoch and step counters, the loss history) and ``generator.pt`` (the averaged G as a
:mod:`pfagan.checkpoint` file, what generation loads). A restarted worker group, or a rerun of
the same run name, continues from the latest checkpoint, as for the APM
(:mod:`apm.training.loop`), and a NaN or infinite loss of either network stops the run before
its weights are reported (:mod:`apm.training.guard`).
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from apm.core import storage
from apm.core.precision import backbone_autocast
from apm.training.guard import LossGuard
from apm.training.loop import STATE_FILE
from apm.training.ray_trainer import WorkerGroup, torch_trainer
from pfagan.checkpoint import generator_bytes
from pfagan.config import GANConfig
from pfagan.data import Conditioning, gan_dataset, to_model_range
from pfagan.discriminator import Discriminator
from pfagan.ema import averaged_copy, effective_decay, update_ema
from pfagan.generator import Generator
from pfagan.losses import d_hinge_loss, g_hinge_loss

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.pt"


@dataclass
class _Nets:
    """The networks of one worker: ``g`` and ``d`` are the DDP wrappers of ``g_core``/``d_core``."""

    g_core: Generator
    d_core: Discriminator
    g: nn.Module
    d: nn.Module
    ema: Generator
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer


def _build(cfg: GANConfig) -> _Nets:
    import ray.train.torch

    g_core, d_core = Generator(cfg), Discriminator(cfg)
    g = ray.train.torch.prepare_model(g_core)  # moves the core to the device, wraps it in DDP
    d = ray.train.torch.prepare_model(d_core)
    betas = (cfg.beta1, cfg.beta2)
    return _Nets(g_core, d_core, g, d, averaged_copy(g_core),
                 torch.optim.Adam(g_core.parameters(), lr=cfg.g_lr, betas=betas),
                 torch.optim.Adam(d_core.parameters(), lr=cfg.d_lr, betas=betas))


def _restore(nets: _Nets, categories: list[str]) -> tuple[int, int, int, list[dict]]:
    """Epoch to start from, D steps, G steps and the history: from the latest checkpoint, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0, 0, []
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
    # A rerun of a run name with other data or another architecture cannot continue it.
    stored = GANConfig(**state["config"])
    if stored.architecture() != nets.g_core.config.architecture() or state["categories"] != categories:
        raise ValueError(f"this run's checkpoint holds a GAN of {stored.describe()} "
                         f"({', '.join(state['categories'])}), not {nets.g_core.config.describe()} "
                         f"({', '.join(categories)}); start a new run name")
    nets.g_core.load_state_dict(state["generator"])
    nets.d_core.load_state_dict(state["discriminator"])
    nets.ema.load_state_dict(state["ema"])
    nets.g_opt.load_state_dict(state["g_optimizer"])
    nets.d_opt.load_state_dict(state["d_optimizer"])
    return state["epoch"] + 1, state["step"], state["g_step"], list(state["history"])


#: Called with each loss before its backward pass (the run's LossGuard).
Watch = Callable[[torch.Tensor], None]


def _d_step(nets: _Nets, cfg: GANConfig, real, category, hist, device, watch: Watch
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One discriminator step; its loss and mean logits on real and generated photos (0-d
    tensors on the device: reading them per step would sync the host with the GPU)."""
    n = len(real)
    z = torch.randn(n, cfg.z_dim, device=device)
    with torch.no_grad(), backbone_autocast(device):
        fake = nets.g_core(z, category, hist)
    # One forward over real and fake together: DDP expects one forward per backward, and the
    # discriminator has no batch norm that mixing the two could disturb.
    with backbone_autocast(device):
        logits = nets.d(torch.cat([real, fake.to(real.dtype)]), category.repeat(2),
                        hist.repeat(2, 1)).float()
    loss = d_hinge_loss(logits[:n], logits[n:])
    watch(loss)
    nets.d_opt.zero_grad(set_to_none=True)
    loss.backward()
    nets.d_opt.step()
    logits = logits.detach()
    return loss.detach(), logits[:n].mean(), logits[n:].mean()


def _g_step(nets: _Nets, cfg: GANConfig, category, hist, device, g_step: int, watch: Watch
            ) -> torch.Tensor:
    """One generator step and the moving-average update; its loss (a 0-d device tensor)."""
    z = torch.randn(len(category), cfg.z_dim, device=device)
    # The discriminator's core, not its DDP wrapper: its weights get no gradient here
    # (backward(inputs=...) stops at the generator), which a DDP wrapper would wait for.
    with backbone_autocast(device):
        logits = nets.d_core(nets.g(z, category, hist), category, hist).float()
    loss = g_hinge_loss(logits)
    watch(loss)
    nets.g_opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(nets.g_core.parameters()))
    nets.g_opt.step()
    update_ema(nets.ema, nets.g_core, effective_decay(cfg.ema_decay, g_step))
    return loss.detach()


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack(values).float().mean()) if values else float("nan")


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = GANConfig(**config["gan"])
    categories = config["categories"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    nets = _build(cfg)
    # Restore after the move, so the optimiser state lands on the parameters' device.
    start_epoch, step, g_step, history = _restore(nets, categories)
    shard = ray.train.get_dataset_shard("train")
    guard = LossGuard(device, ray.train.get_context().get_experiment_name())

    for epoch in range(start_epoch, cfg.epochs):
        nets.g.train()
        nets.d.train()
        started, images = time.perf_counter(), 0
        d_losses, g_losses, d_real, d_fake = [], [], [], []
        # drop_last: batch norm in training mode needs more than one photo per batch.
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, device=device, drop_last=True,
                                             pin_memory=device.type == "cuda"):
            real = to_model_range(batch["image"])
            category, hist = batch["category_id"].long(), batch["target"].float()
            watch = partial(guard.observe, epoch=epoch, step=step + 1)
            loss, on_real, on_fake = _d_step(nets, cfg, real, category, hist, device, watch)
            d_losses.append(loss)
            d_real.append(on_real)
            d_fake.append(on_fake)
            step += 1
            images += len(real)
            if step % cfg.n_critic == 0:
                g_step += 1
                g_losses.append(_g_step(nets, cfg, category, hist, device, g_step, watch))
        guard.check(epoch)  # never report a checkpoint of weights a bad loss has touched
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch, "step": step, "g_step": g_step, "d_loss": _mean(d_losses),
                   "g_loss": _mean(g_losses), "d_real": _mean(d_real), "d_fake": _mean(d_fake),
                   "images": images, "seconds": seconds, "images_per_s": images / seconds}
        history.append(metrics)
        if rank == 0:
            print(epoch_line(metrics), flush=True)
        _report(cfg, categories, nets, epoch, step, g_step, history, rank)


def epoch_line(metrics: dict) -> str:
    """One line of progress for an epoch's metrics (rank 0's)."""
    return ("epoch {epoch}: D loss {d_loss:.4f} (real {d_real:+.3f}, fake {d_fake:+.3f}), "
            "G loss {g_loss:.4f}, {step} D / {g_step} G steps, {images} images, "
            "{images_per_s:.1f} images/s (rank 0)").format(**metrics)


def _report(cfg, categories, nets: _Nets, epoch, step, g_step, history, rank) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save({"generator": nets.g_core.state_dict(), "discriminator": nets.d_core.state_dict(),
                        "ema": nets.ema.state_dict(), "g_optimizer": nets.g_opt.state_dict(),
                        "d_optimizer": nets.d_opt.state_dict(), "epoch": epoch, "step": step,
                        "g_step": g_step, "history": history, "config": asdict(cfg),
                        "categories": list(categories)}, Path(folder) / STATE_FILE)
            (Path(folder) / GENERATOR_FILE).write_bytes(generator_bytes(nets.ema, categories))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(history[-1], checkpoint=checkpoint)


def fit(cfg: GANConfig, conditioning: Conditioning, storage_uri: str, name: str, max_failures: int = 2,
        data: dict | None = None, force: bool = False):
    """Train on ``conditioning`` (from :func:`pfagan.data.load_conditioning`); returns Ray's Result.

    Rerunning with the same ``storage_uri`` and ``name`` resumes from the latest checkpoint,
    unless ``cfg``, the categories or ``data`` (where the photos came from) differ from what the
    run was started with (RunMismatchError); ``force`` starts it over.
    """
    if cfg.num_categories != len(conditioning.categories):
        raise ValueError(f"the config has {cfg.num_categories} categories, the data "
                         f"{len(conditioning.categories)}")
    categories = list(conditioning.categories)
    return torch_trainer(
        train_loop_per_worker, {"gan": asdict(cfg), "categories": categories},
        WorkerGroup(cfg.num_workers, cfg.use_gpu, cfg.cpus_per_worker), storage_uri=storage_uri,
        name=name, run_record={**asdict(cfg), "categories": categories, **(data or {})},
        datasets=lambda: {"train": gan_dataset(conditioning, cfg.resolution, cfg.augment,
                                               cfg.shuffle, cfg.seed)},
        max_failures=max_failures, force=force).fit()


def generator_uri(result, storage_uri: str) -> str:
    """Where the last checkpoint's generator file is, as a storage URI."""
    path = f"{result.checkpoint.path}/{GENERATOR_FILE}"
    return f"s3://{path}" if storage.is_s3(storage_uri) else path
