"""APM: one network that predicts an image's semantic class and its aesthetic score distribution.

After Murray & Gordo 2017, "A deep architecture for unified aesthetic prediction": a shared
backbone feeds two linear heads, a 1000-way semantic head (trained by distillation from an
ImageNet teacher, so the features keep their semantic content) and an aesthetic head. The
aesthetic head either predicts the full 10-bin score distribution (``head="distribution"``,
softmax over the bins) or, for the paper's mean-regression baseline, a single mean score
(``head="mean"``, trained with MSE).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apm.core.schemas import HIGH_SCORE_THRESHOLD, NUM_BINS
from apm.models.backbones import check_backbone, create_backbone


def _scores(dist: Tensor) -> Tensor:
    return torch.arange(1, dist.shape[-1] + 1, dtype=dist.dtype, device=dist.device)


def mean_score(dist: Tensor) -> Tensor:
    """Expected score of each distribution ``(..., bins)`` over scores 1..bins."""
    return (dist * _scores(dist)).sum(-1)


def std_score(dist: Tensor) -> Tensor:
    """Standard deviation of the score under each distribution."""
    centred = _scores(dist) - mean_score(dist).unsqueeze(-1)
    return (dist * centred**2).sum(-1).clamp_min(0).sqrt()


def is_high(dist: Tensor) -> Tensor:
    """Whether each distribution's mean score reaches ``HIGH_SCORE_THRESHOLD``."""
    return mean_score(dist) >= HIGH_SCORE_THRESHOLD


@dataclass(frozen=True)
class APMOutput:
    """What :meth:`APM.forward` returns.

    ``mean`` is always set (the expectation of ``dist`` for the distribution head), so code
    that only needs mean scores works with both heads; ``dist_logits`` is None for the mean
    head. Losses take ``dist_logits`` rather than ``dist`` so that they can use log-softmax.
    """

    semantic_logits: Tensor  # (N, num_classes)
    mean: Tensor  # (N,)
    dist_logits: Tensor | None = None  # (N, num_bins)

    @property
    def dist(self) -> Tensor | None:
        """Predicted score distribution ``(N, num_bins)``, rows summing to 1."""
        return None if self.dist_logits is None else self.dist_logits.softmax(-1)


def _no_init(linear: nn.Linear, num_bins: int) -> None:
    """Keep PyTorch's default initialisation (near-uniform distributions to start with)."""


def _centre_bias(linear: nn.Linear, num_bins: int) -> None:
    """Start the regression at the middle of the scale.

    From a zero start every early prediction is ~5 points off, and the large gradients that
    follow disturb a pretrained backbone.
    """
    nn.init.constant_(linear.bias, (1 + num_bins) / 2)


@dataclass(frozen=True)
class Head:
    """An aesthetic head: its outputs, their initialisation, and how they map to ``APMOutput``."""

    outputs: Callable[[int], int]  # num_bins -> number of linear outputs
    init: Callable[[nn.Linear, int], None]
    to_output: Callable[[Tensor, Tensor], APMOutput]  # (semantic_logits, raw) -> output
    loss_input: Callable[[APMOutput], Tensor | None]  # what this head's losses take


HEADS: dict[str, Head] = {
    "distribution": Head(
        outputs=lambda num_bins: num_bins,
        init=_no_init,
        to_output=lambda semantic, raw: APMOutput(semantic, mean_score(raw.softmax(-1)), raw),
        loss_input=lambda output: output.dist_logits,
    ),
    "mean": Head(
        outputs=lambda num_bins: 1,
        init=_centre_bias,
        to_output=lambda semantic, raw: APMOutput(semantic, raw.squeeze(-1)),
        loss_input=lambda output: output.mean,
    ),
}


@dataclass(frozen=True)
class APMConfig:
    """The architecture of an APM; stored in checkpoints as plain data (``dataclasses.asdict``)."""

    backbone: str = "efficientnet_lite0"
    num_classes: int = 1000
    num_bins: int = NUM_BINS
    dropout: float = 0.2
    head: str = "distribution"

    def __post_init__(self) -> None:
        check_backbone(self.backbone)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.num_classes < 1 or self.num_bins < 2:
            raise ValueError(f"need num_classes >= 1 and num_bins >= 2, "
                             f"got {self.num_classes} and {self.num_bins}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def describe(self) -> str:
        """One-line summary for error messages, e.g. ``resnet18 (head=distribution, ...)``."""
        return (f"{self.backbone} (head={self.head}, num_classes={self.num_classes}, "
                f"num_bins={self.num_bins}, dropout={self.dropout})")


class APM(nn.Module):
    """Shared backbone, dropout, then a semantic and an aesthetic linear head."""

    def __init__(self, config: APMConfig) -> None:
        super().__init__()
        self.config = config
        backbone = create_backbone(config.backbone)
        self.classifier_prefix = backbone.classifier_prefix
        self.backbone = backbone.features
        self.dropout = nn.Dropout(config.dropout)
        self.semantic_head = nn.Linear(backbone.feature_dim, config.num_classes)
        head = HEADS[config.head]
        self.aesthetic_head = nn.Linear(backbone.feature_dim, head.outputs(config.num_bins))
        head.init(self.aesthetic_head, config.num_bins)

    def forward(self, images: Tensor) -> APMOutput:
        return self.heads(self.dropout(self.backbone(images)))

    def heads(self, features: Tensor) -> APMOutput:
        """Both heads on pooled backbone features (scoring keeps the features as embeddings)."""
        return HEADS[self.config.head].to_output(self.semantic_head(features), self.aesthetic_head(features))
