"""The storage layer against the local disk and a real S3 HTTP endpoint (moto server)."""
from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apm.core import storage


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_round_trip_bytes_text_table(root):
    storage.write_bytes(storage.join(root, "a", "x.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "b.txt"), "héllo")
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["p", None]})
    storage.write_table(table, storage.join(root, "t.parquet"))

    assert storage.read_bytes(storage.join(root, "a", "x.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(root, "b.txt")) == "héllo"
    assert storage.read_table(storage.join(root, "t.parquet")).equals(table)
    listed = [f.uri for f in storage.list_files(root)]
    assert listed == sorted(listed)
    assert [u.rsplit("/", 1)[-1] for u in listed] == ["x.bin", "b.txt", "t.parquet"]
    assert [f.size for f in storage.list_files(root, suffixes=(".bin",))] == [2]
    assert storage.exists(storage.join(root, "b.txt"))
    assert not storage.exists(storage.join(root, "nope.txt"))


def test_missing_s3_bucket_is_named(s3_endpoint):
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket-x/data: bucket "
                                                   r"'no-such-bucket-x' does not exist"):
        storage.check_input("s3://no-such-bucket-x/data")
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.check_output("s3://no-such-bucket-x/out")


def test_missing_s3_prefix_is_named(s3_bucket):
    with pytest.raises(storage.StorageError, match=f"{s3_bucket}/absent: no such object or prefix"):
        storage.check_input(f"{s3_bucket}/absent")
    storage.write_text(f"{s3_bucket}/present/file.txt", "x")
    storage.check_input(f"{s3_bucket}/present")  # a prefix with objects is fine
    storage.check_output(f"{s3_bucket}/new-output")  # a writable bucket is fine
    assert not storage.exists(f"{s3_bucket}/new-output/.write_probe")


def test_unreachable_endpoint_fails_fast(monkeypatch, s3_endpoint):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(storage.StorageError, match=r"s3://bucket/x: cannot reach the S3 endpoint "
                                                   r"http://127.0.0.1:9"):
        storage.check_input("s3://bucket/x")
    assert time.monotonic() - start < 60


def test_bad_credentials_are_reported(monkeypatch, s3_endpoint_with_auth):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(storage.StorageError, match="s3://bucket/in: the credentials were rejected"):
        storage.check_input("s3://bucket/in")


def test_local_input_missing_is_named(tmp_path):
    with pytest.raises(storage.StorageError, match=f"{tmp_path}/nothing: no such file"):
        storage.check_input(str(tmp_path / "nothing"))


def test_configure_sets_the_endpoint_workers_inherit(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    storage.configure("http://minio.local:9000")
    assert storage.s3_endpoint() == "http://minio.local:9000"
    env = storage.ray_env_vars()
    assert env["AWS_ENDPOINT_URL"] == "http://minio.local:9000"
    assert "AWS_ACCESS_KEY_ID" not in env  # credentials never travel to workers


def test_remove_takes_exactly_the_path_never_a_glob(root):
    names = ["d/[ab].jpg", "d/a.jpg", "d/b.jpg", "d/*.jpg", "d/c.jpg", "x[1]/in.jpg",
             "x1/in.jpg", "x[1].jpg"]
    for name in names:
        storage.write_bytes(storage.join(root, name), name.encode())
    storage.remove(storage.join(root, "d/[ab].jpg"))
    storage.remove(storage.join(root, "d/*.jpg"))
    storage.remove(storage.join(root, "x[1]"), recursive=True)
    storage.remove(storage.join(root, "absent.jpg"))  # nothing there: nothing to do
    left = sorted(f.uri[len(storage.normalize(root)) + 1:] for f in storage.list_files(root))
    assert left == ["d/a.jpg", "d/b.jpg", "d/c.jpg", "x1/in.jpg", "x[1].jpg"]
    storage.remove(root, recursive=True)
    assert list(storage.list_files(root)) == []


def test_local_remove_of_a_folder_needs_recursive(tmp_path):
    storage.write_bytes(str(tmp_path / "f" / "x.jpg"), b"x")
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}/f: is a folder"):
        storage.remove(str(tmp_path / "f"))
    assert storage.exists(str(tmp_path / "f" / "x.jpg"))


def test_local_writes_are_whole_or_absent(tmp_path):
    uri = str(tmp_path / "out" / "t.parquet")
    old = pa.table({"id": pa.array([1, 2], pa.int64())})
    storage.write_table(old, uri)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        with storage.open_file(uri, "wb") as sink, pq.ParquetWriter(sink, old.schema) as writer:
            writer.write_table(old)
            assert storage.read_table(uri).equals(old)  # readers never see the new file half-done
            raise RuntimeError("killed mid-way")
    assert storage.read_table(uri).equals(old)
    assert os.listdir(tmp_path / "out") == ["t.parquet"]  # no temporary file left behind
    storage.write_text(uri, "new")
    assert storage.read_text(uri) == "new" and os.listdir(tmp_path / "out") == ["t.parquet"]
    assert (os.stat(uri).st_mode & 0o777) == 0o666 & ~_umask()  # a plain file's permissions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
