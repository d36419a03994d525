"""Decoding every common format into RGB, with orientation, limits and clear errors."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from apm.decode import DecodeError, center_crop, decode_image, random_crop


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width=64, height=48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([x, 255 - x, np.full_like(x, 90)], axis=-1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_formats_decode_to_rgb(fmt):
    decoded = decode_image(encode(gradient(), fmt))
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.rgb[:, :8, 0].mean() < decoded.rgb[:, -8:, 0].mean()  # the gradient survived


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_modes_become_rgb(mode):
    if mode == "I;16":
        image = Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16))
        data = encode(image, "PNG")
    else:
        data = encode(gradient().convert(mode), "TIFF" if mode == "CMYK" else "PNG")
    rgb = decode_image(data).rgb
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb.max() > 100


def test_transparent_pixels_become_white():
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent black
    assert (decode_image(encode(Image.fromarray(rgba), "PNG")).rgb == 255).all()


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    decoded = decode_image(encode(gradient(), "JPEG", exif=exif.tobytes()))
    assert decoded.rgb.shape == (64, 48, 3)  # displayed upright: portrait
    assert (decoded.width, decoded.height) == (64, 48)  # as stored


def test_gif_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    rgb = decode_image(data).rgb
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 50


def test_resize_short_side_and_crops():
    decoded = decode_image(encode(gradient(400, 300), "JPEG"), size=60)
    assert decoded.rgb.shape == (60, 80, 3) and (decoded.width, decoded.height) == (400, 300)
    assert center_crop(decoded.rgb, 60).shape == (60, 60, 3)
    crops = {random_crop(decoded.rgb, 50, np.random.default_rng(s)).tobytes() for s in range(8)}
    assert len(crops) > 1 and all(len(c) == 50 * 50 * 3 for c in crops)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "UnidentifiedImageError"),
    (None, "truncated"),
])
def test_bad_bytes_give_reasons(data, reason):
    if data is None:
        full = encode(gradient(), "JPEG")
        data = full[: len(full) // 2]
    with pytest.raises(DecodeError, match=f"(?i){reason}"):
        decode_image(data)


def test_pixel_limit():
    with pytest.raises(DecodeError, match="exceeds the pixel limit"):
        decode_image(encode(gradient(), "PNG"), max_pixels=1000)
