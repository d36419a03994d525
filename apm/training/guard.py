"""Training refuses to learn garbage: a NaN or infinite loss stops the run on every worker.

The check runs before any checkpoint of the weights it saw is reported, so a run's checkpoints
hold only weights trained on finite losses. A restart would replay the same divergence, so
:class:`StopOnNonFiniteLoss` tells Ray Train not to retry it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from ray.train import UserCallback

#: On GPUs the flag is read (a host sync) every this many steps and before every checkpoint;
#: the steps in between queue on the CUDA stream without waiting for the host.
GPU_CHECK_EVERY = 50

_NO_STEP = torch.iinfo(torch.int64).max


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite: the run stops instead of training on it."""


class LossGuard:
    """Watches the losses of one worker; :meth:`check` raises on every rank alike.

    On CPUs every step is checked before its backward pass and optimiser step (a scalar
    all-reduce, next to DDP's gradient all-reduce, costs nothing). On GPUs the first bad step
    is kept in a device tensor and read every ``GPU_CHECK_EVERY`` steps and before each
    checkpoint, so the host never waits on the GPU per step; the weights of the few steps
    after a bad one are never reported.
    """

    def __init__(self, device: torch.device, run: str) -> None:
        self.run = run
        self.every = GPU_CHECK_EVERY if device.type == "cuda" else 1
        self._first_bad = torch.full((), _NO_STEP, dtype=torch.int64, device=device)

    def observe(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Record ``loss`` of global ``step`` (1-based); check when a check is due."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._first_bad = torch.where(bad, self._first_bad.clamp(max=step), self._first_bad)
        if step % self.every == 0:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        """NonFiniteLossError on every rank if any rank saw a bad loss; all ranks must call it
        at the same steps (the all-reduce waits for all of them)."""
        first = self._first_bad.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        step = int(first)
        if step != _NO_STEP:
            raise NonFiniteLossError(
                f"run {self.run}: the loss became NaN or infinite at epoch {epoch}, step {step}; "
                f"training stopped before a checkpoint of these weights (try a lower learning "
                f"rate)")


def nonfinite_cause(err: BaseException | None) -> NonFiniteLossError | None:
    """The NonFiniteLossError behind ``err``: a worker's error, or what ``trainer.fit()`` raises
    (a ControllerError when :class:`StopOnNonFiniteLoss` ended the run)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, NonFiniteLossError):
            return err
        for inner in getattr(err, "worker_failures", {}).values():  # a WorkerGroupError
            found = nonfinite_cause(inner)
            if found is not None:
                return found
        err = getattr(err, "controller_failure", None) or err.__cause__ or err.__context__
    return None


class StopOnNonFiniteLoss(UserCallback):
    """Ray Train callback: a worker that stopped on a NaN loss ends the run, with no restart
    from the last checkpoint (``FailureConfig.max_failures`` is for crashes, which a restart
    can cure)."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        for err in worker_exceptions.values():
            found = nonfinite_cause(err)
            if found is not None:
                raise NonFiniteLossError(str(found))
