"""The main job on its embedded default: every stage, then a rerun that skips them."""
from __future__ import annotations

import pyarrow.parquet as pq

from apm.models import load_checkpoint
from apm.schemas import BUCKET_RMSE_SCHEMA, MANIFEST_SCHEMA, PER_IMAGE_FIT_SCHEMA
from jobs import pipeline

SMALL = ["--n", "40", "--size", "64", "--train-size", "32", "--train-epochs", "1",
         "--clusters", "4"]


def test_pipeline_runs_then_skips(tmp_path, ray_local, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default work folder is ./work
    assert pipeline.main(SMALL) == 0
    out = capsys.readouterr().out
    work = tmp_path / "work"
    for stage in ("synthetic", "prepare", "fit_distributions", "teacher", "distill", "finetune",
                  "evaluate", "score", "cluster"):
        assert f"[{stage}] done" in out
    manifest = pq.read_table(work / "ava" / "manifest.parquet")
    assert manifest.schema == MANIFEST_SCHEMA and manifest.num_rows == 40
    assert set(manifest.column("image_status").to_pylist()) == {"ok"}
    assert pq.read_table(work / "fits" / "per_image.parquet").schema == PER_IMAGE_FIT_SCHEMA
    assert pq.read_table(work / "fits" / "bucket_rmse.parquet").schema == BUCKET_RMSE_SCHEMA
    assert str(work / "fits" / "report.md") in out
    assert load_checkpoint(str(work / "models" / "finetuned.pt")).config.head == "distribution"
    metrics = pq.read_table(work / "eval" / "metrics.parquet").to_pandas()
    assert set(metrics["variant"]) == {"distilled", "finetuned"}
    scores = pq.read_table(work / "scores" / "scores").to_pandas()
    assert len(scores) == 40 and set(scores["status"]) == {"ok"}
    clusters = pq.read_table(work / "clusters" / "clusters.parquet")
    assert sorted(clusters.column("uri").to_pylist()) == sorted(scores["uri"])

    stamp = (work / "ava" / "manifest.parquet").stat().st_mtime_ns
    assert pipeline.main(SMALL) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: outputs exist") == len(pipeline.STAGES)
    assert (work / "ava" / "manifest.parquet").stat().st_mtime_ns == stamp

    assert pipeline.main([*SMALL, "--force", "--until", "prepare"]) == 0
    assert "[prepare] done" in capsys.readouterr().out
    assert (work / "ava" / "manifest.parquet").stat().st_mtime_ns != stamp


def test_pipeline_through_s3(s3_bucket, ray_local, capsys):
    work = f"{s3_bucket}/work"
    assert pipeline.main(["--n", "20", "--size", "64", "--work", work, "--until", "fit_distributions"]) == 0
    out = capsys.readouterr().out
    assert f"{work}/ava/manifest.parquet" in out
    from apm import storage

    manifest = storage.read_table(f"{work}/ava/manifest.parquet")
    assert manifest.num_rows == 20
    assert manifest.column("uri").to_pylist()[0] == f"{work}/synthetic/images/1.jpg"
    assert storage.read_table(f"{work}/fits/per_image.parquet").num_rows == 20
