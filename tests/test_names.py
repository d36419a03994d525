"""Names are data: every object, whatever its name, is one listing row whose uri reads it back."""
from __future__ import annotations

import io
import os

import boto3
import pytest
from PIL import Image

from apm.core import storage
from apm.core.names import image_id_from_name, local_path, local_uri
from apm.data.listing import ListingConfig, build_listing

#: Names both stores keep, with the image id each one carries.
NAMES: dict[str, int | None] = {
    "123.png": 123,
    "9223372036854775807.png": 2**63 - 1,  # the largest int64
    "9223372036854775808.png": None,  # one more
    "12345678901234567890123.png": None,  # a 23-digit camera counter
    "²³.png": None,  # str.isdigit() says digits, int() refuses them
    "١٢٣.png": None,  # Arabic-Indic digits: int() takes them, AVA ids are ASCII
    "😀 party.png": None,
    "שלום עולם.png": None,  # right to left
    "e\u0301te\u0301.png": None,  # combining accents
    "tab\there.png": None,
    "cr\rhere.png": None,
    " lead and trail .png": None,
    "hash#1.png": None,
    "what?.png": None,
    "a?versionId=b.png": None,  # s3fs reads this as a version selector
    "100%.png": None,
    "%41.png": None,  # must not come back as A.png
    "[ab].png": None,  # a glob that matches a.png and b.png
    "a.png": None,
    "b.png": None,
    "star*.png": None,
    "{x,y}.png": None,
    "a::b.png": None,  # fsspec's chaining separator
    "~tilde.png": None,
    "file:x.png": None,
    "x" * 251 + ".png": None,  # 255 bytes: the longest name ext4 and tmpfs allow
}
#: In sub-folders, which Ray tasks list.
SUBFOLDER_NAMES: dict[str, int | None] = {"sub [*]#?/7.png": 7, "sub [*]#?/[ab].png": None,
                                          "☃/8.png": 8}
#: S3 only: a key with an empty segment, as sloppy joins write them.
S3_NAMES: dict[str, int | None] = {"☃//10.png": 10, "☃//[ab].png": None}
#: Local only: moto's server cannot store a newline in a key (S3 can).
LOCAL_NAMES: dict[bytes, int | None] = {
    b"new\nline.png": None,
    b"caf\xe9.png": None,  # Latin-1, not UTF-8
    b"\xff\xfe.png": None,
    b"d\xe9j\xe0/9.png": 9,  # a folder that is not UTF-8
    b"d\xe9j\xe0/caf\xe9.png": None,
}


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (i % 256, i // 256, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def _local_tree(root: str) -> dict[bytes, int | None]:
    """Write one PNG per name under ``root``; returns content -> the image id its name carries."""
    named = {**{n.encode(): i for n, i in {**NAMES, **SUBFOLDER_NAMES}.items()}, **LOCAL_NAMES}
    expected = {}
    for i, (name, image_id) in enumerate(named.items()):
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content := _png(i))
        expected[content] = image_id
    return expected


def _check_listing(config: ListingConfig, expected: dict[bytes, int | None]) -> list[str]:
    listing = build_listing(config)
    rows = listing.read(["uri", "image_id", "size"]).to_pylist()
    assert len(rows) == len(expected)
    found = {}
    for row in rows:
        content = storage.read_bytes(row["uri"])
        assert content not in found, row["uri"]  # exactly one row per object
        assert row["size"] == len(content)
        found[content] = row["image_id"]
    assert found == expected  # every object, with the id its name carries
    return [row["uri"] for row in rows]


@pytest.mark.parametrize(("uri", "image_id"), [
    *NAMES.items(), ("s3://b/photos/0042.jpg", 42), ("/p/12.34.jpg", None), ("/p/.jpg", None),
    ("/p/-5.jpg", None), ("/p/ 5.jpg", None), ("/p/5", 5), ("/p/", None), ("", None)])
def test_image_id_from_name_never_raises(uri, image_id):
    assert image_id_from_name(uri) == image_id


def test_local_names_round_trip_through_uri(tmp_path):
    latin1 = os.fsdecode(b"/data/caf\xe9 100%.jpg")
    assert local_uri(latin1) == "file:///data/caf%E9%20100%25.jpg"  # as the README says
    assert local_path(local_uri(latin1)) == latin1
    assert os.fsencode(local_path("file:///data/caf%E9%20100%25.jpg")) == b"/data/caf\xe9 100%.jpg"
    for plain in ("/data/100%41.jpg", "/data/²³ [ab]#?.jpg", "relative/x.jpg"):
        assert local_uri(plain) == plain and local_path(plain) == plain
    relative = os.fsdecode(b"caf\xe9.jpg")
    assert local_path(local_uri(relative)) == os.path.abspath(relative)
    with pytest.raises(ValueError, match="file://host/x: a file URL must name an absolute path"):
        local_path("file://host/x")


def test_every_local_name_is_one_row_that_reads_back(ray_local, tmp_path):
    root = str(tmp_path / "photos")
    expected = _local_tree(root)
    # The driver walks the top level only; Ray tasks list its files and sub-folders (their
    # URIs travel to them).
    uris = _check_listing(ListingConfig(root, str(tmp_path / "listing"), tasks=2, max_depth=0),
                          expected)
    encoded = [u for u in uris if u.startswith("file:///")]
    assert len(encoded) == 4 and all(u.isascii() for u in encoded)  # the names not in UTF-8
    assert all(storage.exists(u) for u in encoded)


def test_every_s3_name_is_one_row_that_reads_back(ray_local, s3_bucket):
    client = boto3.client("s3")
    bucket = s3_bucket[len("s3://"):]
    expected = {}
    for i, (name, image_id) in enumerate({**NAMES, **SUBFOLDER_NAMES, **S3_NAMES}.items()):
        client.put_object(Bucket=bucket, Key=f"photos/{name}", Body=(content := _png(i)))
        expected[content] = image_id
    # Pages of 4 keys: the driver cuts the keys after the first page into 8 ranges, found by
    # probing with these names as StartAfter; Ray tasks list them.
    config = ListingConfig(f"{s3_bucket}/photos", f"{s3_bucket}/listing", tasks=8, page_keys=4)
    _check_listing(config, expected)
    assert len({p.rsplit("-", 2)[1] for p in build_listing(config).parts}) > 4  # tasks' parts


def test_score_cli_gives_one_ok_row_per_nasty_name(ray_local, tmp_path):
    from jobs import score as score_job

    root = str(tmp_path / "photos")
    expected = _local_tree(root)
    out = str(tmp_path / "out")
    assert score_job.main(["--input", root, "--output", out, "--model", "random:resnet18",
                           "--image-size", "32", "--batch-size", "16", "--concurrency", "1"]) == 0
    rows = storage.read_table(storage.join(out, "scores"), ["uri", "status", "error"]).to_pylist()
    assert len(rows) == len(expected)
    assert [r for r in rows if r["status"] != "ok"] == []
    assert sorted(storage.read_bytes(r["uri"]) for r in rows) == sorted(expected)
