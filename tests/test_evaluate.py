"""jobs.evaluate on a tiny synthetic AVA: two random-init checkpoints, a corrupt photo, metrics
checked against an independent recomputation from predictions.parquet."""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats

from apm.core import storage
from apm.core.schemas import EVALUATION_SCHEMA
from apm.data.manifest import build_manifest
from apm.data.synthetic.dataset import SyntheticConfig, generate
from apm.models import APMConfig, create_apm, save_checkpoint
from apm.stages.evaluation import EvaluationSummary
from apm.votes.baselines import CEILING, CONSTANT
from apm.votes.distributions import normalise
from jobs import evaluate

VARIANTS = ("apm", "baseline")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, ray_local):
    """A synthetic AVA whose first test photo is corrupt, two checkpoints and the job's argv."""
    root = tmp_path_factory.mktemp("evaluate")
    synthetic = root / "synthetic"
    generate(SyntheticConfig(n=24, size=48, seed=5, test_fraction=0.5), str(synthetic))
    summary = build_manifest(str(synthetic), str(root / "ava"), images=str(synthetic / "images"))
    manifest = storage.read_table(summary.manifest_uri)
    test = manifest.filter(pc.equal(manifest["split"], "test"))
    corrupt = test["image_id"][0].as_py()
    # Corrupted after the manifest checked it: the predictor must meet the bad bytes itself.
    with open(test["uri"][0].as_py(), "wb") as f:
        f.write(b"not a jpeg")
    models = []
    for head in ("distribution", "mean"):
        uri = str(root / f"{head}.pt")
        save_checkpoint(create_apm(APMConfig(backbone="resnet18", head=head)), uri)
        models += ["--model", uri]
    out = root / "eval"
    argv = ["--manifest", summary.manifest_uri, "--truth", str(synthetic / "truth.parquet"),
            *models, "--variant", VARIANTS[0], "--variant", VARIANTS[1], "--out", str(out),
            "--image-size", "32", "--batch-size", "4"]
    return out, test, corrupt, argv


@pytest.fixture(scope="module")
def outputs(evaluated):
    out, test, corrupt, argv = evaluated
    assert evaluate.main(argv) == 0
    metrics = pq.read_table(out / "metrics.parquet")
    predictions = pq.read_table(out / "predictions.parquet")
    return out, test, corrupt, metrics, predictions


def test_metrics_table_has_the_schema_and_a_row_per_variant_and_category(outputs):
    out, test, _, metrics, _ = outputs
    assert metrics.schema.equals(EVALUATION_SCHEMA)
    rows = metrics.to_pylist()
    overall = [r for r in rows if r["category"] == "overall"]
    assert [r["variant"] for r in overall] == [*VARIANTS, CONSTANT, CEILING]
    truth = pq.read_table(out.parent / "synthetic" / "truth.parquet")
    categories = set(truth.filter(pc.is_in(truth["image_id"], test["image_id"]))["category"].to_pylist())
    for variant in VARIANTS:
        assert {r["category"] for r in rows if r["variant"] == variant} == {"overall", *categories}
    apm, baseline = overall[:2]
    assert apm["kldiv"] is not None and apm["cdloss"] is not None
    assert all(r["kldiv"] is None and r["cdloss"] is None for r in rows if r["variant"] == "baseline")
    assert baseline["mse"] is not None and np.isfinite(baseline["mse"])


def test_corrupt_photo_is_an_error_row_and_counted(outputs):
    _, test, corrupt, metrics, predictions = outputs
    for row in metrics.filter(pc.equal(metrics["category"], "overall")).to_pylist():
        # The baselines are measured on the photos the models scored, and read no photo.
        errors = 0 if row["variant"] in (CONSTANT, CEILING) else 1
        assert row["n_errors"] == errors and row["n_images"] == test.num_rows - 1
    bad = predictions.filter(pc.equal(predictions["image_id"], corrupt)).to_pylist()
    assert len(bad) == 2
    assert all(r["status"] == "error" and r["error"] and r["pred_mean"] is None for r in bad)
    assert sum(metrics["n_errors"].to_pylist()) == 4  # overall + its category, per variant


def test_metrics_equal_an_independent_recomputation(outputs):
    _, _, _, metrics, predictions = outputs
    ok = predictions.filter(pc.equal(predictions["status"], "ok"))
    for variant in VARIANTS:
        p = ok.filter(pc.equal(ok["variant"], variant))
        true, pred = p["true_mean"].to_numpy(), p["pred_mean"].to_numpy()
        row = metrics.filter(pc.and_(pc.equal(metrics["variant"], variant),
                                     pc.equal(metrics["category"], "overall"))).to_pylist()[0]
        assert row["mse"] == pytest.approx(np.mean((true - pred) ** 2))
        assert row["spearman"] == pytest.approx(stats.spearmanr(true, pred).statistic, nan_ok=True)
        assert row["pearson"] == pytest.approx(stats.pearsonr(true, pred).statistic, nan_ok=True)
        assert row["accuracy"] == pytest.approx(np.mean((true >= 5) == (pred >= 5)))
        if variant == "apm":
            dist = np.stack(p["pred_dist"].to_numpy(zero_copy_only=False)).astype(np.float64)
            assert np.allclose(dist.sum(axis=1), 1, atol=1e-5)
            assert np.allclose(dist @ np.arange(1, 11), pred, atol=1e-4)
            assert np.all(p["pred_std"].to_numpy() > 0)
        else:
            assert p["pred_dist"].null_count == p.num_rows and p["pred_std"].null_count == p.num_rows


def test_report_and_plots_are_written(outputs):
    out = outputs[0]
    report = (out / "metrics.md").read_text()
    assert "## Overall" in report and all(f"| {v} |" in report for v in VARIANTS)
    for name in ("scatter.png", "calibration.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baselines_are_the_constant_train_histogram_and_the_truth(outputs, evaluated):
    out, test, corrupt, metrics, predictions = outputs
    manifest = storage.read_table(evaluated[3][1])
    train = manifest.filter(pc.equal(manifest["split"], "train"))
    constant = normalise(np.stack(train["votes"].to_numpy(zero_copy_only=False)).astype(float)).mean(0)
    kept = test.filter(pc.not_equal(test["image_id"], corrupt))
    votes = np.stack(kept["votes"].to_numpy(zero_copy_only=False)).astype(float)
    true_mean = votes @ np.arange(1, 11) / votes.sum(axis=1)
    rows = {r["variant"]: r for r in metrics.to_pylist() if r["category"] == "overall"}
    assert rows[CONSTANT]["mse"] == pytest.approx(np.mean((true_mean - constant @ np.arange(1, 11)) ** 2))
    assert np.isnan(rows[CONSTANT]["spearman"])  # a constant ranks nothing
    truth = pq.read_table(out.parent / "synthetic" / "truth.parquet").to_pandas().set_index("image_id")
    expected = np.stack(truth.loc[kept["image_id"].to_pylist(), "true_pmf"]) @ np.arange(1, 11)
    assert rows[CEILING]["spearman"] == pytest.approx(stats.spearmanr(expected, true_mean).statistic)
    assert rows[CEILING]["spearman"] > 0.8  # a perfect model, up to the raters' noise
    # Random-init checkpoints have learned nothing: both are flagged where they do not beat
    # the constant, in the report and in the printed summary.
    report = (out / "metrics.md").read_text()
    apm_line = next(line for line in report.splitlines() if line.startswith("| apm |"))
    assert "⚠" in apm_line and "⚠" not in next(
        line for line in report.splitlines() if line.startswith(f"| {CONSTANT} |"))
    lines = EvaluationSummary(metrics, {}, 0.0).lines()
    assert any(line.startswith("apm:") and "not better than the constant predictor" in line
               for line in lines)
    assert not any(line.startswith(CONSTANT) and "⚠" in line for line in lines)
