"""Hinge losses (Lim & Ye 2017; as in SNGAN, the projection discriminator and BigGAN)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def d_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """mean(max(0, 1 - D(real))) + mean(max(0, 1 + D(fake)))."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: Tensor) -> Tensor:
    """-mean(D(fake))."""
    return -fake_logits.mean()
