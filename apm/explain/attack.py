"""The bounded perturbation that lowers or raises an APM's predicted mean score (PGD).

The attack works on the model's input crop in pixel space, ``x`` in [0, 1] (the uint8 crop
divided by 255). It looks for a perturbation ``delta`` with

* ``||delta|| <= budget`` in the L∞ norm (every channel of every pixel moves by at most
  ``budget``) or the L2 norm (over all channels and pixels of one crop), in [0, 1] units;
* ``0 <= x + delta <= 1``, so the modified crop is still an image;

that lowers (``direction='lower'``) or raises (``'raise'``) the predicted mean score, optionally
minus ``tv_weight`` times the total variation of ``delta`` (a smoothness prior: the mean
absolute difference between neighbouring pixels of the perturbation).

It is projected gradient descent (Madry et al. 2018) with signed steps: ``steps`` iterations of
``delta += step_size * sign(grad)`` (L∞), or of a step along the gradient normalised per crop
(L2), each followed by the projection onto the ball and the clamp to the valid range. The
clamp only ever shrinks a component towards 0, so it keeps the budget. The default step size is
``2.5 * budget / steps``, enough to reach the ball's surface from its centre. The model stays
in eval mode (dropout off, batch-norm running statistics) and gradients are taken with respect
to the input only (the backbone under the scoring precision, the heads in float32). The result
is the last iterate, scored once more.

L2 is the default because its steps follow the gradient's size as well as its sign, so the
change concentrates where the score is sensitive. Signed L∞ steps move almost every component
to ±budget, so the size of an L∞ change is nearly the same everywhere (its heatmap mostly
shows where the pixel range clamps it and where the gradient's sign keeps flipping).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from apm.models import APM, APMOutput
from apm.models.transforms import ImageTransform

#: What an attack moves: an APM, or the scoring predictor (normalised batch -> outputs).
Scorer = Callable[[Tensor], APMOutput]

#: The sign of the score change each direction asks for.
DIRECTIONS: dict[str, int] = {"lower": -1, "raise": 1}
NORMS = ("l2", "linf")


@dataclass(frozen=True)
class AttackConfig:
    """How hard the image may be changed; invalid values raise ValueError naming the option."""

    budget: float  # radius of the ball, in [0, 1] pixel units
    steps: int = 10
    norm: str = "l2"  # 'l2' | 'linf'
    step_size: float | None = None  # default 2.5 * budget / steps
    tv_weight: float = 0.0  # weight of the total-variation penalty on the perturbation

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"--norm: unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"--budget must be a positive number, got {self.budget}")
        if self.norm == "linf" and self.budget > 1:
            raise ValueError(f"--budget {self.budget} exceeds 1, the whole pixel range, for the "
                             "linf norm (pixels are in [0, 1]; e.g. 8/255 = 0.031)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"--steps must be a whole number of at least 1, got {self.steps!r}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"--step-size must be a positive number, got {self.step_size}")
        if not (math.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise ValueError(f"--tv-weight must be a number >= 0, got {self.tv_weight}")

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.budget / self.steps


@dataclass(frozen=True)
class Attack:
    """The outcome for a batch of crops."""

    delta: Tensor  # (N, H, W, 3) float32, the perturbation in [0, 1] pixel units
    before: Tensor  # (N,) predicted mean score of the crops
    after: Tensor  # (N,) predicted mean score of the crops + delta


def predicted_mean(model: APM | Scorer, transform: ImageTransform, pixels: Tensor) -> Tensor:
    """The model's mean score of float (N, H, W, 3) crops in [0, 1], differentiable."""
    return model(transform.normalize(pixels * 255)).mean


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """(N,) size of each crop's perturbation in ``norm``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def total_variation(delta: Tensor) -> Tensor:
    """(N,) mean absolute difference between vertical and horizontal neighbours of (N, H, W, C)."""
    dy = (delta[:, 1:] - delta[:, :-1]).abs().flatten(1).mean(dim=1)
    dx = (delta[:, :, 1:] - delta[:, :, :-1]).abs().flatten(1).mean(dim=1)
    return dy + dx


def _ascent(grad: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return grad.sign()
    length = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / length.view(-1, 1, 1, 1)


def _project(delta: Tensor, pixels: Tensor, config: AttackConfig) -> Tensor:
    if config.norm == "linf":
        delta = delta.clamp(-config.budget, config.budget)
    else:
        scale = (config.budget / perturbation_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, 1, 1, 1)
    return torch.clamp(delta, min=-pixels, max=1 - pixels)  # never grows a component


def attack(model: APM | Scorer, transform: ImageTransform, crops: Tensor, config: AttackConfig,
           direction: str) -> Attack:
    """Perturb uint8 (N, H, W, 3) ``crops`` (on the model's device) to move their score.

    ``model`` must be in eval mode; its parameters may be frozen (only the input's gradient is
    taken).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    sign = DIRECTIONS[direction]
    pixels = crops.float() / 255
    delta = torch.zeros_like(pixels, requires_grad=True)
    before = None
    for _ in range(config.steps):
        score = predicted_mean(model, transform, pixels + delta)
        if before is None:
            before = score.detach()
        objective = sign * score.sum()
        if config.tv_weight:
            objective = objective - config.tv_weight * total_variation(delta).sum()
        (grad,) = torch.autograd.grad(objective, delta)
        with torch.no_grad():
            delta = _project(delta + config.step * _ascent(grad, config.norm), pixels, config)
        delta.requires_grad_(True)
    with torch.no_grad():
        after = predicted_mean(model, transform, pixels + delta)
    return Attack(delta=delta.detach(), before=before, after=after)
