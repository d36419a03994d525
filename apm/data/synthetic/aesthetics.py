"""The known truth of the synthetic AVA: attributes -> aesthetic latent -> raters' votes.

Latent. Each attribute contributes a penalty or bonus whose ideal value and weight depend on
the category, so content matters: a dark plain backdrop lifts a flower or a portrait and sinks
a beach or a meadow; horizon tilt hurts landscapes far more than a cat close-up; a portrait may
be centred while a lake should follow the rule of thirds. A per-image "appeal" term stands for
everything the attributes do not capture. The sum is mapped affinely to a standard-normal scale
(constants calibrated on the sampling distribution, so the mapping does not depend on N).

Votes. Rater ``r`` of image ``i`` perceives ``z = latent_i + e``, ``e ~ N(0, s_i^2)`` (``s_i``
varies per image: some photos divide opinion), and gives the score
``round(1 + 9 * Phi((mu + sigma_mu * z) / spread))``, clipped to 1..10. The bounded map compresses
opinions near both ends of the scale, which yields AVA's floor and ceiling effects (right-skewed
histograms for poor photos, left-skewed for excellent ones). Since raters are independent, a
histogram is a multinomial draw from the per-image rating pmf, computed in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from apm.core.schemas import NUM_BINS
from apm.data.synthetic.attributes import ATTRIBUTE_NAMES, CATEGORIES, Attributes

# --- attribute sampling -----------------------------------------------------------------------


def sample_attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Attributes of ``n`` photos, column-wise. Most photos are decent; some are badly off."""
    clip = np.clip
    return {
        "blur": clip(rng.beta(1.1, 4.0, n), 0, 1),
        "exposure": clip(rng.normal(0, 0.55, n), -1.5, 1.5),
        "contrast": clip(np.exp(rng.normal(0, 0.22, n)), 0.4, 1.6),
        "saturation": clip(np.exp(rng.normal(0.05, 0.3, n)), 0.0, 1.8),
        "harmony": rng.beta(2.0, 1.6, n),
        "noise": clip(rng.gamma(1.2, 0.025, n), 0, 0.15),
        "tilt": clip(rng.normal(0, 1, n) * np.where(rng.random(n) < 0.25, 7.0, 1.5), -15, 15),
        "subject_x": rng.uniform(0.15, 0.85, n),
        "subject_y": rng.uniform(0.2, 0.8, n),
        "subject_size": rng.uniform(0.15, 0.7, n),
        "clutter": rng.beta(1.0, 2.5, n),
        "background_darkness": np.where(rng.random(n) < 0.3, rng.uniform(0.6, 1.0, n),
                                        rng.uniform(0.0, 0.3, n)),
    }


def thirds_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    points = np.array([1 / 3, 2 / 3])
    dx = np.min(np.abs(x[:, None] - points), axis=1)
    dy = np.min(np.abs(y[:, None] - points), axis=1)
    return np.hypot(dx, dy)


def attributes_at(columns: dict[str, np.ndarray], i: int) -> Attributes:
    return Attributes(**{name: float(columns[name][i]) for name in ATTRIBUTE_NAMES})


# --- category-dependent preferences -------------------------------------------------------------


@dataclass(frozen=True)
class CategoryTaste:
    """How one category's raters judge the attributes (weights are penalties per unit)."""

    prior: float  # how much raters like the subject matter itself
    ideal_exposure: float  # in stops; sunsets look best a little under-exposed
    ideal_saturation: float
    ideal_size: float  # subject height fraction that looks best
    tilt_weight: float  # per 10 degrees; strong where a horizon is visible
    thirds_weight: float  # per unit distance to the nearest thirds point
    clutter_weight: float
    dark_background: float  # effect of a fully dark plain backdrop (+ suits, - hurts)


TASTES: dict[str, CategoryTaste] = {
    "barn": CategoryTaste(-0.15, 0.0, 1.1, 0.45, 1.2, 1.5, 0.8, -0.6),
    "beach": CategoryTaste(0.05, 0.3, 1.2, 0.30, 1.8, 1.5, 1.0, -1.2),
    "bird": CategoryTaste(0.15, 0.0, 1.0, 0.40, 0.4, 2.0, 1.4, 0.3),
    "cat": CategoryTaste(0.0, 0.0, 1.0, 0.55, 0.3, 1.0, 1.0, 0.5),
    "flower": CategoryTaste(0.1, -0.2, 1.35, 0.60, 0.2, 0.8, 1.5, 1.2),
    "lake": CategoryTaste(0.2, 0.0, 1.1, 0.30, 2.0, 2.0, 0.8, -0.9),
    "meadow": CategoryTaste(-0.1, 0.2, 1.2, 0.35, 1.5, 1.5, 0.4, -1.0),
    "mountain": CategoryTaste(0.25, -0.1, 1.0, 0.50, 1.5, 1.2, 0.6, -0.8),
    "portrait": CategoryTaste(0.0, 0.2, 0.85, 0.60, 0.6, 0.3, 1.6, 0.9),
    "sunset": CategoryTaste(0.3, -0.5, 1.5, 0.25, 2.0, 1.5, 0.6, -0.7),
}
_TASTE_ARRAYS = {f: np.array([getattr(TASTES[c], f) for c in CATEGORIES])
                 for f in CategoryTaste.__dataclass_fields__}

# Affine map of the raw sum onto a standard-normal latent, measured on 2M samples of
# sample_attributes (mean and std of the raw score); see tests/test_synthetic.py.
_RAW_MEAN, _RAW_STD = -2.466, 0.933
APPEAL_STD = 0.45  # per-image appeal that no attribute explains


def raw_quality(columns: dict[str, np.ndarray], category_id: np.ndarray) -> np.ndarray:
    """Sum of attribute effects for each image, before standardisation and appeal."""
    t = {name: values[category_id] for name, values in _TASTE_ARRAYS.items()}
    c = columns
    return (
        t["prior"]
        - 2.2 * c["blur"]
        - 0.9 * np.abs(c["exposure"] - t["ideal_exposure"]) ** 1.5
        - 1.2 * np.abs(np.log(c["contrast"] / 1.05))
        - 0.8 * np.abs(np.log((c["saturation"] + 0.05) / t["ideal_saturation"]))
        + 0.9 * (c["harmony"] - 0.5)
        - 9.0 * c["noise"]
        - t["tilt_weight"] * np.abs(c["tilt"]) / 10.0
        - t["thirds_weight"] * thirds_distance(c["subject_x"], c["subject_y"])
        - 1.8 * np.abs(c["subject_size"] - t["ideal_size"])
        - t["clutter_weight"] * c["clutter"]
        + t["dark_background"] * c["background_darkness"]
    )


def aesthetic_latent(columns: dict[str, np.ndarray], category_id: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    appeal = rng.normal(0.0, APPEAL_STD, len(category_id))
    standardised = (raw_quality(columns, category_id) - _RAW_MEAN) / _RAW_STD
    return (standardised + appeal) / np.sqrt(1.0 + APPEAL_STD**2)


# --- raters -------------------------------------------------------------------------------------

# A rating is round(1 + 9 * Phi(PROBIT_CENTRE + PROBIT_GAIN * (latent + e))). The rater noise e
# is a two-component normal mixture: most raters judge around the photo's quality, a minority
# (GENEROUS_SHARE) are markedly kinder, which gives AVA's mild right skew in the middle of the
# scale. Constants fitted so the synthetic histograms match the real AVA labels (mean and spread
# of the per-image means, mean per-image std, skew per mean bucket); see docs/synthetic_ava.md.
PROBIT_CENTRE = -0.03
PROBIT_GAIN = 0.23
DISAGREEMENT = 1.5  # median rater noise, in latent standard deviations
GENEROUS_SHARE, GENEROUS_SHIFT = 0.3, 2.0
MIN_VOTES, MAX_VOTES = 78, 549


def rating_pmf(latent: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
    """P(score = k), k = 1..10, for each image (rows sum to 1).

    Score k is given when the rater's perceived quality falls between the thresholds that the
    bounded map puts at scores k - 0.5 and k + 0.5, so the pmf is a difference of (mixtures of)
    normal CDFs.
    """
    edges = np.arange(1.5, 10.5)  # halfway between consecutive scores
    thresholds = (ndtri((edges - 1.0) / 9.0) - PROBIT_CENTRE) / PROBIT_GAIN
    main_shift = -GENEROUS_SHARE * GENEROUS_SHIFT / (1.0 - GENEROUS_SHARE)  # noise has mean 0

    def below(shift: float) -> np.ndarray:
        return ndtr((thresholds[None, :] - latent[:, None] - shift) / disagreement[:, None])

    cdf = (1.0 - GENEROUS_SHARE) * below(main_shift) + GENEROUS_SHARE * below(GENEROUS_SHIFT)
    n = len(latent)
    return np.diff(np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1), axis=1)


def sample_vote_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Raters per image: 78..549, mean about 210, right-skewed like AVA."""
    counts = MIN_VOTES + np.round(rng.lognormal(np.log(121.0), 0.42, n))
    return np.clip(counts, MIN_VOTES, MAX_VOTES).astype(np.int32)


def sample_votes(rng: np.random.Generator, pmf: np.ndarray, n_votes: np.ndarray) -> np.ndarray:
    """Histogram of ``n_votes`` independent ratings per image."""
    return rng.multinomial(n_votes, pmf).astype(np.int32)


def sample_disagreement(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.exp(rng.normal(np.log(DISAGREEMENT), 0.18, n))


@dataclass(frozen=True)
class SyntheticLabels:
    category_id: np.ndarray
    attributes: dict[str, np.ndarray]
    latent: np.ndarray
    pmf: np.ndarray  # (n, 10)
    n_votes: np.ndarray
    votes: np.ndarray  # (n, 10)

    @property
    def true_mean(self) -> np.ndarray:
        return self.pmf @ np.arange(1, NUM_BINS + 1)


def sample_labels(rng: np.random.Generator, n: int) -> SyntheticLabels:
    """Categories, attributes, latent, rating pmf and votes for ``n`` synthetic photos."""
    category_id = rng.integers(0, len(CATEGORIES), n)
    attributes = sample_attributes(rng, n)
    latent = aesthetic_latent(attributes, category_id, rng)
    pmf = rating_pmf(latent, sample_disagreement(rng, n))
    n_votes = sample_vote_counts(rng, n)
    return SyntheticLabels(category_id, attributes, latent, pmf, n_votes,
                           sample_votes(rng, pmf, n_votes))
