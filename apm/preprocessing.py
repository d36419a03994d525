"""The crop a model sees at inference.

Kept apart from evaluation (metrics, plots) so that the scoring and explanation actors import
only what inference needs: each actor imports this at start-up, on every core of the cluster.
"""
from __future__ import annotations

from apm.models import input_normalisation
from apm.models.transforms import ImageTransform

#: Short side before the centre crop = crop * ratio (256 for 224), as in training.
RESIZE_RATIO = 8 / 7


def resize_size(image_size: int, ratio: float = RESIZE_RATIO) -> int:
    return int(round(image_size * ratio))


def image_transform(backbone: str, image_size: int) -> ImageTransform:
    """The evaluation crop of training: short side ``image_size * 8/7``, centre crop."""
    norm = input_normalisation(backbone)
    return ImageTransform(resize_size=resize_size(image_size), crop_size=image_size,
                          mean=norm.mean, std=norm.std)
