"""The main job on its embedded default: every stage, then a rerun that skips them."""
from __future__ import annotations

import json
import re
import shutil

import pyarrow.parquet as pq
import pytest

from apm.core.schemas import BUCKET_RMSE_SCHEMA, MANIFEST_SCHEMA, PER_IMAGE_FIT_SCHEMA, SAMPLES_SCHEMA
from apm.models import load_checkpoint
from apm.pipeline import GAN_SAMPLES_PER_CELL, STAGES
from apm.reporting.headline import Figure
from apm.votes.baselines import CEILING, CONSTANT
from jobs import pipeline

#: One training worker (the ava preset below trains on two, as do tests/test_training.py and
#: tests/test_pfagan.py): each worker costs Ray Train seconds of start-up on 2 cores.
SMALL = ["--n", "40", "--size", "64", "--train-size", "32", "--train-epochs", "1",
         "--train-workers", "1", "--clusters", "4", "--explain-sample", "2", "--gan-epochs", "1"]
#: The demo's default, seen through its report: the headline figures beside their baselines.
HEADLINE = ("apm_spearman", "apm_mse", "apm_accuracy", "cluster_ari", "explain_median_change",
            "explain_share_moved",
            "gan_spearman", "gan_category_accuracy")


def test_pipeline_runs_then_skips(tmp_path, ray_local, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default work folder is ./work
    assert pipeline.main(SMALL) == 0
    out = capsys.readouterr().out
    work = tmp_path / "work"
    for stage in ("synthetic", "prepare", "fit_distributions", "teacher", "distill", "finetune",
                  "evaluate", "score", "cluster", "explain", "pfagan", "generate", "report"):
        assert f"[{stage}] done" in out
    manifest = pq.read_table(work / "ava" / "manifest.parquet")
    assert manifest.schema == MANIFEST_SCHEMA and manifest.num_rows == 40
    assert set(manifest.column("image_status").to_pylist()) == {"ok"}
    assert pq.read_table(work / "fits" / "per_image.parquet").schema == PER_IMAGE_FIT_SCHEMA
    assert pq.read_table(work / "fits" / "bucket_rmse.parquet").schema == BUCKET_RMSE_SCHEMA
    assert str(work / "fits" / "report.md") in out
    assert load_checkpoint(str(work / "models" / "finetuned.pt")).config.head == "distribution"
    metrics = pq.read_table(work / "eval" / "metrics.parquet").to_pandas()
    assert set(metrics["variant"]) == {"distilled", "finetuned", CONSTANT, CEILING}
    scores = pq.read_table(work / "scores" / "scores").to_pandas()
    assert len(scores) == 40 and set(scores["status"]) == {"ok"}
    clusters = pq.read_table(work / "clusters" / "clusters.parquet")
    assert sorted(clusters.column("uri").to_pylist()) == sorted(scores["uri"])

    explanations = pq.read_table(work / "explain" / "explanations.parquet")
    assert explanations.num_rows == 4 and set(explanations.column("status").to_pylist()) == {"ok"}
    samples = pq.read_table(work / "generated" / "samples.parquet")
    assert samples.schema == SAMPLES_SCHEMA
    # every synthetic category x the demo's three conditioning means, each sample scored and
    # classified by a classifier trained on real photos
    assert samples.num_rows == 10 * 3 * GAN_SAMPLES_PER_CELL
    assert samples.column("pred_mean").null_count == 0
    assert samples.column("pred_category").null_count == 0
    report = (work / "report" / "report.md").read_text()
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+)\)", report)
    for expected in ("rmse_by_bucket", "scatter", "score_histogram", "cluster_", "grid"):
        assert any(expected in f for f in figures), expected
    assert all((work / "report" / f).stat().st_size > 0 for f in figures)
    assert "not written" not in report
    assert "| finetuned |" in report and f"| {CONSTANT} |" in report  # the metrics table
    headline = json.loads((work / "report" / "headline.json").read_text())
    assert [f["key"] for f in headline] == list(HEADLINE)
    for figure in headline:  # each printed with its verdict, and in the report
        assert figure["label"] in out and figure["label"] in report
        assert ("⚠" in Figure.from_dict(figure).line()) == figure["flagged"]
    assert "| conditioning mean | APM mean of the samples |" in report

    stamp = (work / "ava" / "manifest.parquet").stat().st_mtime_ns
    assert pipeline.main(SMALL) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: outputs exist") == len(STAGES)
    assert (work / "ava" / "manifest.parquet").stat().st_mtime_ns == stamp

    assert pipeline.main([*SMALL, "--force", "--until", "prepare"]) == 0
    assert "[prepare] done" in capsys.readouterr().out
    assert (work / "ava" / "manifest.parquet").stat().st_mtime_ns != stamp

    # The ava preset on the same photos as an "AVA copy": the stages done above are skipped and
    # PFAGAN now takes its categories from the clusters of the scored library.
    for done in ("models/generator.pt", "generated", "report"):
        shutil.rmtree(work / done) if (work / done).is_dir() else (work / done).unlink()
    ava = ["--preset", "ava", "--ava-dir", str(work / "synthetic"), "--images",
           str(work / "synthetic" / "images"), "--device", "cpu", "--backbone", "resnet18",
           "--init", "random", "--gan-resolution", "32", *SMALL[4:], "--train-workers", "2"]
    assert pipeline.main(ava) == 0
    out = capsys.readouterr().out
    assert "[synthetic]" not in out and "[pfagan] done" in out and "[report] done" in out
    samples = pq.read_table(work / "generated" / "samples.parquet")
    assert set(samples.column("category").to_pylist()) == {f"cluster_{i}" for i in range(4)}


def test_ava_preset_needs_the_ava_copy(capsys):
    with pytest.raises(SystemExit):
        pipeline.main(["--preset", "ava"])
    assert "--ava-dir and --images" in capsys.readouterr().err


def test_pipeline_through_s3(s3_bucket, ray_local, capsys):
    work = f"{s3_bucket}/work"
    assert pipeline.main(["--n", "20", "--size", "64", "--work", work, "--until", "fit_distributions"]) == 0
    out = capsys.readouterr().out
    assert f"{work}/ava/manifest.parquet" in out
    from apm.core import storage

    manifest = storage.read_table(f"{work}/ava/manifest.parquet")
    assert manifest.num_rows == 20
    assert manifest.column("uri").to_pylist()[0] == f"{work}/synthetic/images/1.jpg"
    assert storage.read_table(f"{work}/fits/per_image.parquet").num_rows == 20
