"""A bad model option is one line naming its URI, exit status 2, no traceback, before Ray starts.

Each case goes through the real jobs (jobs.score, jobs.evaluate, jobs.explain, jobs.generate,
jobs.finetune) against real files and a real S3 endpoint (moto's server); ``init_ray`` is
replaced by a probe that fails the test if a job gets that far.
"""
from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
import torch
from conftest import PROJECT_ROOT

from apm.core import storage
from apm.models import APM, APMConfig, CheckpointError, check_model_spec, checkpoint_bytes
from benchmarks._common import free_port
from jobs import _train, evaluate, explain, finetune, generate, score
from pfagan.checkpoint import generator_bytes
from pfagan.config import GANConfig
from pfagan.generator import Generator

MODEL = APM(APMConfig(backbone="resnet18"))
GOOD = checkpoint_bytes(MODEL)
NOT_TORCH = "not readable as an APM checkpoint: not a torch file"


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


#: name -> (the file's bytes, None for no file; the reason after "URI: ")
LOCAL_CASES = {
    "missing": (None, "no such file or directory"),
    "text": (b"model weights, honest\n", NOT_TORCH),
    "empty": (b"", "not readable as an APM checkpoint: the file is empty"),
    "truncated": (GOOD[: len(GOOD) // 2],
                  "not readable as an APM checkpoint: a truncated or damaged torch file"),
    "state-dict": (_torch_bytes(MODEL.state_dict()),
                   "not an APM checkpoint (format None, expected 'apm-checkpoint/1')"),
    "module": (_torch_bytes(torch.nn.Linear(2, 2)),
               "not readable as an APM checkpoint: it holds Python objects other than tensors, "
               "strings and numbers (not loaded)"),
}


def _job_argv(job, tmp_path, model: str) -> list[str]:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    manifest = tmp_path / "manifest.parquet"
    manifest.touch()
    out = str(tmp_path / f"out-{job.__name__.rsplit('.', 1)[-1]}")
    return {
        score: ["--input", str(photos), "--output", out, "--model", model],
        evaluate: ["--manifest", str(manifest), "--out", out, "--model", model],
        explain: ["--input", str(photos), "--out", out, "--budget", "1", "--model", model],
    }[job]


@pytest.fixture()
def no_ray(monkeypatch):
    """Fail the test if a job reaches init_ray."""
    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    for job in (score, evaluate, explain, _train):
        monkeypatch.setattr(job, "init_ray", started)


def _fails_with(job, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        job.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("job", [score, evaluate, explain], ids=lambda j: j.__name__)
@pytest.mark.parametrize("case", sorted(LOCAL_CASES))
def test_bad_local_model_is_one_line(job, case, tmp_path, capsys, no_ray):
    data, reason = LOCAL_CASES[case]
    path = tmp_path / f"{case}.pt"
    if data is not None:
        path.write_bytes(data)
    line = _fails_with(job, _job_argv(job, tmp_path, str(path)), capsys)
    assert line == f"error: {path}: {reason}"


@pytest.mark.parametrize("job", [score, evaluate, explain], ids=lambda j: j.__name__)
def test_folder_and_unknown_architecture(job, tmp_path, capsys, no_ray):
    folder = tmp_path / "models"
    folder.mkdir()
    assert _fails_with(job, _job_argv(job, tmp_path, str(folder)), capsys) == \
        f"error: {folder}: a folder, not a file"
    line = _fails_with(job, _job_argv(job, tmp_path, "random:resnet9"), capsys)
    assert line.startswith("error: random:resnet9: unknown architecture 'resnet9'; choose one of ")


@pytest.mark.parametrize("job", [score, evaluate, explain], ids=lambda j: j.__name__)
def test_bad_s3_model_is_one_line(job, s3_bucket, tmp_path, capsys, no_ray):
    endpoint = storage.s3_endpoint()
    storage.write_bytes(f"{s3_bucket}/models/notes.pt", b"not a checkpoint")
    missing_bucket = "no-such-bucket-" + s3_bucket.rsplit("-", 1)[-1]
    cases = {
        f"{s3_bucket}/models/missing.pt": "no such object or prefix",
        f"s3://{missing_bucket}/model.pt": f"bucket '{missing_bucket}' does not exist at {endpoint}",
        f"{s3_bucket}/models/notes.pt": NOT_TORCH,
        f"{s3_bucket}/models": "no such object",  # a prefix with objects below it
    }
    for uri, reason in cases.items():
        assert _fails_with(job, _job_argv(job, tmp_path, uri), capsys) == f"error: {uri}: {reason}"


@pytest.mark.parametrize("job", [score, evaluate, explain], ids=lambda j: j.__name__)
def test_unreachable_endpoint_is_one_line_within_seconds(job, tmp_path, capsys, no_ray, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": closed}.items():
        monkeypatch.setenv(name, value)
    started = time.perf_counter()
    line = _fails_with(job, _job_argv(job, tmp_path, "s3://models/apm.pt"), capsys)
    assert line == (f"error: s3://models/apm.pt: cannot reach the S3 endpoint {closed} "
                    f"(is it running? is --s3-endpoint right?)")
    assert time.perf_counter() - started < 20


def test_every_model_of_evaluate_is_checked(tmp_path, capsys, no_ray):
    good = tmp_path / "good.pt"
    good.write_bytes(GOOD)
    argv = _job_argv(evaluate, tmp_path, str(good))
    assert _fails_with(evaluate, [*argv, "--model", str(tmp_path / "second.pt")], capsys) == \
        f"error: {tmp_path / 'second.pt'}: no such file or directory"


def test_generate_checks_its_model_files(tmp_path, capsys):
    gan = tmp_path / "generator.pt"
    gan.write_bytes(generator_bytes(Generator(GANConfig(num_categories=1, z_dim=16, g_channels=8,
                                                        d_channels=8)), ["cat"]))
    base = ["--checkpoint", str(gan), "--mean", "5", "--n", "1", "--out", str(tmp_path / "out")]
    notes = tmp_path / "notes.pt"
    notes.write_bytes(b"hello")
    assert _fails_with(generate, [*base, "--apm", str(notes)], capsys) == f"error: {notes}: {NOT_TORCH}"
    assert _fails_with(generate, [*base, "--classifier", str(tmp_path / "c.pt")], capsys) == \
        f"error: {tmp_path / 'c.pt'}: no such file or directory"
    assert _fails_with(generate, ["--checkpoint", str(notes), *base[2:]], capsys) == \
        f"error: {notes}: not readable as a PFAGAN generator checkpoint: not a torch file"


def test_finetune_init_checkpoint_is_checked_before_ray(tmp_path, capsys, no_ray):
    manifest = tmp_path / "manifest.parquet"
    manifest.touch()
    other = tmp_path / "resnet34.pt"
    other.write_bytes(checkpoint_bytes(APM(APMConfig(backbone="resnet34"))))
    base = ["--manifest", str(manifest), "--storage", str(tmp_path / "runs"), "--name", "r",
            "--backbone", "resnet18"]
    assert _fails_with(finetune, [*base, "--init", f"checkpoint:{tmp_path / 'none.pt'}"], capsys) == \
        f"error: {tmp_path / 'none.pt'}: no such file or directory"
    line = _fails_with(finetune, [*base, "--init", f"checkpoint:{other}"], capsys)
    assert line.startswith(f"error: {other}: holds an APM with backbone resnet34 (head=distribution")
    assert "but backbone resnet18 (head=distribution" in line
    assert _fails_with(finetune, [*base, "--init", f"imagenet:{tmp_path / 'notes.txt'}"], capsys) == \
        f"error: {tmp_path / 'notes.txt'}: no such file or directory"


def test_check_model_spec_returns_the_architecture(tmp_path):
    path = tmp_path / "mean.pt"
    path.write_bytes(checkpoint_bytes(APM(APMConfig(backbone="resnet18", head="mean"))))
    assert check_model_spec(str(path)) == APMConfig(backbone="resnet18", head="mean")
    assert check_model_spec("random:resnet34") == APMConfig(backbone="resnet34")
    with pytest.raises(CheckpointError, match="^random:resnet34: no such file or directory$"):
        check_model_spec("random:resnet34", allow_random=False)


def test_score_job_process_prints_one_line_and_starts_no_ray(tmp_path):
    (tmp_path / "photos").mkdir()
    notes = tmp_path / "notes.pt"
    notes.write_text("hello")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs.score", "--input", str(tmp_path / "photos"),
                           "--output", str(tmp_path / "out"), "--model", str(notes)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {notes}: {NOT_TORCH}"]
    assert "Ray" not in done.stdout + done.stderr
    assert time.perf_counter() - started < 60  # imports only: no Ray, no listing
