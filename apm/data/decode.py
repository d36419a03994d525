"""Decoding photos into RGB arrays, the same way for training, teacher inference and scoring.

EXIF orientation is applied (phones store portrait shots as rotated landscape pixels), every
mode (grayscale, palette, CMYK, alpha, 16-bit) becomes 8-bit RGB, and JPEGs are decoded with
draft mode at the smallest DCT scale that still covers the requested size, which is several
times faster than a full decode followed by a resize.

What one photo may cost (:class:`ImageLimits`: bytes, pixels, aspect ratio) is checked on its
byte count and header, before any pixel is decoded; past that, nothing is larger than a small
multiple of the decoded photo or of the output (the crop path resizes only what it keeps).
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from apm.core import storage

#: Refuse images above this many pixels (decompression bombs); 100 MP covers real cameras.
DEFAULT_MAX_PIXELS = 100_000_000
#: Refuse objects above this many bytes: far above any camera's JPEG, PNG or WebP (large
#: uncompressed TIFFs may need more).
DEFAULT_MAX_BYTES = 256 * 2**20
#: Refuse images whose long side is more than this many times the short side: resizing the
#: short side to the crop makes the long side this many crops long (panoramas stay below 20).
DEFAULT_MAX_ASPECT = 20.0
#: Formats Pillow reads that are never decoded: for EPS it runs Ghostscript, an external
#: PostScript interpreter, on the file (unbounded work, done by a program in the file).
REFUSED_FORMATS = frozenset({"EPS"})


class DecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


def _amount(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class ImageLimits:
    """What one photo may cost, checked before its pixels are allocated.

    Every refusal is a :class:`DecodeError` whose message names the limit and its option.
    """

    max_bytes: int = DEFAULT_MAX_BYTES  # --max-bytes: the encoded object
    max_pixels: int = DEFAULT_MAX_PIXELS  # --max-pixels: width * height as stored
    max_aspect: float = DEFAULT_MAX_ASPECT  # --max-aspect: long side / short side

    def __post_init__(self) -> None:
        for option, value in (("--max-bytes", self.max_bytes), ("--max-pixels", self.max_pixels)):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        if not self.max_aspect >= 1:  # also refuses NaN
            raise ValueError(f"--max-aspect must be at least 1 (long side / short side), "
                             f"got {self.max_aspect}")

    def check_bytes(self, n: int | None) -> None:
        """Refuse a known size (the listing's, before reading; the bytes read) over max_bytes."""
        if n is not None and n > self.max_bytes:
            raise DecodeError(f"{_amount(n)} exceeds --max-bytes {self.max_bytes}")

    def check_size(self, width: int, height: int) -> None:
        """Refuse a stored size over max_pixels or an aspect ratio over max_aspect."""
        pixels = width * height
        if pixels > self.max_pixels:
            raise DecodeError(f"{width}x{height} ({pixels / 1e6:.1f} MP) exceeds --max-pixels "
                              f"{self.max_pixels}")
        aspect = max(width, height) / max(1, min(width, height))
        if aspect > self.max_aspect:
            raise DecodeError(f"{width}x{height}: aspect ratio {aspect:.1f} exceeds --max-aspect "
                              f"{self.max_aspect:g}")


#: The limits of a job that sets none.
DEFAULT_LIMITS = ImageLimits()


def read_image_bytes(uri: str, limits: ImageLimits, size: int | None = None) -> bytes:
    """The encoded photo at ``uri``: refused before reading when ``size`` (the listing's) is over
    ``limits.max_bytes``, and by a bounded read when the listing did not say."""
    outcome = read_images([(uri, size)], limits)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def read_images(photos: list[tuple[str, int | None]],
                limits: ImageLimits) -> list[bytes | BaseException]:
    """:func:`read_image_bytes` of many ``(uri, listed size)`` at once, the reads concurrent
    (:func:`apm.core.storage.read_many`): per photo its bytes or the error it would raise."""
    outcomes: list[bytes | BaseException | None] = [_refused(size, limits) for _, size in photos]
    wanted = [i for i, outcome in enumerate(outcomes) if outcome is None]
    read = storage.read_many([storage.ReadRequest(photos[i][0], limits.max_bytes)
                              for i in wanted])
    for i, outcome in zip(wanted, read):
        if isinstance(outcome, storage.ObjectTooLargeError):
            outcome = DecodeError(f"more than {_amount(limits.max_bytes)} exceeds --max-bytes "
                                  f"{limits.max_bytes}")
        outcomes[i] = outcome
    return outcomes


def _refused(size: int | None, limits: ImageLimits) -> DecodeError | None:
    """Why a photo of listed ``size`` is not read (None: it is)."""
    try:
        limits.check_bytes(size)
    except DecodeError as err:
        return err
    return None


_pillow_limit_lock = threading.Lock()


def _follow_pillow_limit(max_pixels: int) -> None:
    """Raise Pillow's own decompression-bomb limit to ``max_pixels``.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` (~89 MP) and refuses above twice that,
    whatever --max-pixels says. Its limit only ever rises here, so threads decoding with
    different limits in one process never have Pillow refuse what their own limit accepts;
    each call's own limit is checked on the header. A limit of None (Pillow's check disabled
    by the user) stays None.
    """
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        with _pillow_limit_lock:
            if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
                Image.MAX_IMAGE_PIXELS = max_pixels


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, after orientation, resizing and cropping
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


def decode_image(data: bytes, size: int | None = None, limits: ImageLimits = DEFAULT_LIMITS,
                 crop: int | None = None) -> Decoded:
    """Decode ``data``; with ``size``, resize so the short side is ``size`` pixels; with ``crop``
    too, only the central ``crop`` square of that (see :func:`resize_center_crop`).

    ``limits`` are checked on the byte count and the header, before any pixel is decoded.
    Raises :class:`DecodeError` for empty, truncated, unknown or oversized input.
    """
    if crop is not None and (size is None or not 1 <= crop <= size):
        raise ValueError(f"crop {crop} needs a resize size of at least {crop}, got {size}")
    if not data:
        raise DecodeError("empty file (0 bytes)")
    limits.check_bytes(len(data))
    _follow_pillow_limit(limits.max_pixels)
    try:
        Image.init()  # every plugin, so that the formats below are all Pillow reads
        formats = [f for f in Image.ID if f not in REFUSED_FORMATS]
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
            limits.check_size(width, height)
            if size and image.format == "JPEG":
                scale = size / min(width, height)
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.seek(0)  # first frame of animations
            image.load()
            if image.width > width or image.height > height:  # ICO, ICNS: not what the header said
                limits.check_size(*image.size)
            image = _to_rgb(ImageOps.exif_transpose(image))
    except DecodeError:
        raise
    except Image.UnidentifiedImageError as err:
        raise DecodeError("UnidentifiedImageError: not a recognised image format") from err
    except Image.DecompressionBombError:
        # Pillow refuses above twice its limit, which follows ours: the size is over ours.
        raise DecodeError(f"more than {2 * limits.max_pixels / 1e6:.1f} MP exceeds --max-pixels "
                          f"{limits.max_pixels}") from None
    except Exception as err:  # noqa: BLE001 - Pillow's readers raise many types on bad bytes
        # (OSError, SyntaxError, EOFError, IndexError, struct.error, NotImplementedError, ...)
        raise DecodeError(f"{type(err).__name__}: {err}") from err
    if crop:
        image = resize_center_crop(image, size, crop)
    elif size:
        image = resize_short_side(image, size)
    return Decoded(rgb=np.asarray(image, dtype=np.uint8), width=width, height=height)


def _short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    scale = size / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so that the short side is ``size`` pixels (aspect ratio kept)."""
    return image.resize(_short_side_size(*image.size, size), Image.Resampling.BILINEAR,
                        reducing_gap=None)


def resize_center_crop(image: Image.Image, size: int, crop: int) -> Image.Image:
    """``center_crop(resize_short_side(image, size), crop)``, computing only the crop's pixels.

    The full resized image of a long strip is far larger than the crop (a 400000 x 1 PNG
    becomes 224 x 89,600,000 pixels at size 224). Resizing just the source box under the crop,
    on the same output grid, gives the same pixels: Pillow's filter still reads the source
    around the box, so the box's edges are not clamped.
    """
    width, height = image.size
    out_width, out_height = _short_side_size(width, height, size)
    left, top = (out_width - crop) // 2, (out_height - crop) // 2
    x_scale, y_scale = width / out_width, height / out_height
    box = (left * x_scale, top * y_scale, (left + crop) * x_scale, (top + crop) * y_scale)
    return image.resize((crop, crop), Image.Resampling.BILINEAR, box=box, reducing_gap=None)


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
