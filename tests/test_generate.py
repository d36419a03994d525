"""Generation from a PFAGAN checkpoint: conditions, the samples table, judges and measures."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from apm.core.schemas import SAMPLES_SCHEMA
from apm.votes.distributions import SCORES
from jobs import generate as generate_job
from pfagan.checkpoint import save_generator
from pfagan.config import GANConfig
from pfagan.generator import Generator
from pfagan.judges import APMJudge, CategoryClassifier, fit_classifier, frechet_distance
from pfagan.sampling import histogram_for_mean, parse_histogram

APM = "random:resnet18"
CATEGORIES = ["beach", "cat", "sunset"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = GANConfig(num_categories=3, resolution=32, z_dim=16, g_channels=8, d_channels=8)
    generator = Generator(config)
    with torch.no_grad():  # running statistics as after training, not the initial (0, 1)
        generator.train()(torch.randn(16, 16), torch.randint(0, 3, (16,)), torch.full((16, 10), 0.1))
    uri = str(tmp_path_factory.mktemp("gan") / "generator.pt")
    save_generator(generator.eval(), CATEGORIES, uri)
    return uri


@pytest.mark.parametrize("mean", [1.3, 3.0, 5.5, 8.25, 9.9])
def test_histogram_for_mean_has_exactly_that_mean(mean):
    hist = histogram_for_mean(mean)
    assert hist.shape == (10,) and np.all(hist >= 0)
    assert hist.sum() == pytest.approx(1.0)
    assert hist @ SCORES == pytest.approx(mean, abs=1e-6)
    assert np.argmax(hist) + 1 == pytest.approx(mean, abs=1)  # the mode sits by the mean


def test_bad_conditions_are_named():
    with pytest.raises(ValueError, match="--mean"):
        histogram_for_mean(10.0)
    with pytest.raises(ValueError, match="10 values"):
        parse_histogram([1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        parse_histogram([1] * 9 + [-1])
    assert parse_histogram([0, 0, 0, 0, 2, 2, 0, 0, 0, 0])[4] == pytest.approx(0.5)


def test_generate_writes_one_scored_row_per_sample(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--checkpoint", checkpoint, "--mean", "3,7", "--n", "3", "--out", str(out), "--apm", APM,
            "--category", "cat", "--category", "sunset"]
    assert generate_job.main(argv) == 0
    printed = capsys.readouterr().out
    assert "12 samples of 2 categories x 2 conditions" in printed
    table = pq.read_table(out / "samples.parquet")
    assert table.schema == SAMPLES_SCHEMA
    rows = table.to_pylist()
    assert [r["category"] for r in rows] == ["cat"] * 6 + ["sunset"] * 6
    assert [r["category_id"] for r in rows] == [1] * 6 + [2] * 6
    assert [round(r["condition_mean"], 4) for r in rows[:6]] == [3.0] * 3 + [7.0] * 3
    for row in rows:
        assert sum(row["histogram"]) == pytest.approx(1.0, abs=1e-5)
        assert 1.0 <= row["pred_mean"] <= 10.0 and sum(row["pred_dist"]) == pytest.approx(1.0, abs=1e-4)
        assert Image.open(io.BytesIO(row["image_png"])).size == (32, 32)
        assert row["pred_category"] is None and row["apm_id"] == APM
    assert len({r["seed"] for r in rows}) == 12
    assert Image.open(out / "grid.png").size[0] > 100

    # The same checkpoint, seed and condition draw the same sample.
    assert generate_job.main([*argv[:-4], "--out", str(tmp_path / "again"), "--category", "cat"]) == 0
    again = pq.read_table(tmp_path / "again" / "samples.parquet").to_pylist()
    assert [r["image_png"] for r in again] == [r["image_png"] for r in rows[:6]]
    # A different noise seed draws different samples.
    assert generate_job.main([*argv[:-4], "--out", str(tmp_path / "other"), "--category", "cat",
                              "--seed", "100"]) == 0
    other = pq.read_table(tmp_path / "other" / "samples.parquet").to_pylist()
    assert other[0]["image_png"] != rows[0]["image_png"]


def test_generate_errors_name_the_option(checkpoint, tmp_path, capsys):
    base = ["--checkpoint", checkpoint, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        generate_job.main([*base, "--mean", "5", "--category", "dog"])
    assert "unknown category 'dog'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_job.main([*base, "--histogram", "1,2,3"])
    assert "10 values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_job.main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"),
                           "--mean", "5"])
    assert "missing.pt" in capsys.readouterr().err


def test_classifier_labels_samples_and_round_trips(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    judge = APMJudge(APM, image_size=32)
    # Real photos stand-ins: flat colours, one per category, with noise; the classifier must
    # learn them from the APM's features and keep its answers through save and load.
    colours = np.array([[220, 190, 120], [90, 90, 90], [250, 120, 40]])
    labels = np.repeat(np.arange(3), 20)
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 12, (60, 32, 32, 3)), 0, 255)
    features = judge(images.astype(np.uint8)).features
    classifier = fit_classifier(judge, features, labels, tuple(CATEGORIES))
    assert np.mean(classifier.probabilities(features).argmax(axis=1) == labels) == 1.0
    path = str(tmp_path / "classifier.pt")
    classifier.save(path)
    loaded = CategoryClassifier.load(path)
    assert loaded.categories == tuple(CATEGORIES) and loaded.apm_model == APM
    np.testing.assert_allclose(loaded.probabilities(features), classifier.probabilities(features),
                               rtol=1e-4, atol=1e-6)

    out = tmp_path / "labelled"
    assert generate_job.main(["--checkpoint", checkpoint, "--mean", "5", "--n", "2", "--out", str(out),
                              "--classifier", path]) == 0
    rows = pq.read_table(out / "samples.parquet").to_pylist()
    assert all(r["pred_category"] in CATEGORIES and 0 < r["pred_category_prob"] <= 1 for r in rows)
    assert all(r["pred_mean"] is None for r in rows)  # no --apm: no scores
    assert "classified as their condition's category" in capsys.readouterr().out

    with pytest.raises(ValueError, match="not a category classifier"):
        CategoryClassifier.load(checkpoint)


def test_frechet_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by (1, 2, 0): the distance is the squared shift.
    assert frechet_distance(a, a + [1.0, 2.0, 0.0]) == pytest.approx(5.0, abs=1e-6)
    # Same mean, one variance 4x: (sqrt(4) - 1)^2 = 1 for that dimension.
    b = a * [2.0, 1.0, 1.0]
    assert frechet_distance(a, b) == pytest.approx(1.0 + (a[:, 0].mean()) ** 2, rel=0.05)
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(a[:1], a)


# A local two-node Ray in a process of its own (the suite's own Ray may be up in this one): a
# head without GPUs, like every shipped cluster's, and a node that advertises one (fake) GPU.
_ON_A_GPU_NODE = r"""
import importlib, json, sys, threading
import ray
from ray.cluster_utils import Cluster

# torch is imported while the nodes start (Ray starts them from the main thread only).
importing = threading.Thread(target=importlib.import_module, args=("pfagan.sampling",))
importing.start()
small = {"object_store_memory": 100 * 1024 * 1024}
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "dashboard_agent_listen_port": None,
    **small})
gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, resources={"gpu_node": 1}, **small)
importing.join()
import numpy as np
from pfagan.checkpoint import load_generator
from pfagan.sampling import grid_conditions, sample, sampling_task

try:
    ray.init(address=cluster.address, log_to_driver=False)
    stored = load_generator(sys.argv[1])
    conditions = grid_conditions([0, 2], np.full((2, 10), 0.1), 3)
    # The task asks for the GPU as with --device cuda, but computes on CPU tensors (this
    # machine's torch has no CUDA).
    images, ran_on = ray.get(sampling_task("cuda").remote(stored, conditions, 4, "cpu"))
    resources = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
    print(json.dumps({"head": cluster.head_node.node_id, "gpu_node": gpu_node.node_id,
                      "ran_on": ran_on, "ran_on_resources": resources[ran_on],
                      "same_as_here": bool(np.array_equal(images, sample(stored, conditions, 4))),
                      "shape": list(images.shape)}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.timeout(120)
def test_generation_for_cuda_runs_on_the_gpu_node_not_the_driver(checkpoint):
    proc = subprocess.run([sys.executable, "-c", _ON_A_GPU_NODE, checkpoint], capture_output=True,
                          text=True, timeout=110, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    placed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert placed["ran_on"] == placed["gpu_node"] != placed["head"]
    assert placed["ran_on_resources"].get("gpu_node") == 1 and placed["ran_on_resources"]["GPU"] == 1
    assert placed["same_as_here"] and placed["shape"] == [2 * 2 * 3, 32, 32, 3]
