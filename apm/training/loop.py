"""The per-worker training loop for distillation and fine-tuning (Ray Train, DDP).

Each epoch ends with a checkpoint reported through ``ray.train.report``: rank 0 writes the
optimiser state, the epoch/step counters and the metric history next to an APM checkpoint
(``model.pt``, loadable by :func:`apm.models.load_checkpoint`). A restarted worker group, or a
rerun of the same run name, continues from the latest one. A NaN or infinite loss stops the run
before its weights are reported (:mod:`apm.training.guard`).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from apm.core.precision import backbone_autocast, fp32, resolve_precision
from apm.models import APM, APMConfig, APMOutput, checkpoint_bytes, create_apm, input_normalisation
from apm.training.guard import LossGuard
from apm.training.losses import distillation_kl, get_loss
from apm.training.schedule import check_schedule, lr_factor

TASKS = ("distill", "finetune")
STATE_FILE, MODEL_FILE = "state.pt", "model.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored with every checkpoint."""

    task: str  # 'distill': semantic head learns the teacher; 'finetune': score distributions
    backbone: str = "efficientnet_lite0"
    init: str = "random"  # see apm.models.list_inits(): random, imagenet:PATH, teacher, checkpoint:URI
    loss: str = "kl"  # fine-tuning loss (apm.training.losses): kl, cdloss, euclidean; mse_mean = baseline
    semantic_weight: float = 0.0  # fine-tuning: weight of KL(teacher || semantic head)
    temperature: float = 2.0  # distillation temperature
    epochs: int = 5
    batch_size: int = 32  # per worker
    lr: float = 1e-3
    lr_schedule: str = "onecycle"  # apm.training.schedule: onecycle (warm-up, cosine) or constant
    # Batch-norm running statistics follow the last ~1/momentum batches. EfficientNet-Lite's
    # own 0.01 (TensorFlow's 0.99 decay) keeps 40% of ImageNet's statistics after 90 steps, so
    # a short fine-tuning on other photos ends with statistics that fit neither and an eval-mode
    # model far from the one trained; None keeps each backbone's own.
    bn_momentum: float | None = 0.1
    weight_decay: float = 1e-4
    image_size: int = 224
    num_workers: int = 2
    use_gpu: bool = False
    # apm.core.precision: 'bf16' runs the backbone under bfloat16 autocast, 'fp32' all in float32;
    # None: bf16 on GPUs, fp32 on CPUs. Heads and losses are float32 either way.
    precision: str | None = None
    # CPUs reserved per worker; leave some of the cluster to Ray Data's decoding, or the
    # pipeline that feeds the workers gets none and training waits forever.
    cpus_per_worker: float = 1.0
    shuffle: bool = True  # a new order of the photos every epoch (apm.training.data)
    seed: int = 0  # the shuffles' seed
    fail_marker: str | None = None  # tests: rank 0 raises once at fail_at_step, then creates it
    fail_at_step: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        APMConfig(backbone=self.backbone, head=self.head)
        check_schedule(self.lr_schedule)
        resolve_precision(self.precision, "cpu")  # an unknown precision: ValueError here
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 1:
            raise ValueError("epochs, batch_size and num_workers must be at least 1")

    @property
    def head(self) -> str:
        """The aesthetic head the loss trains: 'distribution', or 'mean' for mse_mean."""
        return get_loss(self.loss).head

    @property
    def needs_teacher(self) -> bool:
        return self.task == "distill" or self.semantic_weight > 0


class MixedPrecisionAPM(torch.nn.Module):
    """An APM's training forward under the precision policy (:mod:`apm.core.precision`): the
    backbone under ``precision``'s autocast, the heads on its features in float32, so that
    logits, softmaxes and losses never see bf16 (a bf16 softmax puts a few per cent into a
    loss and its gradients)."""

    def __init__(self, apm: APM, precision: str) -> None:
        super().__init__()
        self.apm, self.precision = apm, precision

    def forward(self, images: torch.Tensor) -> APMOutput:
        with backbone_autocast(images.device, self.precision):
            features = self.apm.backbone(images)
        return self.apm.heads(self.apm.dropout(fp32(features)))


def _semantic_loss(cfg: TrainConfig, output, batch) -> torch.Tensor:
    # The stored teacher probabilities are at T = 1; as log-probabilities they act as logits,
    # so the temperature softens teacher and student alike.
    teacher_logits = fp32(batch["teacher"]).clamp_min(1e-8).log()
    return distillation_kl(fp32(output.semantic_logits), teacher_logits, cfg.temperature,
                           teacher_is_logits=True)


def training_loss(cfg: TrainConfig, output: APMOutput, batch) -> torch.Tensor:
    """The loss of a batch: the task's, plus the weighted semantic term when fine-tuning."""
    if cfg.task == "distill":
        return _semantic_loss(cfg, output, batch)
    loss = get_loss(cfg.loss).on_output(output, batch["target"])
    if cfg.semantic_weight > 0:
        loss = loss + cfg.semantic_weight * _semantic_loss(cfg, output, batch)
    return loss


def initial_model(cfg: TrainConfig) -> APM:
    """The APM a run starts from, its unused head frozen: what every worker builds, and what
    the driver builds once before Ray so that a bad ``init`` is one line, not a failed run."""
    model = create_apm(APMConfig(backbone=cfg.backbone, head=cfg.head), cfg.init)
    if cfg.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.bn_momentum
    # Freeze the head no loss term reaches: DDP refuses parameters that get no gradient, and
    # weight decay would otherwise shrink them for nothing.
    unused = (model.aesthetic_head if cfg.task == "distill"
              else model.semantic_head if cfg.semantic_weight == 0 else None)
    if unused is not None:
        unused.requires_grad_(False)
    return model


def _restore(model, optimizer) -> tuple[int, int, list[dict]]:
    """Epoch to start from, global step, metric history: from the latest checkpoint, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0, []
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"] + 1, state["step"], list(state["history"])


def _maybe_fail(cfg: TrainConfig, step: int, rank: int) -> None:
    """Fault injection for tests: one crash of one worker at a chosen step."""
    if cfg.fail_marker and rank == 0 and step == cfg.fail_at_step and not os.path.exists(cfg.fail_marker):
        Path(cfg.fail_marker).touch()
        raise RuntimeError(f"injected failure at step {step}")


def train_loop_per_worker(config: dict) -> None:
    """``config``: ``{"train": asdict(TrainConfig), "steps_per_epoch": N}`` (the schedule's
    length; each worker's share of the rows divided by the batch size)."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config["train"])
    total_steps = cfg.epochs * config["steps_per_epoch"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    core = initial_model(cfg)
    if device.type == "cuda":
        core = core.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # one input size: cuDNN times its kernels once
    precision = resolve_precision(cfg.precision, device)
    # Moves ``core`` to the device, wraps it in DDP.
    model = ray.train.torch.prepare_model(MixedPrecisionAPM(core, precision))
    trainable = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Restore after the move, so the optimiser state lands on the parameters' device.
    start_epoch, step, history = _restore(core, optimizer)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1)
                 for v in input_normalisation(cfg.backbone))
    shard = ray.train.get_dataset_shard("train")
    guard = LossGuard(device, ray.train.get_context().get_experiment_name())

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        # The loss sum stays on the device: reading it per step would sync the host with the GPU.
        started, total, images = time.perf_counter(), torch.zeros((), device=device), 0
        # drop_last: a last batch of one photo would break batch norm in training mode.
        # Pinned host memory: the copy to the GPU overlaps the step before.
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, device=device,
                                              drop_last=True, pin_memory=device.type == "cuda"):
            x = (batch["image"].permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            # The batch arrives channels-last (HWC); DDP's gradient buckets expect the layout
            # of the model's parameters: channels-last on GPUs, contiguous on CPUs.
            x = x.contiguous(memory_format=torch.channels_last if device.type == "cuda"
                             else torch.contiguous_format)
            loss = training_loss(cfg, model(x), batch)
            guard.observe(loss, epoch, step + 1)  # before the step on CPUs; see LossGuard
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, step, total_steps)
            optimizer.step()
            step += 1
            total += loss.detach().float() * len(x)
            images += len(x)
            _maybe_fail(cfg, step, rank)
        guard.check(epoch)  # never report a checkpoint of weights a bad loss has touched
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch, "step": step, "loss": float(total) / max(images, 1),
                   "images": images, "seconds": seconds, "images_per_s": images / seconds}
        history.append(metrics)
        _report(cfg, core, optimizer, epoch, step, history, rank)


def _report(cfg, core, optimizer, epoch, step, history, rank) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "step": step, "history": history,
                        "config": asdict(cfg)}, Path(folder) / STATE_FILE)
            (Path(folder) / MODEL_FILE).write_bytes(checkpoint_bytes(core, cfg.image_size))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(history[-1], checkpoint=checkpoint)
