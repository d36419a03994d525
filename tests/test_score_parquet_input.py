"""Parquet files of image bytes as jobs.score input: a binary column and a {bytes, path}
struct, --id-column and default row numbers, --keep-columns typed as in the input, null images,
and a DuckDB join of the scores back to the user's table."""
from __future__ import annotations

import io
import uuid

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.schemas import SCORES_SCHEMA
from jobs import score as score_job

MODEL = "random:resnet18"  # the cheapest backbone the scoring tests use
SIZE = 32


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.coffee()).resize((36, 24)).rotate(seed * 13).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(uri: str, table: pa.Table) -> None:
    """Two rows per row group: a batch's rows span groups."""
    fs, path = storage.arrow_filesystem(uri)
    pq.write_table(table, path, filesystem=fs, row_group_size=2)


@pytest.fixture(scope="module")
def bucket(s3_endpoint):
    import boto3

    name = f"pq-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


def _run(source: str, out: str, *options: str) -> int:
    return score_job.main(["--input", source, "--output", out, "--model", MODEL,
                           "--image-size", str(SIZE), "--rows-per-file", "3", "--batch-size", "4",
                           "--concurrency", "1", *options])


#: img2dataset-like files: a binary ``jpg`` column, ``id``, and columns to keep.
BINARY_FILES = {
    "a.parquet": pa.table({"id": pa.array([101, 102, 103, 104], pa.int64()),
                           "jpg": pa.array([_png(0), None, _png(2), _png(3)], pa.binary()),
                           "caption": ["one", "two", "three", "four"],
                           "aesthetic": pa.array([1.5, 2.5, 3.5, 4.5], pa.float32())}),
    "b.parquet": pa.table({"id": pa.array([201, 202], pa.int64()),
                           "jpg": pa.array([_png(4), _png(5)], pa.binary()),
                           "caption": ["five", "six"],
                           "aesthetic": pa.array([5.5, 6.5], pa.float32())}),
}


@pytest.fixture(scope="module")
def binary_run(ray_local, bucket, tmp_path_factory):
    for name, table in BINARY_FILES.items():
        _write(f"{bucket}/binary/{name}", table)
    out = str(tmp_path_factory.mktemp("pq") / "binary")
    assert _run(f"{bucket}/binary/", out, "--image-column", "jpg", "--id-column", "id",
                "--keep-columns", "caption,aesthetic") == 0
    return out, storage.read_table(storage.join(out, "scores"))


def test_binary_column_with_id_column_and_kept_columns(binary_run, bucket):
    _, table = binary_run
    # The kept columns follow the standard ones, typed as in the input.
    assert table.schema.equals(pa.schema([*SCORES_SCHEMA, pa.field("caption", pa.string()),
                                          pa.field("aesthetic", pa.float32())]))
    frame = table.to_pandas().set_index("key")
    assert sorted(frame.index) == ["101", "102", "103", "104", "201", "202"]
    row = frame.loc["103"]
    assert row["status"] == "ok", row["error"]
    assert row["uri"] == f"{bucket}/binary/a.parquet#103"
    assert row["shard"] == f"{bucket}/binary/a.parquet" and row["image_id"] == 103
    assert (row["caption"], row["aesthetic"]) == ("three", 3.5)
    assert (row["width"], row["height"]) == (36, 24)
    assert (frame.drop(index="102")["status"] == "ok").all()


def test_a_null_image_is_an_error_row(binary_run):
    row = binary_run[1].to_pandas().set_index("key").loc["102"]
    assert row["status"] == "error" and row["error_kind"] == "permanent"
    assert "null" in row["error"] and row["caption"] == "two"


def test_scores_join_back_on_the_id_column_with_duckdb(binary_run):
    out, _ = binary_run
    users = pa.table({"id": pa.array([104, 201], pa.int64()), "owner": ["ann", "bob"]})
    db = duckdb.connect()
    db.register("users", users)  # the user's own table
    joined = db.sql(
        f"SELECT u.id, u.owner, s.status FROM users u JOIN "
        f"read_parquet('{out}/scores/*.parquet') s ON s.key = CAST(u.id AS VARCHAR) "
        "ORDER BY u.id").fetchall()
    assert joined == [(104, "ann", "ok"), (201, "bob", "ok")]


def test_struct_column_and_default_row_numbers(ray_local, bucket, tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    source = f"{bucket}/hf/train.parquet"
    _write(source, pa.table({"image": pa.array(
        [{"bytes": _png(i), "path": f"img{i}.png"} for i in range(3)], image)}))
    out = str(tmp_path / "hf")
    assert _run(source, out, "--image-column", "image") == 0
    frame = storage.read_table(storage.join(out, "scores")).to_pandas()
    assert sorted(frame["key"]) == ["0", "1", "2"]
    assert sorted(frame["uri"]) == [f"{source}#{i}" for i in range(3)]
    assert (frame["status"] == "ok").all() and frame["image_id"].isna().all()


def test_option_errors_are_one_line(tmp_path, capsys):
    for options, words in [(["--keep-columns", "a"], "--image-column"),
                           (["--input-kind", "parquet"], "--image-column")]:
        with pytest.raises(SystemExit) as exit_info:
            _run(str(tmp_path), str(tmp_path / "out"), *options)
        assert exit_info.value.code == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("error:") and words in message and "\n" not in message


def test_resume_keeps_the_kept_columns_and_one_row_per_input_row(binary_run, bucket):
    out, table = binary_run
    parts = sorted(info.uri for info in storage.list_files(storage.join(out, "scores"),
                                                           (".parquet",)))
    assert len(parts) == 2  # 6 rows, 3 per file
    kept = pq.read_table(parts[1])
    storage.remove(parts[0])
    assert _run(f"{bucket}/binary/", out, "--image-column", "jpg", "--id-column", "id",
                "--keep-columns", "caption,aesthetic") == 0
    again = storage.read_table(storage.join(out, "scores"))
    assert again.schema.equals(table.schema) and pq.read_table(parts[1]).equals(kept)
    assert sorted(again.column("key").to_pylist()) == sorted(table.column("key").to_pylist())
    assert again.column("caption").to_pylist() == table.column("caption").to_pylist()
