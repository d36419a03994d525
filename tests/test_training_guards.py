"""Training refuses garbage: a NaN loss stops every rank before a checkpoint, with no restart;
a rerun of a run name with other settings is refused; --force starts over."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import small_synthetic_ava
from ray.train import ControllerError, TrainingFailedError, WorkerGroupError

from apm.core import storage
from apm.training.data import training_rows
from apm.training.guard import LossGuard, NonFiniteLossError
from apm.training.loop import STATE_FILE, TrainConfig
from apm.training.runs import RUN_FILE, RunMismatchError, prepare_run
from apm.training.trainer import describe_failure, fit
from jobs import finetune

NAN_MESSAGE = (r"run {name}: the loss became NaN or infinite at epoch (\d+), step (\d+); training "
               r"stopped before a checkpoint of these weights \(try a lower learning rate\)")
SMALL = {"backbone": "resnet18", "init": "random", "image_size": 32, "batch_size": 4,
         "num_workers": 2, "cpus_per_worker": 0.5}
ABSURD_LR = 1e10  # AdamW's first step blows the weights up: the next loss is NaN


def test_guard_stops_before_the_step_on_cpu():
    guard = LossGuard(torch.device("cpu"), "r1")
    guard.observe(torch.tensor(0.5), epoch=0, step=1)
    with pytest.raises(NonFiniteLossError, match="^" + NAN_MESSAGE.format(name="r1") + "$") as stop:
        guard.observe(torch.tensor([0.5, float("inf")]), epoch=3, step=7)
    assert "epoch 3, step 7" in str(stop.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_guard_on_gpu_reads_the_flag_only_when_due():
    guard = LossGuard(torch.device("cuda"), "g")
    assert guard.every > 1
    guard.observe(torch.tensor(1.0, device="cuda"), epoch=0, step=1)
    guard.observe(torch.tensor(float("nan"), device="cuda"), epoch=0, step=2)  # no sync, no stop
    guard.observe(torch.tensor(float("nan"), device="cuda"), epoch=0, step=3)
    with pytest.raises(NonFiniteLossError, match="epoch 0, step 2;"):  # the first bad step
        guard.check(epoch=0)


def _rank_main(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=2)
    guard = LossGuard(torch.device("cpu"), "ddp")
    message = "trained on"
    try:
        for step in range(1, 6):
            bad = rank == 1 and step == 3
            guard.observe(torch.tensor(float("nan") if bad else 1.0), epoch=0, step=step)
    except NonFiniteLossError as err:
        message = str(err)
    Path(folder, f"rank{rank}").write_text(message)
    dist.destroy_process_group()


def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):  # rank 0's losses were finite: it stops too, at rank 1's step
        assert re.fullmatch(NAN_MESSAGE.format(name="ddp"), (tmp_path / f"rank{rank}").read_text())
        assert "step 3;" in (tmp_path / f"rank{rank}").read_text()


def test_failures_are_described_in_one_line():
    crash = WorkerGroupError("rank 0: ...\nTraceback ...", {0: RuntimeError("out of disk\nat /tmp"),
                                                            1: RuntimeError("peer gone")})
    assert describe_failure(crash) == "training failed: RuntimeError: out of disk"
    nan = NonFiniteLossError("run r: the loss became NaN or infinite at epoch 1, step 9; ...")
    assert describe_failure(WorkerGroupError("...", {0: ValueError("x"), 1: nan})) == str(nan)
    assert describe_failure(ControllerError(nan)) == str(nan)


def _fake_checkpoint(storage_uri: str, name: str) -> None:
    storage.write_bytes(storage.join(storage_uri, name, "checkpoint_0", STATE_FILE), b"")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_resume_is_refused_with_other_settings(where, tmp_path, request):
    runs = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket") + "/runs"
    started = {**SMALL, "task": "finetune", "loss": "kl", "lr": 0.001, "epochs": 1,
               "manifest": "/data/m.parquet"}
    prepare_run(runs, "r", started)
    prepare_run(runs, "r", {**started, "lr": 0.5})  # no checkpoint yet: nothing to continue
    prepare_run(runs, "r", started)
    _fake_checkpoint(runs, "r")
    # Longer, on other resources: a continuation.
    prepare_run(runs, "r", {**started, "epochs": 5, "num_workers": 4, "cpus_per_worker": 2.0})
    with pytest.raises(RunMismatchError) as refused:
        prepare_run(runs, "r", {**started, "loss": "cdloss", "lr": 0.01})
    assert str(refused.value) == ("run r was started with loss=kl, lr=0.001; this run asks "
                                  "loss=cdloss, lr=0.01; use --force to start over, or another --name")
    with pytest.raises(RunMismatchError, match="started with manifest=/data/m.parquet; this run "
                                               "asks manifest=/data/other.parquet;"):
        prepare_run(runs, "r", {**started, "manifest": "/data/other.parquet"})
    prepare_run(runs, "r", {**started, "loss": "cdloss"}, force=True)
    assert not storage.exists(storage.join(runs, "r", "checkpoint_0", STATE_FILE))
    assert json.loads(storage.read_text(storage.join(runs, "r", RUN_FILE)))["loss"] == "cdloss"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, ray_local):
    return small_synthetic_ava(tmp_path_factory.mktemp("guards"), n=24, seed=5)[0]


def _checkpoints(run: Path) -> list[dict]:
    return [torch.load(p, weights_only=True) for p in sorted(run.rglob(STATE_FILE))]


def _checkpointed_epochs(run: Path) -> list[int]:
    return sorted(state["epoch"] for state in _checkpoints(run))


def test_nan_loss_ends_the_run_at_once_without_its_checkpoint(manifest, tmp_path):
    cfg = TrainConfig(task="finetune", loss="cdloss", lr=ABSURD_LR, epochs=3, **SMALL)
    with pytest.raises(TrainingFailedError) as failed:
        fit(cfg, training_rows(manifest, "train"), str(tmp_path), "nan", max_failures=2)
    # Stopped by the controller at the first failure: restarts would end in a WorkerGroupError.
    assert isinstance(failed.value, ControllerError)
    found = re.fullmatch(NAN_MESSAGE.format(name="nan"), describe_failure(failed.value))
    assert found, describe_failure(failed.value)
    assert all(epoch < int(found[1]) for epoch in _checkpointed_epochs(tmp_path / "nan"))


def test_finetune_job_refuses_other_settings_and_force_starts_over(manifest, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["--manifest", manifest, "--storage", str(runs), "--name", "r", "--backbone", "resnet18",
            "--init", "random", "--image-size", "32", "--batch-size", "4", "--num-workers", "1",
            "--cpus-per-worker", "0.5", "--epochs", "1"]
    assert finetune.main([*base, "--loss", "kl", "--lr", "0.001"]) == 0
    assert _checkpointed_epochs(runs / "r") == [0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        finetune.main([*base, "--loss", "cdloss", "--lr", "0.01"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: run r was started with loss=kl, lr=0.001; this run asks loss=cdloss, lr=0.01; "
        "use --force to start over, or another --name")
    # --force starts over (the kl checkpoint goes); this run diverges and ends in one line,
    # leaving no checkpoint of the epoch it diverged in.
    with pytest.raises(SystemExit) as diverged:
        finetune.main([*base[:-1], "3", "--loss", "cdloss", "--lr", str(ABSURD_LR), "--force"])
    assert diverged.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    found = re.fullmatch("error: " + NAN_MESSAGE.format(name="r"), last)
    assert found, last
    assert all(epoch < int(found[1]) for epoch in _checkpointed_epochs(runs / "r"))
    assert all(state["config"]["loss"] == "cdloss" for state in _checkpoints(runs / "r"))
    assert json.loads((runs / "r" / RUN_FILE).read_text())["loss"] == "cdloss"
