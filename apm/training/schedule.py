"""Learning-rate schedules, a factor of the configured rate per optimiser step.

``onecycle`` (the default): a linear warm-up over the first ``WARMUP_SHARE`` of the steps from
``1 / WARMUP_DIVISOR`` of the rate, then a cosine down to zero at the last step. A short
fine-tuning of a pretrained backbone gains most from it: the warm-up keeps the first large
gradients of a fresh head from disturbing the pretrained features, the decay settles the
weights instead of leaving them where the last noisy steps put them. ``constant``: the rate
as given. The factor depends only on the step, which checkpoints keep, so a resumed run
continues the schedule where it stopped.
"""
from __future__ import annotations

import math

WARMUP_SHARE = 0.15
WARMUP_DIVISOR = 25.0

SCHEDULES = ("onecycle", "constant")


def check_schedule(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The factor of the learning rate at optimiser step ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(step, total_steps - 1) / (total_steps - 1)
    if progress < WARMUP_SHARE:
        start = 1.0 / WARMUP_DIVISOR
        return start + (1.0 - start) * progress / WARMUP_SHARE
    return 0.5 * (1.0 + math.cos(math.pi * (progress - WARMUP_SHARE) / (1.0 - WARMUP_SHARE)))
