"""The issue's "done when": a library mixing every odd case, through the CLI, on the S3 endpoint.

Nasty names, the malformed corpus of every format Pillow writes (tests/wild_images.py), strips,
an object over --max-bytes and one over --max-pixels: exactly one row per object, each with the
status a direct decode of its bytes gives, in bounded time.
"""
from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image
from test_names import NAMES
from wild_images import wild_images

from apm.core import storage
from apm.data.decode import DecodeError, ImageLimits
from apm.models.transforms import image_transform
from jobs import score as score_job

MODEL = "random:resnet18"
SIZE = 32
LIMITS = ImageLimits(max_bytes=200_000, max_pixels=2_000_000)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_wild_library_gives_one_right_row_per_object(ray_local, s3_bucket):
    rng = np.random.default_rng(0)
    library = {f"wild/{name}": data for name, data in wild_images().items()}
    library.update({f"names/{name}": _png(Image.new("RGB", (40, 30), (i, 90, 200)))
                    for i, name in enumerate(NAMES)})
    library["limits/strip-400000x1.png"] = _png(Image.new("L", (400_000, 1), 128))
    library["limits/noise-over-max-bytes.png"] = _png(Image.fromarray(
        rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)))  # ~270 kB of noise
    library["limits/over-max-pixels.png"] = _png(Image.new("1", (2_000, 1_500)))
    for name, data in library.items():
        storage.write_bytes(f"{s3_bucket}/lib/{name}", data)
    out = f"{s3_bucket}/wild-out"
    start = time.monotonic()
    code = score_job.main(["--input", f"{s3_bucket}/lib/", "--output", out, "--model", MODEL,
                           "--image-size", str(SIZE), "--no-embedding", "--rows-per-file", "200",
                           "--max-bytes", str(LIMITS.max_bytes),
                           "--max-pixels", str(LIMITS.max_pixels)])
    assert code == 0 and time.monotonic() - start < 600
    frame = storage.read_table(f"{out}/scores").to_pandas()
    listed = {f"{s3_bucket}/lib/{name}" for name in library
              if name.lower().endswith(score_job.IMAGE_SUFFIXES)}
    assert len(frame) == len(listed) and set(frame["uri"]) == listed  # one row per object
    transform = image_transform("resnet18", SIZE)
    by_uri = frame.set_index("uri")
    for name, data in library.items():
        uri = f"{s3_bucket}/lib/{name}"
        if uri not in listed:
            continue
        row = by_uri.loc[uri]
        try:
            transform.crop_decoded(data, LIMITS)
            expected = "ok"
        except DecodeError:
            expected = "error"
        assert row["status"] == expected, (name, row["error"])
        assert (row["error_kind"] == "permanent") if expected == "error" else row["error_kind"] is None
    assert by_uri.loc[f"{s3_bucket}/lib/names/²³.png", "status"] == "ok"
    assert "--max-aspect" in by_uri.loc[f"{s3_bucket}/lib/limits/strip-400000x1.png", "error"]
    assert "--max-bytes" in by_uri.loc[f"{s3_bucket}/lib/limits/noise-over-max-bytes.png", "error"]
    assert "--max-pixels" in by_uri.loc[f"{s3_bucket}/lib/limits/over-max-pixels.png", "error"]
    assert (frame["status"] == "ok").sum() >= len(NAMES)  # the corpus is not all refusals
