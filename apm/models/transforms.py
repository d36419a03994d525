"""What a network is fed: a photo's decoded, resized, centre-cropped and normalised pixels.

One home for the crop every stage uses (teachers, training's evaluation crop, scoring,
evaluation, explanations, the PFAGAN judge), so that a photo gives the same tensor everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from apm.data.decode import DEFAULT_LIMITS, ImageLimits, decode_image, resize_center_crop
from apm.models.backbones import input_normalisation

#: Short side before the centre crop = crop * ratio (256 for 224), as in training.
RESIZE_RATIO = 8 / 7


@dataclass(frozen=True)
class ImageTransform:
    """The input a teacher's weights expect, ImageNet's evaluation protocol.

    The short side is resized to ``resize_size`` (bilinear, antialiased, as
    :func:`apm.data.decode.decode_image` does), the central ``crop_size`` square is kept, and the
    pixels become ``(x / 255 - mean) / std`` per channel. A 256 -> 224 crop keeps 87.5 % of the
    short side, which is both torchvision's and TensorFlow's EfficientNet protocol
    (``CROP_PADDING = 32``).
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def crop_bytes(self, data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
        """(crop, crop, 3) uint8 from an encoded photo; :class:`apm.data.decode.DecodeError` if bad."""
        return self.crop_decoded(data, limits)[0]

    def crop_decoded(self, data: bytes, limits: ImageLimits = DEFAULT_LIMITS
                     ) -> tuple[np.ndarray, int, int]:
        """The crop of :meth:`crop_bytes` and the photo's stored width and height.

        Only the crop's region is resized, so however long the photo, nothing is much larger
        than the crop once the photo is decoded.
        """
        decoded = decode_image(data, size=self.resize_size, limits=limits, crop=self.crop_size)
        # A copy: the array is a read-only view of Pillow's buffer, which torch warns about.
        return np.array(decoded.rgb), decoded.width, decoded.height

    def crop_image(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """(crop, crop, 3) uint8 from a decoded photo (PIL image or (H, W, 3) uint8 array).

        Resizes exactly as ``decode_image(size=resize_size, crop=crop_size)`` does, so a photo
        gives the same crop whether it arrives as pixels or as lossless bytes.
        """
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = resize_center_crop(image.convert("RGB"), self.resize_size, self.crop_size)
        return np.array(image, dtype=np.uint8)

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) crops -> float32 (N, 3, H, W), normalised, on the crops' device.

        Crops travel as uint8 (4x fewer bytes than floats) and are normalised where the network
        runs. Permuting NHWC to NCHW yields a channels-last tensor, the layout the GPU prefers.
        """
        mean = torch.tensor(self.mean, device=crops.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=crops.device).view(1, 3, 1, 1) * 255
        return (crops.permute(0, 3, 1, 2).float() - mean) / std


def resize_size(image_size: int, ratio: float = RESIZE_RATIO) -> int:
    return int(round(image_size * ratio))


def image_transform(backbone: str, image_size: int) -> ImageTransform:
    """The evaluation crop of training for ``backbone``: short side ``image_size * 8/7``,
    centre crop, the backbone's normalisation."""
    norm = input_normalisation(backbone)
    return ImageTransform(resize_size=resize_size(image_size), crop_size=image_size,
                          mean=norm.mean, std=norm.std)
