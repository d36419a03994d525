"""Scoring under faults: a worker that dies on one photo, a store that drops out mid-job,
resume that checks what it keeps, transient rows scored again, one run per output."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.lease import OutputLease
from apm.core.rows import KIND_TRANSIENT, WORKER_DIED
from apm.models.transforms import ImageTransform, image_transform
from apm.stages.inference import predict_rows
from apm.stages.scoring import SHARD_KEY, ScoreConfig, ScorePredictor, run_score
from benchmarks._tcp_proxy import TcpProxy
from jobs import score as score_job

MODEL = "random:resnet18"
SIZE = 32


def _png(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(skdata.chelsea()).resize((size, size)), np.int16)
    noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    return buffer.getvalue()


def _photos(folder, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{i:03d}.png").write_bytes(_png(i))
    return sorted(str(p) for p in folder.iterdir())


def _config(src, out, **kw) -> ScoreConfig:
    settings = {"image_size": SIZE, "batch_size": 4, "rows_per_file": 4, "concurrency": 1,
                "embedding": False, **kw}
    return ScoreConfig(input=str(src), out=str(out), model=MODEL, **settings)


def _table(out) -> pa.Table:
    return storage.read_table(storage.join(str(out), "scores"))


def test_a_worker_that_dies_on_one_photo_costs_that_photo_only(ray_local, tmp_path):
    """A decoder that kills its process on one marked object: the job ends, every other photo
    of its batch is scored, the marked one is an error row."""
    uris = _photos(tmp_path / "photos", 11)
    marked = tmp_path / "photos" / "p005.png"
    marked.write_bytes(b"CRASH" + marked.read_bytes())
    base = image_transform("resnet18", SIZE)

    class CrashingTransform(ImageTransform):  # defined here: Ray ships it by value
        def crop_decoded(self, data, limits):
            if data.startswith(b"CRASH"):
                os._exit(1)  # what a segfault in a decoder or the OOM killer looks like
            return super().crop_decoded(data, limits)

    inputs = pa.table({"uri": uris})
    start = time.monotonic()
    results = list(predict_rows(
        inputs, np.arange(len(uris)), CrashingTransform(**dataclasses.asdict(base)),
        ScorePredictor, {"model": MODEL, "image_size": SIZE, "embedding": False},
        batch_size=4, concurrency=1, device="cpu", task_retries=1))
    rows = np.concatenate([r["row"] for r in results])
    errors = np.concatenate([r["error"] for r in results])
    means = np.concatenate([r["mean"] for r in results])
    assert sorted(rows.tolist()) == list(range(len(uris)))  # each row exactly once
    by_row = dict(zip(rows.tolist(), zip(errors, means)))
    assert by_row[5][0] == WORKER_DIED and np.isnan(by_row[5][1])
    for row, (error, mean) in by_row.items():
        if row != 5:
            assert error == "" and 1 <= mean <= 10, (row, error)
    assert time.monotonic() - start < 300


def test_a_store_outage_mid_job_leaves_no_error_row(ray_local, s3_bucket, s3_endpoint,
                                                    monkeypatch):
    """Connections to the store are refused (and open ones reset) for ~20 s mid-job, then the
    same data is served again: the job finishes and no row is an error."""
    n = 64
    for i in range(n):
        storage.write_bytes(f"{s3_bucket}/lib/p{i:03d}.png", _png(i))
    host, port = s3_endpoint.rsplit("//", 1)[1].split(":")
    proxy = TcpProxy(host, int(port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    out = f"{s3_bucket}/faults-out"
    first_file = f"{out}/scores/part-000000.parquet"
    outage = {}

    def break_mid_job():
        import boto3

        direct = boto3.client("s3", endpoint_url=s3_endpoint)
        bucket, key = first_file[len("s3://"):].split("/", 1)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until scoring has begun writing
            if direct.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"):
                break
            time.sleep(0.05)
        outage["start"] = time.monotonic()
        proxy.outage()
        time.sleep(20)
        proxy.restore()
        outage["end"] = time.monotonic()

    breaker = threading.Thread(target=break_mid_job, daemon=True)
    breaker.start()
    try:
        code = score_job.main(["--input", f"{s3_bucket}/lib/", "--output", out, "--model", MODEL,
                               "--image-size", str(SIZE), "--rows-per-file", "8",
                               "--batch-size", "2", "--concurrency", "1", "--no-embedding"])
    finally:
        breaker.join(timeout=60)
        proxy.close()
    assert code == 0
    assert "start" in outage and "end" in outage  # the outage really happened mid-job
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    frame = _table(out).to_pandas()
    assert len(frame) == n and frame["uri"].is_unique
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", "error"].tolist()
    assert frame["error_kind"].isna().all()


def _mark_transient(path, rows: list[int]) -> None:
    """Turn rows of a shard file into what a run that met a long store outage leaves."""
    table = pq.read_table(path)
    meta = table.schema.metadata
    status = table.column("status").to_pylist()
    error = table.column("error").to_pylist()
    kind = table.column("error_kind").to_pylist()
    for row in rows:
        status[row], error[row], kind[row] = "error", "storage fault after retries", KIND_TRANSIENT
    for name, values in (("status", status), ("error", error), ("error_kind", kind)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values, pa.string()))
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_retry_errors_rescores_exactly_the_transient_rows_in_place(ray_local, tmp_path):
    src, out = tmp_path / "photos", tmp_path / "out"
    uris = _photos(src, 10)
    (src / "empty.png").write_bytes(b"")
    run_score(_config(src, out))
    shard = out / "scores" / "part-000001.parquet"
    before = {p.name: pq.read_table(p) for p in (out / "scores").iterdir()}
    _mark_transient(shard, [0, 2])

    # A plain resume keeps them (they are rows of a whole file) and says how to retry them.
    summary = run_score(_config(src, out))
    assert summary.rows == 0 and summary.files_kept == 3
    summary = run_score(_config(src, out, retry_errors=True))
    assert summary.rows_retried == 2 and summary.rows == 2 and summary.ok == 2
    table = _table(out)
    frame = table.to_pandas()
    assert sorted(frame["uri"]) == sorted([*uris, str(src / "empty.png")])  # one row each
    assert (frame["status"] == "ok").sum() == 10
    assert frame.loc[frame["status"] == "error", "error_kind"].tolist() == ["permanent"]
    after = pq.read_table(shard)
    old = before[shard.name]
    # The two rows were scored again; the shard's other rows are the earlier run's, untouched.
    assert after.column("uri").equals(old.column("uri"))
    np.testing.assert_allclose(after.column("mean").to_numpy(), old.column("mean").to_numpy(),
                               rtol=1e-5)
    stamps = [(after.column("scored_at")[i].as_py(), old.column("scored_at")[i].as_py())
              for i in range(4)]
    assert stamps[1][0] == stamps[1][1] and stamps[3][0] == stamps[3][1]  # kept
    assert stamps[0][0] > stamps[0][1] and stamps[2][0] > stamps[2][1]  # scored again
    for name, table in before.items():
        if name != shard.name:
            assert pq.read_table(out / "scores" / name).equals(table)


def test_resume_rescores_shard_files_that_do_not_match_the_listing(ray_local, tmp_path):
    src, out = tmp_path / "photos", tmp_path / "out"
    _photos(src, 12)
    run_score(_config(src, out))
    stamp = json.loads(pq.read_metadata(out / "scores" / "part-000000.parquet").metadata[
        SHARD_KEY.encode()])
    assert stamp["first_row"] == 0 and stamp["rows"] == 4 and stamp["first_uri"].endswith("p000.png")

    # The listing deleted between runs, the input unchanged: listed again, every file kept.
    storage.remove(str(out / "_listing"), recursive=True)
    summary = run_score(_config(src, out))
    assert summary.files_kept == 3 and summary.rows == 0

    # The listing deleted and a photo added at the front: every shard's rows moved by one.
    storage.remove(str(out / "_listing"), recursive=True)
    (src / "a000.png").write_bytes(_png(99))
    summary = run_score(_config(src, out))
    assert summary.files_kept == 0 and summary.rows == 13
    frame = _table(out).to_pandas()
    assert len(frame) == 13 and frame["uri"].is_unique and (frame["status"] == "ok").all()
    assert json.loads((out / "_job.json").read_text())["listing_digest"].startswith("sha256:")


def test_resume_with_another_model_rescores_even_without_the_job_record(ray_local, tmp_path):
    src, out = tmp_path / "photos", tmp_path / "out"
    _photos(src, 4)
    run_score(_config(src, out))
    with pytest.raises(ValueError, match="model_id"):
        run_score(ScoreConfig(**{**dataclasses.asdict(_config(src, out)),
                                 "model": "random:efficientnet_lite0"}))
    (out / "_job.json").unlink()  # the record lost: the shard files' own stamps still tell
    summary = run_score(ScoreConfig(**{**dataclasses.asdict(_config(src, out)),
                                       "model": "random:efficientnet_lite0"}))
    assert summary.files_kept == 0 and summary.rows == 4
    assert set(_table(out).column("model_id").to_pylist()) == {"random:efficientnet_lite0"}


def test_a_damaged_job_record_or_listing_is_one_clear_line(ray_local, tmp_path, capsys):
    src, out = tmp_path / "photos", tmp_path / "out"
    _photos(src, 3)
    run_score(_config(src, out))
    args = ["--input", str(src), "--output", str(out), "--model", MODEL,
            "--image-size", str(SIZE), "--rows-per-file", "4", "--no-embedding"]
    job = out / "_job.json"
    job.write_text(job.read_text()[:20])  # truncated
    with pytest.raises(SystemExit) as exit_info:
        score_job.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert str(job) in err[0] and "--overwrite" in err[0] and "Traceback" not in err[0]
    job.unlink()
    done = out / "_listing" / "_SUCCESS.json"
    done.write_text("{")
    with pytest.raises(SystemExit) as exit_info:
        score_job.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert str(out / "_listing") in err[0] and "delete it" in err[0]


def test_one_run_per_output(ray_local, tmp_path, capsys):
    src, out = tmp_path / "photos", tmp_path / "out"
    _photos(src, 3)
    run_score(_config(src, out))
    before = sorted(p.name for p in (out / "scores").iterdir())
    args = ["--input", str(src), "--output", str(out), "--model", MODEL,
            "--image-size", str(SIZE), "--rows-per-file", "4", "--no-embedding"]
    with OutputLease(str(out)):  # another live run holds OUT
        for extra in ([], ["--overwrite"]):
            with pytest.raises(SystemExit) as exit_info:
                score_job.main(args + extra)
            err = capsys.readouterr().err
            assert exit_info.value.code == 2 and str(os.getpid()) in err, err
            # --overwrite never deletes an output that a live run holds.
            assert sorted(p.name for p in (out / "scores").iterdir()) == before
    assert score_job.main(args) == 0  # released: the next run goes ahead
