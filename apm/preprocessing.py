"""The crop a model sees at inference.

Kept apart from evaluation (metrics, plots) so that the scoring and explanation actors import
only what inference needs: each actor imports this at start-up, on every core of the cluster.
"""
from __future__ import annotations

from apm.models import input_normalisation, trained_image_size
from apm.teacher import ImageTransform

#: The crop of a checkpoint that does not record its own (ImageNet's 224).
DEFAULT_IMAGE_SIZE = 224

#: Short side before the centre crop = crop * ratio (256 for 224), as in training.
RESIZE_RATIO = 8 / 7


def resize_size(image_size: int, ratio: float = RESIZE_RATIO) -> int:
    return int(round(image_size * ratio))


def crop_size(model: str, requested: int | None = None) -> int:
    """The crop to run ``model`` at: as requested, else the crop its trainer recorded in the
    checkpoint, else :data:`DEFAULT_IMAGE_SIZE`."""
    return requested or trained_image_size(model) or DEFAULT_IMAGE_SIZE


def image_transform(backbone: str, image_size: int) -> ImageTransform:
    """The evaluation crop of training: short side ``image_size * 8/7``, centre crop."""
    norm = input_normalisation(backbone)
    return ImageTransform(resize_size=resize_size(image_size), crop_size=image_size,
                          mean=norm.mean, std=norm.std)
