"""What a job prints without a terminal: its own lines, third-party ones only from WARNING up,
no Ray Data progress (not even from Ray Train's split coordinators) and no Ray Train state-API
noise; with --verbose, Ray's INFO lines as Ray prints them.

One real 1-epoch ``jobs.finetune`` on 8 tiny photos with 2 Ray Train workers, run twice as a
subprocess (its own local Ray), stdout and stderr pipes rather than a TTY, as in CI or under
``ray job submit``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from apm.core.schemas import MANIFEST_SCHEMA

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Ray Data's progress, as tqdm bars or as the blocks it logs every 10 s without a terminal.
PROGRESS = re.compile(r"Running Dataset|Total Progress|MapBatches\(load_images\)|split\(2, equal"
                      r"|row/s\]|\d+%\|")
#: A line of Ray's own format at INFO ("... INFO streaming_executor.py:215 -- ...").
RAY_INFO = re.compile(r"\bINFO \S+\.py:\d+ -- ")
#: Ray's INFO lines that come without a level: Ray Data's in a worker, Ray Train's console.
RAY_PLAIN_INFO = ("Starting execution of Dataset", "Execution plan of Dataset",
                  "A new progress UI is available", "Reporting training result")
#: Ray Train's console, whose level only ``RunConfig(logging_config=...)`` sets.
RAY_TRAIN_CONSOLE = ("Started training worker group", "Attempting to start training worker group",
                     "Requesting resources", "Moving model to device", "Wrapping provided model",
                     "Setting up process group", "Checkpoint successfully created")
STATE_API_NOISE = ("Failed to query Ray Train Controller", "Exception in thread PlacementGroupCleaner")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    """8 photos of 48 x 36 px, all in the train split, and their manifest (no Ray needed)."""
    root = tmp_path_factory.mktemp("quiet")
    rng = np.random.default_rng(7)
    uris = []
    for i in range(8):
        path = root / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(path)
        uris.append(str(path))
    n = len(uris)
    votes = rng.multinomial(100, np.full(10, 0.1), n)
    scores = np.arange(1, 11)
    mean = votes @ scores / votes.sum(axis=1)
    columns = {
        "image_id": np.arange(1, n + 1), "uri": uris,
        "votes": pa.FixedSizeListArray.from_arrays(pa.array(votes.ravel(), pa.int32()), 10),
        "n_votes": votes.sum(axis=1), "mean": mean,
        "std": np.sqrt(votes @ scores**2 / votes.sum(axis=1) - mean**2),
        "semantics_known": np.ones(n, dtype=bool), "split": ["train"] * n,
        "image_lists": [[]] * n, "image_status": ["ok"] * n, "source_line": np.arange(1, n + 1),
    }
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
              for f in MANIFEST_SCHEMA]
    path = root / "manifest.parquet"
    pq.write_table(pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA), path)
    return str(path)


def _finetune(manifest: str, storage: Path, name: str, *extra: str) -> tuple[int, list[str]]:
    # A short folder of its own for the job's Ray (socket paths have a 107-byte limit); no
    # RAY_ADDRESS of the suite's Ray, so that the job starts a local one as a user's would.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayq-", dir="/tmp")).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0")
    try:
        job = subprocess.run(
            [sys.executable, "-m", "jobs.finetune", "--manifest", manifest,
             "--storage", str(storage), "--name", name, "--loss", "kl", "--backbone", "resnet18",
             "--init", "random", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
             "--num-workers", "2", "--cpus-per-worker", "0.5", "--max-failures", "0", *extra],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=420)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return job.returncode, (job.stdout + job.stderr).splitlines()


def _holding(lines: list[str], needles) -> list[str]:
    return [line for line in lines if any(n in line for n in needles)]


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_a_job_without_a_terminal_prints_its_own_lines_and_warnings_only(manifest, tmp_path):
    rc, lines = _finetune(manifest, tmp_path / "runs", "quiet")
    printed = "\n".join(lines)
    assert rc == 0, printed[-4000:]
    # The job's own lines: its INFO log (apm at --log-level) and its summary.
    assert [line for line in lines if " INFO Ray resources: " in line], printed
    assert [line for line in lines if re.match(r"epoch 0: loss [\d.]+, \d+ images", line)], printed
    assert [line for line in lines if line.startswith("finetune done in ")], printed
    assert [line for line in lines if line.startswith("model: ")], printed

    assert [line for line in lines if PROGRESS.search(line)] == []
    assert _holding(lines, STATE_API_NOISE) == []
    assert [line for line in lines if RAY_INFO.search(line)] == []
    assert _holding(lines, RAY_PLAIN_INFO) == []
    # Ray Train's PreemptionWatcher is not started on a local Ray (its creation logged
    # core_worker.cc's "constructor arguments in the object store" error).
    assert _holding(lines, ["has constructor arguments in the object store"]) == []
    # Before: ~150 lines, most of them progress bars and the cleaner's state-API noise.
    assert len(lines) < 40, printed

    assert _holding(lines, RAY_TRAIN_CONSOLE) == []  # Ray Train's console, at WARNING


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_verbose_prints_ray_own_info_lines(manifest, tmp_path):
    rc, lines = _finetune(manifest, tmp_path / "runs", "verbose", "--verbose")
    printed = "\n".join(lines)
    assert rc == 0, printed[-4000:]
    assert [line for line in lines if line.startswith("finetune done in ")], printed
    # Ray Data's INFO lines from the split coordinator and Ray Train's console are back.
    assert _holding(lines, ["Starting execution of Dataset"]), printed
    assert _holding(lines, ["Started training worker group"]), printed
