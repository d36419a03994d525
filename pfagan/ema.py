"""An exponential moving average of the generator's weights, which gives better samples than
the weights of any single step (Yazici et al. 2019; BigGAN)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def averaged_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to average into, in eval mode (it only ever samples)."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def effective_decay(decay: float, updates: int) -> float:
    """``decay``, lowered for the first updates ((1 + n) / (10 + n)) so that the average soon
    forgets the random start; short CPU runs would otherwise average mostly noise."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for the parameters; buffers (batch-norm running
    statistics) are copied, as they are averages already."""
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current.detach(), 1.0 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)
