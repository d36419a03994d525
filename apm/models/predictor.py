"""The one APM forward pass at inference: scoring, evaluation, explanations and the PFAGAN judge.

:class:`Predictor` builds the model of a :class:`~apm.models.spec.ModelSpec` once (batch norm
folded, on its device, channels-last on GPUs), normalises uint8 crops as the model was trained,
runs the backbone under the precision policy of :mod:`apm.core.precision` and everything after it
in float32, so that what evaluation measures is exactly what scoring writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from apm.core.precision import backbone_autocast, check_device, fp32, resolve_precision
from apm.core.schemas import NUM_BINS, TEACHER_TOP_K
from apm.models.apm import APMOutput, std_score
from apm.models.fusion import optimize_for_inference
from apm.models.spec import ModelSpec
from apm.models.transforms import image_transform
from apm.votes.metrics import mean_scores


@dataclass(frozen=True)
class Prediction:
    """Per crop: the mean score, and for a distribution head the distribution and its std (NaN
    for the mean head); the semantic head's top-k ids and probabilities; the pooled backbone
    features when asked for. Float32, but for the mean (float64)."""

    mean: np.ndarray  # (N,)
    std: np.ndarray  # (N,)
    dist: np.ndarray  # (N, NUM_BINS)
    top_ids: np.ndarray  # (N, k) int32
    top_probs: np.ndarray  # (N, k)
    embedding: np.ndarray | None = None  # (N, D)


class Predictor:
    """A model spec's model, ready to score crops at ``image_size`` (default: its trained crop)."""

    def __init__(self, spec: str | ModelSpec, image_size: int | None = None, device: str = "cpu",
                 precision: str | None = None) -> None:
        self.spec = ModelSpec.resolve(spec)
        self.crop = self.spec.crop(image_size)
        self.device = torch.device(check_device(device))
        self.precision = resolve_precision(precision, self.device)
        self.model = optimize_for_inference(self.spec.load(), self.crop, self.device)
        self.model.requires_grad_(False)  # gradients, if any, are the input's (explanations)
        self.transform = image_transform(self.spec.architecture.backbone, self.crop)

    @property
    def feature_dim(self) -> int:
        return self.model.semantic_head.in_features

    def forward(self, x: Tensor) -> tuple[Tensor, APMOutput]:
        """Float32 features and heads of a normalised (N, 3, H, W) batch on the device; the
        backbone under the precision's autocast, the heads in float32. Differentiable."""
        with backbone_autocast(self.device, self.precision):
            features = self.model.backbone(x)
        features = fp32(features)
        return features, self.model.heads(features)

    def __call__(self, x: Tensor) -> APMOutput:
        """The heads' outputs of a normalised batch, as ``APM.__call__`` gives them (so that
        explanations attack exactly what is scored)."""
        return self.forward(x)[1]

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, embedding: bool = False) -> Prediction:
        """Predictions for uint8 (N, crop, crop, 3) crops."""
        x = self.transform.normalize(torch.from_numpy(np.ascontiguousarray(crops)).to(self.device))
        features, output = self.forward(x)
        n = len(crops)
        probs, ids = output.semantic_logits.softmax(-1).topk(TEACHER_TOP_K, dim=-1)
        if output.dist is None:
            mean = output.mean.cpu().numpy().astype(np.float64)
            dist = np.full((n, NUM_BINS), np.nan, np.float32)
            std = np.full(n, np.nan, np.float32)
        else:
            dist = output.dist.cpu().numpy()
            # The mean of the float32 distribution as stored, as the metrics compute it from
            # a stored distribution, so that evaluation, scoring and the metrics agree.
            mean = mean_scores(dist.astype(np.float64))
            std = std_score(output.dist).cpu().numpy()
        return Prediction(mean=mean, std=std, dist=dist, top_ids=ids.int().cpu().numpy(),
                          top_probs=probs.cpu().numpy(),
                          embedding=features.cpu().numpy() if embedding else None)
