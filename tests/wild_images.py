"""A corpus of deliberately malformed image files, for tests of every stage that reads photos.

:func:`wild_images` returns ``{name: bytes}``: for every format this Pillow can write, a valid
file, then that file truncated at several offsets, with header bytes flipped, and its magic
number followed by random bytes; files declaring a huge size in a few bytes (PNG, GIF, BMP,
TIFF, JPEG headers); extreme aspect ratios (400000 x 1, 1 x 400000, 30:1); 1 x 1 images;
palette, 16-bit, CMYK, LA and other modes; multi-frame GIF, TIFF, WebP and APNG; a file of
zero bytes. The corpus is deterministic and small (a few hundred objects, about 2 MB).

Names are plain ASCII, ``FORMAT-CASE`` with a suffix the jobs list (the format's own where it
is one of :data:`apm.core.rows.IMAGE_SUFFIXES`, else ``.jpg``: libraries hold files whose
suffix lies). A valid-looking file may still be refused by a limit; every object must become
a crop or a :class:`apm.data.decode.DecodeError`, never another exception.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

from apm.core.rows import IMAGE_SUFFIXES

#: Modes tried in every format, besides the primary file's.
MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "I;16", "I", "F", "YCbCr")
#: Larger valid files are written again from flat pixels, and get no mode variants.
MAX_VALID_BYTES = 32 * 1024


def _suffix(fmt: str) -> str:
    own = [ext for ext, f in Image.registered_extensions().items() if f == fmt]
    return next((ext for ext in own if ext in IMAGE_SUFFIXES), ".jpg")


def _base(width: int = 48, height: int = 32) -> Image.Image:
    """A smooth gradient with a little texture: compresses well, survives every mode."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                    (x * 7 + y * 13) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def _convert(image: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    return image.convert(mode)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes | None:
    """``image`` written as ``fmt``, or None when this format cannot write it."""
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt, **kwargs)
    except Exception:  # noqa: BLE001 - each writer refuses modes in its own way
        return None
    return buf.getvalue() or None


def writable_formats() -> dict[str, bytes]:
    """{format: a valid small file} for every format this Pillow writes (some need a handler
    or an external program and write nothing: they are left out)."""
    Image.init()
    out = {}
    for fmt in sorted(Image.SAVE):
        for mode in ("RGB", "L", "1", "P", "F"):
            data = _save(_convert(_base(), mode), fmt)
            if data:
                # ICNS writes every size up to 1024 x 1024: keep it small with flat pixels.
                out[fmt] = data if len(data) <= MAX_VALID_BYTES else _save(
                    _convert(Image.new("RGB", _base().size, (90, 120, 200)), mode), fmt)
                break
    return out


def _mutations(fmt: str, data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    n = len(data)
    out = {}
    for cut in sorted({1, 8, 32, 128, n // 3, 2 * n // 3, n - 1}):
        if 0 < cut < n:
            out[f"truncated-{cut:06d}"] = data[:cut]
    for position in (1, 5, 11, 17, 25, 40):
        if position < n:
            flipped = bytearray(data)
            flipped[position] ^= 0xFF
            out[f"flipped-{position:03d}"] = bytes(flipped)
    middle = bytearray(data)
    middle[n // 2:n // 2 + 32] = rng.integers(0, 256, len(middle[n // 2:n // 2 + 32]),
                                              dtype=np.uint8).tobytes()
    out["scrambled-middle"] = bytes(middle)
    for keep in (4, 16):
        out[f"magic{keep:02d}-random"] = data[:keep] + rng.integers(0, 256, 2048, np.uint8).tobytes()
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` RGB, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _png_zeros(width: int, height: int) -> bytes:
    """A real decompression bomb: ``width`` x ``height`` grey pixels, all zero, deflated."""
    rows = b"\x00" * (width + 1) * 100  # 100 rows: a filter byte + a byte per grey pixel
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(rows) for _ in range(height // 100)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def _gif_header_only(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6  # 2-colour table
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def _bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def _tiff_header_only(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1),
               (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A valid JPEG whose frame header (SOF0) is patched to declare ``width`` x ``height``."""
    sof = data.index(b"\xff\xc0")
    patched = bytearray(data)
    patched[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def _strip(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (200, 40, 40))


def _extremes() -> dict[str, bytes]:
    strip, tall, wide30 = _strip(400_000, 1), _strip(1, 400_000), _base(600, 20)
    files = {
        "PNG-strip-400000x1": _save(strip, "PNG"),
        "PNG-strip-1x400000": _save(tall, "PNG"),
        "PNG-aspect-30to1": _save(wide30, "PNG"),
        "JPEG-aspect-30to1": _save(wide30, "JPEG"),
        "JPEG-strip-65000x1": _save(_strip(65_000, 1), "JPEG"),
        "GIF-strip-65535x1": _save(_strip(65_535, 1), "GIF"),
        "WEBP-strip-16383x1": _save(_strip(16_383, 1), "WEBP"),
        "TIFF-strip-400000x1": _save(strip, "TIFF", compression="tiff_deflate"),
        "TIFF-strip-1x400000": _save(tall, "TIFF", compression="tiff_deflate"),
        "BMP-strip-400000x1": _save(strip.convert("1"), "BMP"),
        "PNG-bomb-zeros-12000x10000": _png_zeros(12_000, 10_000),
        "PNG-declares-100000x100000": _png_header_only(100_000, 100_000),
        "PNG-declares-12000x10000": _png_header_only(12_000, 10_000),
        "PNG-declares-9500x10000": _png_header_only(9_500, 10_000),  # under --max-pixels
        "PNG-declares-2147483647x2147483647": _png_header_only(2**31 - 1, 2**31 - 1),
        "GIF-declares-65535x65535": _gif_header_only(65_535, 65_535),
        "BMP-declares-100000x100000": _bmp_header_only(100_000, 100_000),
        "BMP-declares-100000x-100000": _bmp_header_only(100_000, -100_000),  # top-down
        "TIFF-declares-100000x100000": _tiff_header_only(100_000, 100_000),
        "JPEG-declares-65535x65535": _jpeg_with_size(_save(_base(), "JPEG"), 65_535, 65_535),
        "JPEG-declares-9500x10000": _jpeg_with_size(_save(_base(), "JPEG"), 9_500, 10_000),
    }
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        files[f"{fmt}-1x1"] = _save(_base(1, 1), fmt)
    return files


def _multi_frame() -> dict[str, bytes]:
    frames = [_base().rotate(angle) for angle in (0, 90, 180)]
    files = {}
    for fmt in ("GIF", "TIFF", "WEBP", "PNG"):
        data = _save(frames[0], fmt, save_all=True, append_images=frames[1:])
        files[f"{fmt}-frames-3"] = data
        files[f"{fmt}-frames-3-truncated"] = data[:2 * len(data) // 3]
    return files


@lru_cache(maxsize=1)
def wild_images() -> dict[str, bytes]:
    """{name: bytes} of the whole corpus (see the module's docstring), in a fixed order."""
    with warnings.catch_warnings():  # some writers warn about the modes they are given
        warnings.simplefilter("ignore")
        return _corpus()


def _corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(13)
    files: dict[str, bytes] = {"empty-0-bytes": b"", "text-not-an-image": b"hello, world\n" * 4}
    for fmt, valid in writable_formats().items():
        files[f"{fmt}-valid"] = valid
        for case, data in _mutations(fmt, valid, rng).items():
            files[f"{fmt}-{case}"] = data
        small = len(_save(_base(), fmt) or b"") <= MAX_VALID_BYTES  # ICNS is not
        for mode in MODES if small else ():
            data = _save(_convert(_base(), mode), fmt)
            if data and data != valid and len(data) <= MAX_VALID_BYTES:
                files[f"{fmt}-mode-{mode.replace(';', '')}"] = data
    files.update(_extremes())
    files.update(_multi_frame())
    return {f"{name.lower()}{_suffix(name.split('-')[0])}": data
            for name, data in files.items() if data is not None}
