"""Photographic attributes of a synthetic photo and how they are sampled.

Each image gets a category and a set of attributes. The renderer turns them into pixels; the
aesthetic model (``apm.data.synthetic.aesthetics``) turns them into a latent quality and votes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

#: The ten semantic categories of the seed work (PFAGAN's clusters), in label order.
CATEGORIES: tuple[str, ...] = (
    "barn", "beach", "bird", "cat", "flower", "lake", "meadow", "mountain", "portrait", "sunset",
)


@dataclass(frozen=True)
class Attributes:
    """What a photographer controls, each on a fixed documented range."""

    blur: float  # 0 = sharp .. 1 = blurred (Gaussian sigma = 1.5% of the short side)
    exposure: float  # exposure error in stops, -1.5 .. 1.5 (0 = correctly exposed)
    contrast: float  # contrast multiplier around mid-grey, 0.4 .. 1.6
    saturation: float  # saturation multiplier, 0 (grey) .. 1.8
    harmony: float  # 0 = discordant random palette .. 1 = harmonious (analogous) palette
    noise: float  # sensor-noise standard deviation on a 0..1 intensity scale, 0 .. 0.15
    tilt: float  # horizon / camera roll in degrees, -15 .. 15
    subject_x: float  # subject centre, fraction of width, 0.15 .. 0.85
    subject_y: float  # subject centre, fraction of height, 0.15 .. 0.85
    subject_size: float  # subject height as a fraction of image height, 0.1 .. 0.8
    clutter: float  # 0 = clean .. 1 = many distracting objects (up to 12)
    background_darkness: float  # 0 = the category's natural background .. 1 = dark plain backdrop

    @property
    def thirds_distance(self) -> float:
        """Distance of the subject centre to the nearest rule-of-thirds point (0 .. ~0.47)."""
        points = np.array([1 / 3, 2 / 3])
        dx = np.min(np.abs(points - self.subject_x))
        dy = np.min(np.abs(points - self.subject_y))
        return float(np.hypot(dx, dy))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Attributes))
