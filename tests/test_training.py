"""Ray Train: a 2-worker CPU run, a crash that resumes from the checkpoint, a resumed rerun."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import small_synthetic_ava

from apm.core import storage
from apm.models import load_checkpoint, trained_image_size
from apm.training.data import IngestConfig, image_dataset, training_rows
from apm.training.loop import TrainConfig
from apm.training.trainer import final_state, fit, model_uri
from jobs import finetune

SMALL = {"backbone": "resnet18", "init": "random", "image_size": 32, "batch_size": 4,
         "num_workers": 2, "epochs": 2, "lr": 1e-3, "cpus_per_worker": 0.5}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, ray_local):
    return small_synthetic_ava(tmp_path_factory.mktemp("train"), n=24, seed=3)[0]


def with_teacher(rows: pa.Table) -> pa.Table:
    probs = np.random.default_rng(0).dirichlet(np.ones(1000), rows.num_rows).astype(np.float32)
    return rows.append_column("teacher", pa.FixedSizeListArray.from_arrays(
        pa.array(probs.reshape(-1)), 1000))


def test_finetune_two_workers_with_a_crash_resumes(manifest, tmp_path):
    rows = training_rows(manifest, "train")
    marker = tmp_path / "crashed"
    cfg = TrainConfig(task="finetune", loss="cdloss", fail_marker=str(marker), fail_at_step=3,
                      **SMALL)
    result = fit(cfg, rows, str(tmp_path / "runs"), "crash", max_failures=1)
    assert result.error is None and marker.exists()  # it crashed once, then recovered
    state = final_state(result)
    history = state["history"]
    assert [m["epoch"] for m in history] == [0, 1]
    per_epoch = history[0]["step"]
    # Each worker gets an equal share, floor(rows / 2), so floor(share / batch) full batches per
    # epoch, on every epoch, and the epoch replayed after the crash is not counted twice.
    assert per_epoch == rows.num_rows // 2 // SMALL["batch_size"]
    assert state["step"] == history[1]["step"] == 2 * per_epoch
    model = load_checkpoint(model_uri(result, str(tmp_path / "runs")))
    assert model.config.backbone == "resnet18" and model.config.head == "distribution"
    # The crop it was trained on travels with it: scoring and evaluation default to it.
    assert trained_image_size(model_uri(result, str(tmp_path / "runs"))) == SMALL["image_size"]
    with torch.no_grad():
        dist = model.eval()(torch.rand(2, 3, 32, 32)).dist
    assert torch.allclose(dist.sum(-1), torch.ones(2))


def _epoch_orders(rows: pa.Table, config: IngestConfig, epochs: int = 2) -> list[list[int]]:
    """The image ids in the order the dataset gives them, once per run of it (an epoch)."""
    dataset = image_dataset(rows, config, batch_size=4)
    return [[int(row["image_id"]) for row in dataset.iter_rows()] for _ in range(epochs)]


def test_training_data_is_shuffled_every_epoch_reproducibly(manifest):
    rows = training_rows(manifest, "train")
    ids = rows["image_id"].to_pylist()
    config = IngestConfig(image_size=16, augment=False, seed=7)
    first, second = _epoch_orders(rows, config)
    assert sorted(first) == sorted(second) == sorted(ids)  # every photo once per epoch
    assert first != second and first != ids  # a new order every epoch, not the manifest's
    assert _epoch_orders(rows, config) == [first, second]  # the same seed, the same orders
    assert _epoch_orders(rows, IngestConfig(image_size=16, augment=False, seed=8))[0] != first
    unshuffled = IngestConfig(image_size=16, augment=False, shuffle=False)
    assert _epoch_orders(rows, unshuffled) == [ids, ids]


def test_onecycle_schedule_warms_up_then_decays_to_zero():
    from apm.training.schedule import WARMUP_DIVISOR, lr_factor

    factors = [lr_factor("onecycle", step, 100) for step in range(100)]
    peak = int(np.argmax(factors))
    assert factors[0] == pytest.approx(1 / WARMUP_DIVISOR) and factors[peak] == pytest.approx(1.0, abs=0.01)
    assert all(a <= b for a, b in zip(factors[:peak], factors[1:peak + 1]))  # warm-up rises
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))  # then decays
    assert factors[-1] == pytest.approx(0.0, abs=1e-9) and lr_factor("onecycle", 500, 100) == factors[-1]
    assert lr_factor("constant", 37, 100) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(task="finetune", lr_schedule="steps")


def test_rerun_with_the_same_name_resumes(manifest, tmp_path):
    rows = with_teacher(training_rows(manifest, "train"))
    # One worker: two workers' resumption is the crash test's; each costs start-up seconds.
    one_worker = {**SMALL, "num_workers": 1}
    cfg = TrainConfig(task="distill", **{**one_worker, "epochs": 1})
    first = final_state(fit(cfg, rows, str(tmp_path / "runs"), "resume"))
    longer = TrainConfig(task="distill", **{**one_worker, "epochs": 2})
    second = final_state(fit(longer, rows, str(tmp_path / "runs"), "resume"))
    assert [m["epoch"] for m in second["history"]] == [0, 1]
    assert second["history"][0] == first["history"][0]  # epoch 0 was not trained again
    assert np.isfinite([m["loss"] for m in second["history"]]).all()


def test_mean_baseline_through_the_job_and_s3(manifest, s3_bucket, capsys):
    storage.write_bytes(f"{s3_bucket}/ava/manifest.parquet", open(manifest, "rb").read())
    assert finetune.main([
        "--manifest", f"{s3_bucket}/ava/manifest.parquet", "--storage", f"{s3_bucket}/runs",
        "--name", "baseline", "--loss", "mse_mean", "--backbone", "resnet18", "--init", "random",
        "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--num-workers", "1",
        "--cpus-per-worker", "0.5"]) == 0
    out = capsys.readouterr().out
    uri = out.split("model: ")[1].strip()
    assert uri.startswith(f"{s3_bucket}/runs/baseline/")
    assert load_checkpoint(uri).config.head == "mean"


def test_distill_without_teacher_is_a_clear_error(manifest, tmp_path):
    rows = training_rows(manifest, "train")
    with pytest.raises(ValueError, match="needs teacher probabilities"):
        fit(TrainConfig(task="distill", **SMALL), rows, str(tmp_path), "x")
