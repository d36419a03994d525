"""How good a generator is, measured with the APM and a classifier trained on real photos.

* category control: the share of samples a classifier trained on real photos assigns to the
  category they were conditioned on (chance = 1 / categories), next to its accuracy on real
  held-out photos;
* aesthetic control: Spearman's rho between the conditioning mean score and the APM's predicted
  mean of the samples, next to the APM's own rho on real held-out photos (its ceiling);
* realism: the Fréchet distance between APM backbone features of samples and of real held-out
  photos (Inception weights cannot be had offline, so not FID's network), bracketed by real
  training photos (the floor) and an untrained generator (a ceiling).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from apm.data.decode import DEFAULT_LIMITS, DecodeError, decode_image, read_image_bytes
from pfagan.judges import APMJudge, CategoryClassifier, fit_classifier, frechet_distance


def real_images(uris: list[str], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, R, R, 3) photos as the GAN saw them (short side R, centre square) and the
    indices of ``uris`` they came from; unreadable photos are left out, by index."""
    images, kept = [], []
    for i, uri in enumerate(uris):
        try:
            rgb = decode_image(read_image_bytes(uri, DEFAULT_LIMITS), size=resolution,
                               crop=resolution).rgb
        except (DecodeError, OSError):
            continue
        images.append(rgb)
        kept.append(i)
    return np.stack(images), np.asarray(kept, np.int64)


def classifier_on_real_photos(judge: APMJudge, uris: list[str], labels: np.ndarray,
                              categories: tuple[str, ...], resolution: int) -> CategoryClassifier:
    """The category classifier, fitted on real photos seen as the GAN sees them (short side
    ``resolution``, centre square) through ``judge``'s APM features."""
    images, kept = real_images(uris, resolution)
    return fit_classifier(judge, judge(images).features, np.asarray(labels)[kept], categories)


@dataclass(frozen=True)
class GANScores:
    samples: int
    categories: int
    sample_accuracy: float  # classifier on samples vs their conditioning category
    real_accuracy: float  # classifier on real held-out photos
    rho_samples: float  # Spearman(condition mean, APM mean of samples)
    rho_real: float  # Spearman(true mean, APM mean) on real held-out photos
    mean_by_condition: dict[float, float]  # condition mean -> average APM mean of its samples
    fd_samples: float  # Fréchet distance samples <-> real held-out
    fd_real: float  # real training photos <-> real held-out (the floor)
    fd_untrained: float | None  # untrained generator <-> real held-out (a ceiling)

    def table(self) -> list[str]:
        chance = 1 / self.categories
        rows = [
            "| measure | generated samples | reference |",
            "|---|---|---|",
            f"| category accuracy (classifier trained on real photos) | **{self.sample_accuracy:.1%}** "
            f"| real held-out photos {self.real_accuracy:.1%}; chance {chance:.1%} |",
            f"| Spearman ρ (conditioning mean vs APM mean) | **{self.rho_samples:.3f}** "
            f"| APM on real held-out photos (true vs predicted mean) {self.rho_real:.3f} |",
            f"| Fréchet distance to real held-out photos (APM features) | **{self.fd_samples:.2f}** "
            f"| real training photos {self.fd_real:.2f}"
            + (f"; untrained generator {self.fd_untrained:.2f}" if self.fd_untrained is not None else "")
            + " |",
        ]
        return rows


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; NaN when either side is constant (rho is undefined there)."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def score_generator(judge: APMJudge, classifier: CategoryClassifier, samples: np.ndarray,
                    sample_categories: np.ndarray, sample_means: np.ndarray,
                    real_test: np.ndarray, test_categories: np.ndarray, test_means: np.ndarray,
                    real_train_features: np.ndarray,
                    untrained_samples: np.ndarray | None = None) -> GANScores:
    """The measures of the module docstring for generated ``samples`` (uint8 NHWC)."""
    fake, real = judge(samples), judge(real_test)
    fake_pred = classifier.probabilities(fake.features).argmax(axis=1)
    real_pred = classifier.probabilities(real.features).argmax(axis=1)
    by_condition = {float(m): float(fake.mean[np.isclose(sample_means, m)].mean())
                    for m in np.unique(np.round(sample_means, 6))}
    return GANScores(
        samples=len(samples), categories=len(classifier.categories),
        sample_accuracy=float(np.mean(fake_pred == sample_categories)),
        real_accuracy=float(np.mean(real_pred == test_categories)),
        rho_samples=spearman(sample_means, fake.mean),
        rho_real=spearman(test_means, real.mean),
        mean_by_condition=by_condition,
        fd_samples=frechet_distance(fake.features, real.features),
        fd_real=frechet_distance(real_train_features, real.features),
        fd_untrained=(frechet_distance(judge(untrained_samples).features, real.features)
                      if untrained_samples is not None else None),
    )
