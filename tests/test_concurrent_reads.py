"""Concurrent reads: a batch's photos are fetched at once (bounded), through a proxy that adds a
round-trip latency and counts requests, with the same rows as reading them one by one."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.rows import KIND_PERMANENT, KIND_TRANSIENT, NO_ERROR
from apm.data.decode import ImageLimits
from apm.models.transforms import image_transform
from apm.stages.inference import decode_batch
from benchmarks._tcp_proxy import TcpProxy

N = 40
LIMITS = ImageLimits(max_bytes=50_000)
TRANSFORM = image_transform("resnet18", 32)


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(skdata.astronaut()).resize((64, 64)), np.int16)
    noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture()
def photos(s3_bucket) -> dict[str, bytes]:
    """``N`` JPEGs, an empty object and one over :data:`LIMITS`, put straight to the store."""
    stored = {f"{s3_bucket}/p/{i:03d}.jpg": _jpeg(i) for i in range(N)}
    stored[f"{s3_bucket}/p/empty.jpg"] = b""
    stored[f"{s3_bucket}/p/large.jpg"] = os.urandom(LIMITS.max_bytes + 1)
    for uri, data in stored.items():
        storage.write_bytes(uri, data)
    return stored


@pytest.fixture()
def proxy(s3_endpoint, monkeypatch):
    """The store behind a proxy with 30 ms added to each round trip; storage reads through it."""
    host, port = s3_endpoint.rsplit("//", 1)[1].split(":")
    proxy = TcpProxy(host, int(port), latency_s=0.03)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


def _batch(uris: list[str], sizes: list[float] | None = None,
           errors: list[str] | None = None) -> dict[str, np.ndarray]:
    batch = {"row": np.arange(len(uris)), "uri": np.array(uris, dtype=object)}
    if sizes is not None:
        batch["size"] = np.array(sizes, dtype=np.float64)
    if errors is not None:
        batch["error"] = np.array(errors, dtype=object)
    return batch


def test_read_many_overlaps_reads_within_its_bound(photos, proxy):
    uris = sorted(photos)
    requests = [storage.ReadRequest(uri) for uri in uris]
    assert storage.read_many(requests, max_in_flight=4) == [photos[uri] for uri in uris]
    assert proxy.requests >= len(uris)
    assert 1 < proxy.max_in_flight <= 4


def test_read_many_ranges_and_bounds_each_request(photos, proxy, s3_bucket, tmp_path):
    photo = f"{s3_bucket}/p/000.jpg"
    local = tmp_path / "000.jpg"
    local.write_bytes(photos[photo])
    for uri in (photo, str(local)):  # the same answers from S3 and a local file
        got = storage.read_many([storage.ReadRequest(uri, start=10, end=20),
                                 storage.ReadRequest(uri, start=10**6),
                                 storage.ReadRequest(uri, max_bytes=5),
                                 storage.ReadRequest(uri + ".absent", max_bytes=5)])
        assert got[0] == photos[photo][10:20] and got[1] == b""
        assert isinstance(got[2], storage.ObjectTooLargeError)
        assert isinstance(got[3], FileNotFoundError)


def test_decode_batch_fetches_at_once_with_the_rows_of_sequential_reads(photos, proxy,
                                                                        s3_bucket):
    good = sorted(uri for uri in photos if "/p/0" in uri)
    missing, empty, large = (f"{s3_bucket}/p/{name}.jpg" for name in ("absent", "empty", "large"))
    uris = [*good, missing, empty, large, large, good[0]]
    nan = float("nan")
    # The second large one is refused on its listed size, unread; the last row is known bad.
    sizes = [nan] * (len(good) + 3) + [LIMITS.max_bytes + 1, nan]
    errors = [""] * (len(uris) - 1) + ["manifest image_status 'error'"]
    out = decode_batch(_batch(uris, sizes, errors), TRANSFORM, {}, LIMITS)

    assert 1 < proxy.max_in_flight <= storage.MAX_READS_IN_FLIGHT
    assert proxy.requests == len(good) + 3  # one GET per photo read, none for refused rows
    for i, uri in enumerate(good):
        crop, width, height = TRANSFORM.crop_decoded(photos[uri], LIMITS)
        assert out["error"][i] == NO_ERROR and out["error_kind"][i] == NO_ERROR
        np.testing.assert_array_equal(out["crop"][i], crop)
        assert (out["width"][i], out["height"][i]) == (width, height)
    n = len(good)
    assert list(out["error"][n:]) == [
        "not found",
        "empty file (0 bytes)",
        f"more than 48.8 KiB exceeds --max-bytes {LIMITS.max_bytes}",
        f"48.8 KiB exceeds --max-bytes {LIMITS.max_bytes}",
        "manifest image_status 'error'"]
    assert set(out["error_kind"][n:]) == {KIND_PERMANENT}
    assert not out["width"][n:].any() and not out["crop"][n:].any()


def test_a_store_fault_fails_the_batch_or_is_a_transient_row_when_isolated(photos, proxy,
                                                                           monkeypatch):
    # One attempt per read: the fault shows at once instead of after botocore's backoff.
    monkeypatch.setitem(storage._BULK_S3_CONFIG, "retries", {"max_attempts": 1})
    uris = sorted(uri for uri in photos if "/p/0" in uri)[:3]
    proxy.outage()
    with pytest.raises(storage.TransientStorageError):
        decode_batch(_batch(uris), TRANSFORM, {}, LIMITS)
    out = decode_batch(_batch(uris[:1]), TRANSFORM, {}, LIMITS, isolated=True)
    assert out["error_kind"][0] == KIND_TRANSIENT
    assert out["error"][0].startswith("storage fault after retries: ")
    proxy.restore()
    out = decode_batch(_batch(uris), TRANSFORM, {}, LIMITS)
    assert list(out["error"]) == [NO_ERROR] * len(uris)
