"""Decoding photos into RGB arrays, the same way for training, teacher inference and scoring.

EXIF orientation is applied (phones store portrait shots as rotated landscape pixels), every
mode (grayscale, palette, CMYK, alpha, 16-bit) becomes 8-bit RGB, and JPEGs are decoded with
draft mode at the smallest DCT scale that still covers the requested size, which is several
times faster than a full decode followed by a resize.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (decompression bombs); 100 MP covers real cameras.
DEFAULT_MAX_PIXELS = 100_000_000


class DecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, after orientation and resizing
    width: int  # original size, as stored (before EXIF rotation)
    height: int


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping everything above 255.
        array = np.asarray(image, dtype=np.float32)
        top = max(float(array.max()), 1.0)
        image = Image.fromarray((array * (255.0 / top)).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency over white, as viewers show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, size: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode ``data``; with ``size``, resize so the short side is ``size`` pixels.

    Raises :class:`DecodeError` for empty, truncated, unknown or oversized input.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(f"{width}x{height} exceeds the pixel limit of {max_pixels}")
            if size and image.format == "JPEG":
                scale = size / min(width, height)
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.seek(0)  # first frame of animations
            image.load()
            image = _to_rgb(ImageOps.exif_transpose(image))
    except DecodeError:
        raise
    except Image.UnidentifiedImageError as err:
        raise DecodeError("UnidentifiedImageError: not a recognised image format") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DecodeError(f"{type(err).__name__}: {err}") from err
    if size:
        image = resize_short_side(image, size)
    return Decoded(rgb=np.asarray(image, dtype=np.uint8), width=width, height=height)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so that the short side is ``size`` pixels (aspect ratio kept)."""
    scale = size / min(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BILINEAR, reducing_gap=None)


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window (the image's short side must be >= size)."""
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[top:top + size, left:left + size]


def random_crop(rgb: np.ndarray, size: int, rng: np.random.Generator,
                flip: bool = True) -> np.ndarray:
    """A random ``size`` x ``size`` window, mirrored half of the time (training augmentation)."""
    h, w = rgb.shape[:2]
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    crop = rgb[top:top + size, left:left + size]
    return crop[:, ::-1] if flip and rng.random() < 0.5 else crop
