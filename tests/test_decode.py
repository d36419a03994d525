"""Decoding every common format into RGB, with orientation, limits and clear errors; and every
malformed file of :mod:`wild_images` in bounded time and memory."""
from __future__ import annotations

import ctypes
import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from wild_images import wild_images

from apm.data.decode import (
    DecodeError,
    ImageLimits,
    center_crop,
    decode_image,
    random_crop,
    read_image_bytes,
    resize_short_side,
)
from apm.models.teachers import EFFICIENTNET_LITE_TRANSFORM
from apm.models.transforms import ImageTransform

#: Pillow's own limit as it ships, before anything raised it.
PILLOW_DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


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




# --- limits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, option", [
    ({"max_bytes": 0}, "--max-bytes must be at least 1, got 0"),
    ({"max_pixels": -5}, "--max-pixels must be at least 1, got -5"),
    ({"max_aspect": 0.5}, r"--max-aspect must be at least 1 \(long side / short side\), got 0.5"),
    ({"max_aspect": float("nan")}, "--max-aspect must be at least 1"),
])
def test_limits_are_validated_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        ImageLimits(**kwargs)


def _png_header(width: int, height: int) -> bytes:
    return wild_images()[f"png-declares-{width}x{height}.png"]


def test_each_refusal_names_the_limit_and_its_option():
    strip = wild_images()["png-strip-400000x1.png"]
    with pytest.raises(DecodeError, match=r"^400000x1: aspect ratio 400000\.0 exceeds "
                                          r"--max-aspect 20$"):
        decode_image(strip)
    with pytest.raises(DecodeError, match=r"^600x20: aspect ratio 30\.0 exceeds --max-aspect 20$"):
        decode_image(wild_images()["png-aspect-30to1.png"], 256)
    with pytest.raises(DecodeError, match=r"^12000x10000 \(120\.0 MP\) exceeds --max-pixels "
                                          r"100000000$"):
        decode_image(wild_images()["png-bomb-zeros-12000x10000.png"])
    with pytest.raises(DecodeError, match=r"^64x48 \(0\.0 MP\) exceeds --max-pixels 1000$"):
        decode_image(encode(gradient(), "PNG"), limits=ImageLimits(max_pixels=1000))
    with pytest.raises(DecodeError, match=r"^300\.0 MiB exceeds --max-bytes 268435456$"):
        ImageLimits().check_bytes(300 * 2**20)
    data = encode(gradient(), "BMP")
    with pytest.raises(DecodeError, match=rf"^{len(data) / 1024:.1f} KiB exceeds --max-bytes 1000$"):
        decode_image(data, limits=ImageLimits(max_bytes=1000))
    ImageLimits(max_bytes=len(data)).check_bytes(len(data))  # the limit itself is allowed
    ImageLimits().check_bytes(None)  # an unknown size is left to the bounded read


def test_bytes_are_refused_before_reading_and_the_read_is_bounded(tmp_path):
    limits = ImageLimits(max_bytes=1000)
    # The listing's size is enough: a file that is not even there is refused, not read.
    with pytest.raises(DecodeError, match=r"^2\.0 KiB exceeds --max-bytes 1000$"):
        read_image_bytes(str(tmp_path / "absent.png"), limits, size=2048)
    photo = tmp_path / "big.bmp"
    photo.write_bytes(encode(gradient(), "BMP"))
    with pytest.raises(DecodeError, match=r"^more than 1000 bytes exceeds --max-bytes 1000$"):
        read_image_bytes(str(photo), limits)  # no listing size: the read stops at the limit
    assert read_image_bytes(str(photo), ImageLimits(), size=photo.stat().st_size) == \
        photo.read_bytes()


def test_pillow_limit_follows_max_pixels(monkeypatch):
    """Pillow refuses above twice its own limit (179 MP as it ships) whatever ours says; here
    it follows ours, so a 225 MP header passes both and the file fails on its (missing) pixels."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    header = wild_images()["png-declares-100000x100000.png"]
    with pytest.raises(DecodeError, match=r"^more than 200\.0 MP exceeds --max-pixels 100000000$"):
        decode_image(header)
    ihdr = b"\x89PNG\r\n\x1a\n" + _png_chunk_ihdr(15_000, 15_000)
    with pytest.raises(DecodeError) as refused:
        decode_image(ihdr, limits=ImageLimits(max_pixels=300_000_000))
    assert "max-pixels" not in str(refused.value) and "DecompressionBomb" not in str(refused.value)
    assert Image.MAX_IMAGE_PIXELS == 300_000_000
    decode_image(encode(gradient(), "PNG"), limits=ImageLimits(max_pixels=10_000))
    assert Image.MAX_IMAGE_PIXELS == 300_000_000  # it only rises: other threads may need it


def _png_chunk_ihdr(width: int, height: int) -> bytes:
    import struct
    import zlib
    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))


def test_pillow_never_warns_about_an_image_under_max_pixels(monkeypatch):
    """95 MP is over Pillow's shipped warning threshold (89 MP), under --max-pixels."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DecodeError, match="truncated"):  # its pixels are not there
            decode_image(wild_images()["png-declares-9500x10000.png"], 256)
        # libjpeg fills what is missing: at 1/8 scale (draft mode), a grey 1188 x 1250.
        drafted = decode_image(wild_images()["jpeg-declares-9500x10000.jpg"], 256)
        assert drafted.rgb.shape == (269, 256, 3) and (drafted.width, drafted.height) == (9500, 10000)


# --- the crop path: only what the crop keeps is resized ----------------------------------

def _photos() -> dict[str, np.ndarray]:
    astronaut, chelsea, coffee = skdata.astronaut(), skdata.chelsea(), skdata.coffee()
    return {"astronaut": astronaut, "chelsea": chelsea, "coffee": coffee,
            "tall": np.concatenate([astronaut[:, :300], chelsea[:, :300], coffee[:, :300]], 0),
            "wide": np.concatenate([coffee, coffee[:, ::-1], coffee], 1),
            "odd": chelsea[:299, :451]}


@pytest.mark.parametrize("resize, crop", [(256, 224), (73, 64), (147, 128), (300, 300)])
def test_crop_path_matches_resize_then_crop(resize, crop):
    """Resizing only the crop's box gives the crop of the whole resized photo: the filter reads
    the same source pixels; its float box edges move at most a few pixels by 1-2 levels."""
    transform = ImageTransform(resize, crop, mean=(0.5,) * 3, std=(0.5,) * 3)
    for name, rgb in _photos().items():
        whole = center_crop(np.asarray(resize_short_side(Image.fromarray(rgb), resize)), crop)
        got, width, height = transform.crop_decoded(encode(Image.fromarray(rgb), "PNG"))
        assert got.shape == (crop, crop, 3) and (width, height) == rgb.shape[1::-1]
        diff = np.abs(got.astype(int) - whole.astype(int))
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (name, diff.max(), (diff > 0).mean())
        np.testing.assert_array_equal(got, transform.crop_image(rgb))  # pixels or bytes alike


def test_crop_path_keeps_jpeg_draft_mode():
    jpeg = encode(Image.fromarray(_photos()["wide"]), "JPEG", quality=90)
    drafted = decode_image(jpeg, 256)
    assert drafted.rgb.shape == (256, 1152, 3) and (drafted.width, drafted.height) == (1800, 400)
    got = decode_image(jpeg, 256, crop=224).rgb
    diff = np.abs(got.astype(int) - center_crop(drafted.rgb, 224).astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


# --- bounded time and memory ---------------------------------------------------------------

CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def peak_growth():
    """``peak_growth(fn)``: (fn's result or its DecodeError, bytes the resident set grew to
    above its size before ``fn``). Linux resets the peak (VmHWM) through clear_refs; freed
    heap is given back first so that ``fn`` cannot hide in it."""
    try:
        CLEAR_REFS.write_text("5")
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs and glibc")

    def measure(fn):
        trim(0)
        CLEAR_REFS.write_text("5")
        start = _status_kib("VmRSS")
        try:
            result = fn()
        except DecodeError as err:
            result = err
        return result, (_status_kib("VmHWM") - start) * 1024
    return measure


def _header_pixels(data: bytes) -> int:
    """width * height as the header declares it (0 when Pillow cannot read a header)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - malformed on purpose
        return 0


def test_strip_png_is_refused_at_the_default_crop_and_bounded_when_allowed(peak_growth):
    """At the default crop (224 of 256) the 400000 x 1 strip would resize to 224 x 89,600,000
    pixels (80 GB): refused by --max-aspect by default; with the limit raised, only the crop's
    box is resized, and the peak stays a small multiple of the decoded strip and the crop."""
    transform = EFFICIENTNET_LITE_TRANSFORM
    for name in ("png-strip-400000x1.png", "png-strip-1x400000.png"):
        data = wild_images()[name]
        with pytest.raises(DecodeError, match="aspect ratio 400000.0 exceeds --max-aspect 20"):
            transform.crop_decoded(data)
        (crop, width, height), peak = peak_growth(
            lambda data=data: transform.crop_decoded(data, ImageLimits(max_aspect=1e6)))
        assert crop.shape == (224, 224, 3) and width * height == 400_000
        assert (crop == (200, 40, 40)).all()  # the strip's colour, stretched
        # Pillow keeps 4 bytes a pixel plus a pointer a row; the crop is 150 KB.
        bound = 32 * width * height + 4 * crop.nbytes + 4 * 2**20
        assert peak < bound, (name, peak, bound)


def test_training_path_is_bounded_by_the_aspect_limit(peak_growth):
    """Training resizes the whole photo (random crops): at --max-aspect 20 the longest
    accepted photo is 20 crops long, never millions."""
    wide = encode(Image.fromarray(np.zeros((20, 400, 3), np.uint8)), "PNG")  # 20:1, accepted
    decoded, peak = peak_growth(lambda: decode_image(wide, 256))
    assert decoded.rgb.shape == (256, 5120, 3)
    assert peak < 4 * decoded.rgb.size * 4 / 3 + 4 * 2**20  # the output, 4 bytes a pixel, x4
    with pytest.raises(DecodeError, match="--max-aspect"):
        decode_image(wild_images()["png-strip-400000x1.png"], 256)


def test_every_wild_file_is_a_crop_or_a_decode_error_in_bounded_time_and_memory(peak_growth):
    """The scoring crop (256 -> 224) and the training resize (256) of each malformed file:
    a result or a DecodeError, never another exception, each within 2 s, and no peak above a
    small multiple of the input (its bytes and the pixels its header declares) and output."""
    transform = EFFICIENTNET_LITE_TRANSFORM
    corpus = wild_images()
    assert 300 <= len(corpus) <= 1000 and sum(map(len, corpus.values())) < 4 * 2**20
    paths = {"crop": lambda data: transform.crop_decoded(data)[0],
             "resize": lambda data: decode_image(data, 256).rgb}
    decoded = {path: 0 for path in paths}
    started = time.perf_counter()
    for name, data in corpus.items():
        for path, fn in paths.items():
            began = time.perf_counter()
            try:
                result, peak = peak_growth(lambda fn=fn, data=data: fn(data))
            except Exception as err:  # noqa: BLE001 - the failure names what escaped
                pytest.fail(f"{name} ({path}): {type(err).__name__} escaped: {err}")
            assert time.perf_counter() - began < 2, (name, path)
            output = 0
            if not isinstance(result, DecodeError):
                assert result.dtype == np.uint8 and result.shape[2] == 3, (name, path)
                assert (result.shape == (224, 224, 3) if path == "crop"
                        else min(result.shape[:2]) == 256), (name, path, result.shape)
                output = result.nbytes
                decoded[path] += 1
            bound = 8 * 4 * _header_pixels(data) + 4 * len(data) + 4 * output + 16 * 2**20
            assert peak < bound, (name, path, peak, bound)
    assert time.perf_counter() - started < 60
    # Both outcomes in earnest: most mutations are refused, every valid file decodes.
    assert 150 < decoded["crop"] == decoded["resize"] < len(corpus) - 200, decoded


# --- every stage that reads photos applies the limits ------------------------------------

def test_training_ingest_and_contact_sheets_refuse_by_the_limits(tmp_path, caplog):
    from apm.clustering.sheets import thumbnail_batch
    from apm.training.data import IngestConfig, load_images

    good, strip, big = tmp_path / "good.png", tmp_path / "strip.png", tmp_path / "big.bmp"
    good.write_bytes(encode(gradient(), "PNG"))
    strip.write_bytes(wild_images()["png-strip-400000x1.png"])
    big.write_bytes(encode(gradient(400, 300), "BMP"))  # 352 KiB
    uris = np.array([str(good), str(strip), str(big)], dtype=object)
    limits = ImageLimits(max_bytes=100_000)
    out = load_images({"uri": uris, "target": np.zeros(3)},
                      IngestConfig(image_size=32, augment=False, limits=limits), {})
    assert out["image"].shape == (3, 32, 32, 3)
    assert (out["image"][1] == out["image"][0]).all()  # a neighbour stands in for the strip
    assert "aspect ratio 400000.0 exceeds --max-aspect 20" in caplog.text
    assert "more than 97.7 KiB exceeds --max-bytes 100000" in caplog.text
    thumbs = thumbnail_batch({"cluster": np.zeros(3), "rank": np.arange(3), "uri": uris}, 16, {},
                             limits)
    assert thumbs["thumb"].shape == (3, 16, 16, 3) and thumbs["error"][0] == ""
    assert "--max-aspect 20" in thumbs["error"][1] and "--max-bytes 100000" in thumbs["error"][2]


def test_jobs_share_the_limit_options(capsys):
    from jobs import _cli

    p = _cli.parser("test")
    _cli.add_image_limit_args(p)
    assert _cli.image_limits(p.parse_args([])) == ImageLimits()
    assert _cli.image_limits(p.parse_args(["--max-bytes", "10", "--max-pixels", "20",
                                           "--max-aspect", "1e6"])) == ImageLimits(10, 20, 1e6)
    help_text = " ".join(p.format_help().split())  # unwrapped
    assert "(default 268435456, 256 MiB)" in help_text and "(default 100000000)" in help_text
    assert "(default 20)" in help_text
    with pytest.raises(SystemExit) as stop:
        _cli.image_limits(p.parse_args(["--max-aspect", "0.5"]))
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: --max-aspect must be at least 1 (long side / short "
                                       "side), got 0.5\n")


def test_checking_photos_applies_the_listing_size_and_the_limits(tmp_path, ray_local):
    from apm.data.images import check_images

    (tmp_path / "ok.png").write_bytes(encode(gradient(), "PNG"))
    (tmp_path / "strip.png").write_bytes(wild_images()["png-strip-400000x1.png"])
    (tmp_path / "big.bmp").write_bytes(encode(gradient(400, 300), "BMP"))
    uris = [str(tmp_path / name) for name in ("ok.png", "strip.png", "big.bmp")]
    rows = check_images(uris, str(tmp_path), ImageLimits(max_bytes=100_000)).to_pylist()
    assert [r["image_status"] for r in rows] == ["ok", "unreadable", "unreadable"]
    assert rows[1]["image_error"] == "400000x1: aspect ratio 400000.0 exceeds --max-aspect 20"
    assert rows[2]["image_error"] == "351.6 KiB exceeds --max-bytes 100000"  # the listing's size
