"""One predictor for every stage: precision, identical numbers, one read, the trained crop."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import small_synthetic_ava
from skimage import data as skdata

from apm.core import storage
from apm.core.rows import NO_ERROR
from apm.models import APM, APMConfig, checkpoint_bytes
from apm.models.predictor import Predictor
from apm.models.transforms import image_transform
from apm.stages.evaluation import EvaluationPredictor
from apm.stages.scoring import ScorePredictor, scores_table
from jobs import evaluate as evaluate_job
from jobs import explain as explain_job
from jobs import score as score_job

SIZE = 32  # small crops keep the CPU tests quick
TRAINED = 40  # the crop the test checkpoint records


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("precision") / "apm.pt")
    storage.write_bytes(uri, checkpoint_bytes(APM(APMConfig(backbone="resnet18")), TRAINED))
    return uri


def _batch(crop: int) -> dict[str, np.ndarray]:
    """Three real photos' crops and an error row, as the decoding tasks hand them over."""
    transform = image_transform("resnet18", crop)
    crops = np.stack([transform.crop_image(p) for p in
                      (skdata.astronaut(), skdata.chelsea(), skdata.coffee())]
                     + [np.zeros((crop, crop, 3), np.uint8)])
    return {"row": np.arange(4), "error": np.array([NO_ERROR] * 3 + ["not found"], dtype=object),
            "error_kind": np.array([NO_ERROR] * 3 + ["permanent"], dtype=object), "crop": crops,
            "width": np.zeros(4, np.int32), "height": np.zeros(4, np.int32)}


def test_bf16_on_cpu_stores_normalised_distributions_and_their_means():
    predictor = Predictor("random:resnet18", SIZE, "cpu", "bf16")
    assert predictor.precision == "bf16"
    batch = _batch(SIZE)
    p = predictor.predict(batch["crop"][:3])
    assert p.dist.dtype == np.float32
    np.testing.assert_allclose(p.dist.astype(np.float64).sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(p.dist @ np.arange(1, 11), p.mean, atol=1e-4)
    # End to end through the scoring actor and the table it writes.
    scorer = ScorePredictor("random:resnet18", SIZE, embedding=False, device="cpu",
                            storage_env={}, precision="bf16")
    table = scores_table(None, scorer(batch), "random:resnet18", np.datetime64("now").item())
    ok = [s == "ok" for s in table.column("status").to_pylist()]
    dist = np.array([d for d, good in zip(table.column("dist").to_pylist(), ok) if good])
    mean = np.array([m for m, good in zip(table.column("mean").to_pylist(), ok) if good])
    assert len(dist) == 3 and table.column("dist").null_count == 1
    np.testing.assert_allclose(dist.astype(np.float64).sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(dist @ np.arange(1, 11), mean, atol=1e-4)


def test_evaluation_and_scoring_give_identical_numbers(checkpoint):
    batch = _batch(SIZE)
    scored = ScorePredictor(checkpoint, SIZE, embedding=False, device="cpu", storage_env={})(batch)
    evaluated = EvaluationPredictor(checkpoint, SIZE, device="cpu", storage_env={})(batch)
    np.testing.assert_array_equal(scored["dist"], evaluated["dist"])
    np.testing.assert_array_equal(scored["std"], evaluated["std"].astype(np.float32))
    np.testing.assert_array_equal(scored["mean"], evaluated["mean"].astype(np.float32))
    assert np.isnan(evaluated["mean"][3]) and np.isnan(scored["mean"][3])


def test_score_driver_reads_the_checkpoint_once(checkpoint, tmp_path, monkeypatch, ray_local):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in (("a", skdata.astronaut()), ("b", skdata.chelsea())):
        storage.write_bytes(str(photos / f"{name}.png"), _png(image))
    reads = []
    real = storage.read_bytes

    def counting(uri, *args, **kwargs):
        reads.append(uri)
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(storage, "read_bytes", counting)
    monkeypatch.setattr(score_job, "init_ray", lambda address: None)  # ray_local is up
    assert score_job.main(["--input", str(photos), "--output", str(tmp_path / "out"),
                           "--model", checkpoint, "--batch-size", "2"]) == 0
    assert reads.count(checkpoint) == 1


class _Planned(Exception):
    """What a stage asked the pipeline for: stops it before any photo is read."""


def _capture(monkeypatch, module) -> None:
    def planned(inputs, rows, transform, predictor, kwargs, **options):
        raise _Planned(transform.crop_size, kwargs["image_size"])

    monkeypatch.setattr(module, "predict_rows", planned)


def test_every_stage_defaults_to_the_trained_crop(checkpoint, tmp_path, monkeypatch, ray_local):
    import apm.explain.job
    import apm.stages.evaluation
    import apm.stages.scoring

    manifest, _ = small_synthetic_ava(tmp_path, n=8, seed=3)
    for module in (apm.stages.scoring, apm.stages.evaluation, apm.explain.job):
        _capture(monkeypatch, module)
    argvs = {
        score_job: ["--input", manifest, "--output", str(tmp_path / "scores")],
        evaluate_job: ["--manifest", manifest, "--out", str(tmp_path / "eval")],
        explain_job: ["--input", manifest, "--out", str(tmp_path / "explain"), "--budget", "1"],
    }
    for job, argv in argvs.items():
        monkeypatch.setattr(job, "init_ray", lambda address: None)
        with pytest.raises(_Planned) as planned:
            job.main([*argv, "--model", checkpoint])
        assert planned.value.args == (TRAINED, TRAINED), job.__name__


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_batch_size_defaults_to_the_devices():
    from apm.stages.base import DEFAULT_BATCH_SIZE
    from apm.stages.evaluation import EvaluationConfig
    from apm.stages.scoring import ScoreConfig
    from apm.stages.teacher import TeacherJobConfig

    configs = {
        "score": lambda **kw: ScoreConfig(input="in", out="out", model="random:resnet18", **kw),
        "evaluate": lambda **kw: EvaluationConfig(manifest="m.parquet", models=("random:resnet18",),
                                                  out="out", **kw),
        "teacher": lambda **kw: TeacherJobConfig(input="in", out="out", **kw),
    }
    for name, make in configs.items():
        assert make().batch_size == DEFAULT_BATCH_SIZE["cpu"] == 32, name
        assert make(device="cuda").batch_size == DEFAULT_BATCH_SIZE["cuda"] == 256, name
        assert make(device="cuda", batch_size=7).batch_size == 7, name
        with pytest.raises(ValueError, match="batch size must be at least 1"):
            make(batch_size=0)
