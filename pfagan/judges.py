"""What judges generated samples: an APM (score distribution, features) and a category classifier.

Samples and the real photos they are compared with go through the same path: an image at the
GAN's resolution is resized and centre-cropped to the APM's crop exactly as scoring does
(:func:`apm.models.transforms.image_transform`), then runs through scoring's predictor. The
classifier is a multinomial logistic regression on the APM's pooled backbone features of real
photos, so it needs no training of a network; it is stored as a small torch file that names
its APM.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from apm.core import storage
from apm.core.schemas import NUM_BINS
from apm.models import ModelSpec
from apm.models.checkpoint import read_format
from apm.models.predictor import Predictor

CLASSIFIER_FORMAT = "pfagan-category-classifier/1"


@dataclass(frozen=True)
class Judged:
    features: np.ndarray  # (N, D) float32: the APM backbone's pooled features
    dist: np.ndarray  # (N, NUM_BINS) float32 (NaN for a mean-regression APM)
    mean: np.ndarray  # (N,) float32


class APMJudge:
    """An APM loaded once (scoring's :class:`~apm.models.predictor.Predictor`), scoring uint8
    (N, H, W, 3) images of any size in batches."""

    def __init__(self, model: str | ModelSpec, image_size: int | None = None,
                 batch_size: int = 64) -> None:
        self.predictor = Predictor(model, image_size)
        self.model_uri = self.predictor.spec.spec
        self.crop = self.predictor.crop
        self.transform = self.predictor.transform
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> Judged:
        features, dists, means = [], [], []
        for start in range(0, len(images), self.batch_size):
            crops = np.stack([self.transform.crop_image(im) for im in images[start:start + self.batch_size]])
            p = self.predictor.predict(crops, embedding=True)
            features.append(p.embedding)
            means.append(p.mean.astype(np.float32))
            dists.append(p.dist)
        if not features:
            return Judged(np.zeros((0, self.predictor.feature_dim), np.float32),
                          np.zeros((0, NUM_BINS), np.float32), np.zeros(0, np.float32))
        return Judged(np.concatenate(features), np.concatenate(dists), np.concatenate(means))


@dataclass(frozen=True)
class CategoryClassifier:
    """Softmax regression on standardised APM features: p(category | photo)."""

    apm_model: str  # the APM whose features it reads
    image_size: int  # the APM crop
    categories: tuple[str, ...]
    centre: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (C, D)
    intercept: np.ndarray  # (C,)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = ((features - self.centre) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"format": CLASSIFIER_FORMAT, "apm_model": self.apm_model,
                    "image_size": self.image_size, "categories": list(self.categories),
                    **{k: torch.from_numpy(np.asarray(getattr(self, k), np.float32))
                       for k in ("centre", "scale", "coef", "intercept")}}, buffer)
        return buffer.getvalue()

    def save(self, uri: str) -> None:
        storage.write_bytes(uri, self.to_bytes())

    @classmethod
    def load(cls, uri: str) -> CategoryClassifier:
        payload = read_format(uri, CLASSIFIER_FORMAT, "a category classifier file")
        return cls(payload["apm_model"], int(payload["image_size"]), tuple(payload["categories"]),
                   *(payload[k].numpy() for k in ("centre", "scale", "coef", "intercept")))


def fit_classifier(judge: APMJudge, features: np.ndarray, labels: np.ndarray,
                   categories: tuple[str, ...], c: float = 1.0) -> CategoryClassifier:
    """Fit on real photos' features (``labels`` index ``categories``)."""
    from sklearn.linear_model import LogisticRegression

    centre = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError("the classifier needs photos of at least two categories")
    model = LogisticRegression(C=c, max_iter=2000).fit((features - centre) / scale, labels)
    coef = np.zeros((len(categories), features.shape[1]), np.float64)
    # Categories without photos get -inf-like logits, so they are never predicted.
    intercept = np.full(len(categories), -1e4, np.float64)
    coef[model.classes_] = model.coef_ if len(present) > 2 else np.vstack([-model.coef_, model.coef_]) / 2
    intercept[model.classes_] = (model.intercept_ if len(present) > 2
                                 else np.array([-model.intercept_[0], model.intercept_[0]]) / 2)
    return CategoryClassifier(judge.model_uri, judge.crop, categories, centre, scale, coef, intercept)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula)."""
    if min(len(a), len(b)) < 2:
        raise ValueError("the Fréchet distance needs at least two samples on each side")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real  # imaginary parts are numerical noise of a near-singular product
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
