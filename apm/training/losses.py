"""Training losses for APM's aesthetic head, and the distillation loss for its semantic head.

The aesthetic losses are registered by name (:func:`register_loss`, like the backbones), so a
training config names its loss and the paper's comparisons are a loop over ``LOSSES``. Each
takes the aesthetic head's raw output and the target distribution, the normalised vote
histogram ``(N, bins)``, and returns the batch mean:

``kl``         KL(target || predicted) over the bins, the paper's loss.
``cdloss``     sqrt(mean_k (CDF_target(k) - CDF_pred(k))^2), NIMA's EMD with r = 2: unlike the
               bin-wise losses it knows that a vote for 9 is closer to 8 than to 2.
``euclidean``  ||target - predicted||_2 between the histograms.
``mse_mean``   (predicted mean - target mean)^2, for the mean-regression baseline.

The distribution losses take the head's logits, not its softmax, so that ``kl`` can use
``log_softmax``, which stays finite where a probability underflows to 0; ``Loss.head`` says
which head a loss trains and :meth:`Loss.on_output` picks the matching field of an
``APMOutput``. Square roots are taken of values floored at ``_SQRT_FLOOR``: the derivative of
sqrt is infinite at 0, which a perfect prediction reaches, and would put NaN in the gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from apm.core.registry import Registry
from apm.models.apm import HEADS, APMOutput, mean_score

# Shifts a root-loss by at most 1e-6 (only where it is below that) and keeps its gradient finite.
_SQRT_FLOOR = 1e-12

LossFn = Callable[[Tensor, Tensor], Tensor]  # (head output, target distribution) -> scalar


@dataclass(frozen=True)
class Loss:
    """A registered loss: the function and the aesthetic head it trains (a key of ``HEADS``)."""

    fn: LossFn
    head: str

    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self.fn(prediction, target)

    def on_output(self, output: APMOutput, target: Tensor) -> Tensor:
        """The loss of an ``APMOutput``: its distribution logits or its mean, by ``head``."""
        prediction = HEADS[self.head].loss_input(output)
        if prediction is None:
            raise ValueError(f"a loss for the {self.head!r} head was given the output of another head")
        return self.fn(prediction, target)


LOSSES: Registry[Loss] = Registry("loss")


def register_loss(name: str, head: str) -> Callable[[LossFn], LossFn]:
    """Decorator: register ``fn`` as loss ``name`` for aesthetic head ``head``."""

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")

    return LOSSES.decorator(name, lambda fn: Loss(fn, head))


def get_loss(name: str) -> Loss:
    """The registered loss ``name``; ValueError listing the choices otherwise."""
    return LOSSES[name]


def _safe_sqrt(x: Tensor) -> Tensor:
    return x.clamp_min(_SQRT_FLOOR).sqrt()


def _kl_rows(target: Tensor, log_pred: Tensor) -> Tensor:
    """KL(target || pred) per row; ``xlogy`` makes empty target bins contribute exactly 0."""
    return (torch.xlogy(target, target) - target * log_pred).sum(-1)


@register_loss("kl", head="distribution")
def kl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean KL(target || softmax(logits))."""
    return _kl_rows(target, F.log_softmax(logits, dim=-1)).mean()


@register_loss("cdloss", head="distribution")
def cd_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean r=2 distance between the cumulative distributions (mean over all bins, as NIMA)."""
    gap = target.cumsum(-1) - logits.softmax(-1).cumsum(-1)
    return _safe_sqrt(gap.pow(2).mean(-1)).mean()


@register_loss("euclidean", head="distribution")
def euclidean_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean L2 distance between the predicted and the target histogram."""
    return _safe_sqrt((logits.softmax(-1) - target).pow(2).sum(-1)).mean()


@register_loss("mse_mean", head="mean")
def mse_mean_loss(mean: Tensor, target: Tensor) -> Tensor:
    """MSE between the predicted mean score ``(N,)`` and the target distribution's mean."""
    return F.mse_loss(mean, mean_score(target))


def distillation_kl(student_logits: Tensor, teacher: Tensor, temperature: float = 1.0, *,
                    teacher_is_logits: bool = False) -> Tensor:
    """Hinton et al.'s distillation loss: T^2 * mean KL(teacher_T || softmax(student_logits / T)).

    The semantic head learns the ImageNet teacher's soft predictions. ``teacher`` is either the
    teacher's probabilities, used as they are (soft targets stored with the data were already
    computed at the temperature the caller chose), or, with ``teacher_is_logits``, its logits,
    which are softened by the same temperature as the student's. To soften stored T=1
    probabilities, pass their logarithm with ``teacher_is_logits``: softmax(log p / T) is
    exactly softmax(z / T) of the teacher's logits z. The T^2 factor keeps the gradient's size
    independent of T (the soft gradients scale as 1/T^2), so the weight of this
    loss against the aesthetic loss need not change with T.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    if teacher_is_logits:
        log_teacher = F.log_softmax(teacher / temperature, dim=-1)
        rows = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    else:
        rows = _kl_rows(teacher, log_student)
    return temperature**2 * rows.mean()
