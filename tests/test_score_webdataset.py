"""WebDataset tar shards as jobs.score input: one row per image member, meta, bad shards and
members, resume, and a DuckDB join of the scores back to the user's table."""
from __future__ import annotations

import io
import json
import tarfile
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.schemas import SCORES_SCHEMA
from apm.data.decode import DEFAULT_LIMITS
from apm.data.inputs import resolve_kind
from apm.data.row_bytes import RowBytes
from apm.data.webdataset import expand_braces, member_key, shard_uris
from jobs import score as score_job

MODEL = "random:resnet18"  # the cheapest backbone the scoring tests use
SIZE = 32
NOT_AN_IMAGE = b"these are not pixels\n" * 10


def _jpeg(seed: int) -> bytes:
    photo = Image.fromarray(skdata.chelsea()).resize((40, 30)).rotate(seed * 11)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    return buffer.getvalue()


def _tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    """A shard of ``samples`` (key -> suffix -> bytes), members in key order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, members in samples.items():
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sample(key: str, seed: int) -> dict[str, bytes]:
    meta = {"caption": f"a cat {key}", "url": f"https://example.com/{key}.jpg"}
    return {"jpg": _jpeg(seed), "json": json.dumps(meta).encode(), "txt": meta["caption"].encode()}


def _header_offset(shard: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        return tar.getmember(name).offset


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    name = f"wds-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def shards(bucket):
    """Four shards: two good (one with a member that is not an image), one truncated inside
    its third photo, one whose second sample's header is overwritten."""
    good = _tar({f"0000{i}": _sample(f"0000{i}", i) for i in range(3)})
    odd = _tar({"00010": _sample("00010", 10), "00011": {"jpg": NOT_AN_IMAGE}})
    three = _tar({f"0002{i}": _sample(f"0002{i}", 20 + i) for i in range(3)})
    cut = _header_offset(three, "00022.jpg") + 512 + 100  # 100 bytes into the third photo
    corrupt = bytearray(_tar({f"0003{i}": _sample(f"0003{i}", 30 + i) for i in range(3)}))
    broken = _header_offset(bytes(corrupt), "00031.jpg")
    corrupt[broken:broken + 512] = b"\x7f" * 512
    content = {"00000.tar": good, "00001.tar": odd, "00002.tar": three[:cut],
               "00003.tar": bytes(corrupt)}
    for name, data in content.items():
        storage.write_bytes(f"{bucket}/shards/{name}", data)
    return {"truncated_at": _header_offset(three, "00022.jpg"), "corrupt_at": broken}


def _run(source: str, out: str) -> int:
    return score_job.main(["--input", source, "--output", out, "--model", MODEL,
                           "--image-size", str(SIZE), "--rows-per-file", "3", "--batch-size", "4",
                           "--concurrency", "1"])


@pytest.fixture(scope="module")
def scored(ray_local, bucket, shards, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wds") / "out")
    assert _run(f"{bucket}/shards/{{00000..00003}}.tar", out) == 0
    table = storage.read_table(storage.join(out, "scores"))
    return out, table.to_pandas().set_index("uri")


def test_brace_patterns_expand_with_zero_padding():
    assert expand_braces("s3://b/{00008..00011}.tar") == [
        f"s3://b/{n:05d}.tar" for n in range(8, 12)]
    assert expand_braces("x{0..1}-{a,b}") == ["x0-a", "x0-b", "x1-a", "x1-b"]
    with pytest.raises(ValueError, match="backwards"):
        expand_braces("{5..1}")
    assert member_key("dir/000.jpg") == "dir/000" and member_key("a.b.c.png") == "a"


def test_shards_are_found_by_prefix_pattern_or_manifest(bucket, shards):
    names = [f"{bucket}/shards/0000{i}.tar" for i in range(4)]
    assert resolve_kind(f"{bucket}/shards", "auto", None) == "webdataset"
    assert shard_uris(f"{bucket}/shards/") == names
    manifest = f"{bucket}/shard-list.parquet"
    storage.write_table(pa.table({"uri": names[:2]}), manifest)
    assert shard_uris(manifest) == names[:2]


def test_one_row_per_image_member_with_its_meta(scored, bucket):
    _, frame = scored
    shard = f"{bucket}/shards/00000.tar"
    for i in range(3):
        row = frame.loc[f"{shard}#0000{i}.jpg"]
        assert row["status"] == "ok", row["error"]
        assert row["shard"] == shard and row["key"] == f"0000{i}"
        assert json.loads(row["meta"]) == {"caption": f"a cat 0000{i}",
                                           "url": f"https://example.com/0000{i}.jpg"}
        assert (row["width"], row["height"]) == (40, 30) and 1 <= row["mean"] <= 10
    # 3 + 2 members, 2 readable of the truncated shard and 1 of the corrupt one, 2 error rows.
    assert len(frame) == 10 and frame.index.is_unique
    assert not frame.index.str.endswith((".json", ".txt")).any()


def test_a_member_that_is_not_an_image_is_a_permanent_error(scored, bucket):
    row = scored[1].loc[f"{bucket}/shards/00001.tar#00011.jpg"]
    assert row["status"] == "error" and row["error_kind"] == "permanent"
    assert "recognised" in row["error"] and row["meta"] is None


def test_bad_shards_give_their_readable_rows_and_one_error_row(scored, bucket, shards):
    frame = scored[1]
    for name, keys, offset in [("00002.tar", ["00020", "00021"], shards["truncated_at"]),
                               ("00003.tar", ["00030"], shards["corrupt_at"])]:
        shard = f"{bucket}/shards/{name}"
        rows = frame[frame["shard"] == shard]
        ok = rows[rows["status"] == "ok"]
        assert sorted(ok["key"]) == keys
        errors = rows[rows["status"] == "error"]
        assert len(errors) == 1
        error = errors.iloc[0]
        assert errors.index[0] == f"{shard}#@{offset}" and error["error_kind"] == "permanent"
        assert shard in error["error"] and f"byte {offset}" in error["error"]


def test_resume_keeps_untouched_parts_and_one_row_per_member(scored, bucket):
    out, frame = scored
    parts = sorted(storage.list_files(storage.join(out, "scores"), (".parquet",)),
                   key=lambda f: f.uri)
    assert len(parts) == 4  # 10 rows, 3 per file
    kept = {p.uri: pq.read_table(p.uri) for p in parts[1:]}
    storage.remove(parts[0].uri)
    assert _run(f"{bucket}/shards/{{00000..00003}}.tar", out) == 0
    again = storage.read_table(storage.join(out, "scores"))
    assert again.schema.equals(SCORES_SCHEMA)
    assert sorted(again.column("uri").to_pylist()) == sorted(frame.index)
    for uri, table in kept.items():
        assert pq.read_table(uri).equals(table)


def test_scores_join_back_to_the_users_table_with_duckdb(scored, bucket):
    out, _ = scored
    users = pa.table({"shard": [f"{bucket}/shards/00000.tar"] * 3,
                      "key": [f"0000{i}" for i in range(3)],
                      "caption": [f"mine {i}" for i in range(3)]})
    db = duckdb.connect()
    db.register("users", users)  # the user's own table
    joined = db.sql(
        f"SELECT u.key, u.caption, s.mean FROM users u JOIN "
        f"read_parquet('{out}/scores/*.parquet') s USING (shard, key) ORDER BY u.key").fetchall()
    assert [(k, c) for k, c, _ in joined] == [(f"0000{i}", f"mine {i}") for i in range(3)]
    assert all(1 <= m <= 10 for _, _, m in joined)


def test_members_of_one_shard_are_read_with_one_ranged_get(tmp_path, monkeypatch):
    shard = _tar({"a": {"jpg": b"A" * 700}, "b": {"jpg": b"B" * 300}})
    path = tmp_path / "s.tar"
    path.write_bytes(shard)
    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        members = [tar.getmember(n) for n in ("a.jpg", "b.jpg")]
    ranges = []
    real = storage.read_range
    monkeypatch.setattr(storage, "read_range",
                        lambda uri, start, end: ranges.append((start, end)) or real(uri, start, end))
    batch = {"uri": np.array([f"{path}#a.jpg", f"{path}#b.jpg"], dtype=object),
             "shard": np.array([str(path)] * 2, dtype=object),
             "offset": np.array([m.offset_data for m in members]),
             "size": np.array([m.size for m in members]),
             "error": np.array(["", ""], dtype=object)}
    read = RowBytes(batch, DEFAULT_LIMITS)
    assert read(0) == b"A" * 700 and read(1) == b"B" * 300
    assert ranges == [(members[0].offset_data, members[1].offset_data + 300)]


def test_a_store_fault_while_listing_a_shard_is_transient(tmp_path, monkeypatch):
    from apm.data.listing import PartWriter
    from apm.data.webdataset import list_shard

    path = tmp_path / "s.tar"
    path.write_bytes(_tar({"a": _sample("a", 1)}))

    class Dropping(io.BytesIO):
        def read(self, *args):
            raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(storage, "open_file", lambda uri, mode="rb": Dropping())
    writer = PartWriter(str(tmp_path / "parts"), "00001", 100, (".jpg",))
    with pytest.raises(storage.TransientStorageError):  # the listing task is retried
        list_shard(writer, str(path))
    assert writer.rows == []
