"""Adversarial heatmaps (apm.explain, jobs.explain) with a tiny APM trained here on six photos."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.schemas import EXPLANATIONS_SCHEMA
from apm.explain import (
    AttackConfig,
    Selection,
    attack,
    change_heatmap,
    mass_inside,
    peak_bbox,
    perturbation_norm,
)
from apm.explain.attack import total_variation
from apm.explain.source import select_inputs
from apm.models import APMConfig, create_apm, save_checkpoint
from apm.models.transforms import image_transform
from apm.training.losses import kl_loss
from jobs import explain as explain_job

SIZE = 32  # crop side: small, so that the CPU tests stay quick
BACKBONE = "resnet18"


def _pmf(peak: int) -> list[float]:
    """A score distribution over 1..10 concentrated around ``peak``."""
    weights = np.exp(-0.5 * (np.arange(1, 11) - peak) ** 2)
    return list(weights / weights.sum())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The model is tiny: one thread, so that it does not fight Ray's workers for 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Six small photos and an APM fitted for a few dozen steps to score three high, three low."""
    root = tmp_path_factory.mktemp("explain")
    (root / "photos").mkdir()
    images = {"astronaut": skdata.astronaut(), "chelsea": skdata.chelsea(),
              "coffee": skdata.coffee(), "camera": np.stack([skdata.camera()] * 3, axis=-1)}
    images["astronaut_face"] = images["astronaut"][:256, 128:384]
    images["chelsea_flipped"] = images["chelsea"][:, ::-1]
    peaks = {"astronaut": 8, "coffee": 8, "astronaut_face": 7, "chelsea": 3, "camera": 2,
             "chelsea_flipped": 3}
    transform = image_transform(BACKBONE, SIZE)
    crops, targets = [], []
    for name, pixels in images.items():
        photo = Image.fromarray(np.ascontiguousarray(pixels))
        photo.thumbnail((64, 64))
        photo.save(root / "photos" / f"{name}.jpg", quality=95)
        crops.append(transform.crop_image(np.asarray(Image.open(root / "photos" / f"{name}.jpg"))))
        targets.append(_pmf(peaks[name]))
    crops_t = torch.from_numpy(np.stack(crops))
    torch.manual_seed(0)
    model = create_apm(APMConfig(backbone=BACKBONE))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = transform.normalize(crops_t), torch.tensor(targets)
    for _ in range(30):
        optimizer.zero_grad()
        kl_loss(model(x).dist_logits, target).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    save_checkpoint(model, str(root / "model.pt"))
    return root, model, transform, crops_t


@pytest.mark.parametrize("norm, budget", [("linf", 8 / 255), ("l2", 0.5)])
def test_perturbation_stays_in_its_budget_and_in_the_pixel_range(trained, norm, budget):
    _, model, transform, crops = trained
    crops = crops[:4].clone()
    crops[0, :8] = 255  # saturated pixels: the clamp to [0, 1] must not break the budget
    crops[1, :8] = 0
    config = AttackConfig(budget=budget, steps=5, norm=norm)
    for direction in ("lower", "raise"):
        result = attack(model, transform, crops, config, direction)
        size = perturbation_norm(result.delta, norm)
        if norm == "linf":  # exact: clamping to the (float32) budget
            assert (size <= torch.tensor(budget, dtype=torch.float32)).all()
        else:  # a float32 rescaling: within its rounding
            assert (size <= budget * (1 + 1e-6)).all()
        assert (size >= 0.9 * budget).all()  # ... and the attack uses it
        modified = crops.float() / 255 + result.delta
        assert modified.min() >= 0 and modified.max() <= 1


@pytest.mark.parametrize("norm, budget", [("linf", 4 / 255), ("l2", 0.5)])
def test_lower_moves_the_score_down_and_raise_moves_it_up(trained, norm, budget):
    _, model, transform, crops = trained
    config = AttackConfig(budget=budget, steps=5, norm=norm)
    lower = attack(model, transform, crops, config, "lower")
    raised = attack(model, transform, crops, config, "raise")
    assert torch.equal(lower.before, raised.before)
    assert (lower.after < lower.before - 0.01).all()
    assert (raised.after > raised.before + 0.01).all()
    # The reported scores are the model's on the crops and on the perturbed crops.
    with torch.no_grad():
        clean = model(transform.normalize(crops)).mean
        moved = model(transform.normalize((crops.float() / 255 + lower.delta) * 255)).mean
    assert torch.allclose(lower.before, clean, atol=1e-4)
    assert torch.allclose(lower.after, moved, atol=1e-4)


def test_total_variation_prior_smooths_the_perturbation(trained):
    _, model, transform, crops = trained
    plain = attack(model, transform, crops[:4], AttackConfig(budget=0.05, steps=5, norm="linf"),
                   "lower")
    smooth = attack(model, transform, crops[:4],
                    AttackConfig(budget=0.05, steps=5, norm="linf", tv_weight=100.0), "lower")
    assert (total_variation(smooth.delta) < 0.7 * total_variation(plain.delta)).all()


def test_heatmap_shape_range_and_smoothing():
    delta = torch.zeros(2, 24, 20, 3)
    delta[0, 10, 8] = torch.tensor([0.03, 0.04, 0.0])  # one changed pixel, |change| = 0.05
    raw = change_heatmap(delta, sigma=0)
    assert raw.shape == (2, 24, 20)
    assert raw[0, 10, 8] == 1 and raw[0].sum() == 1 and (raw[1] == 0).all()  # nothing changed
    heat = change_heatmap(delta, sigma=2.0)
    assert heat.min() >= 0 and heat.max() == 1 and heat[0, 10, 8] == 1
    # A Gaussian of sigma 2: a neighbour holds exp(-1 / (2 * 2**2)) of the peak.
    assert heat[0, 10, 9].item() == pytest.approx(math.exp(-1 / 8), rel=1e-5)
    assert heat[0, 12, 8].item() == pytest.approx(math.exp(-4 / 8), rel=1e-5)
    assert torch.isclose(heat[0, 10, 9], heat[0, 10, 7]) and torch.isclose(heat[0, 9, 8], heat[0, 11, 8])


def test_peak_region_is_the_connected_area_around_the_maximum():
    heat = np.zeros((20, 30))
    heat[2:6, 3:9] = 1.0  # the peak region
    heat[5, 9] = 0.4  # touches it, but under the threshold
    heat[12:15, 20:28] = 0.7  # above the threshold, not connected
    assert peak_bbox(heat, 0.5) == (3, 2, 9, 6)
    assert peak_bbox(heat, 0.3) == (3, 2, 10, 6)
    assert peak_bbox(np.zeros((5, 5)), 0.5) is None
    mask = np.zeros((20, 30), bool)
    mask[:, :9] = True
    assert mass_inside(heat, mask) == pytest.approx(24 / (24 + 0.4 + 24 * 0.7))


@pytest.mark.parametrize("options, words", [
    (["--budget", "0"], "--budget must be a positive number"),
    (["--budget", "abc"], "not a number or fraction"),
    (["--budget", "2"], "exceeds 1"),
    (["--steps", "0"], "--steps must be a whole number of at least 1"),
    (["--smooth", "1.5"], "--smooth must be in [0, 1)"),
    (["--select", "lowest"], "needs predicted scores"),
])
def test_cli_errors_name_the_option(tmp_path, capsys, options, words, ray_local):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 40)).save(folder / "a.jpg")
    argv = ["--input", str(folder), "--out", str(tmp_path / "out"), "--model",
            f"random:{BACKBONE}", "--image-size", str(SIZE), "--norm", "linf", "--budget", "0.1",
            *options]
    with pytest.raises(SystemExit) as exit_info:
        explain_job.main(argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_scores_input_picks_the_lowest_ok_rows(tmp_path):
    scores = tmp_path / "scored" / "scores"
    scores.mkdir(parents=True)
    pq.write_table(pa.table({
        "uri": [f"/p/{i}.jpg" for i in range(5)], "image_id": pa.array(range(5), pa.int64()),
        "status": ["ok", "error", "ok", "ok", "ok"], "mean": [6.0, None, 4.0, 5.0, 3.0],
    }), scores / "part-000000.parquet")
    inputs = select_inputs(str(tmp_path / "scored"), str(tmp_path / "out"),
                           Selection(sample=2, select="lowest"))
    assert inputs.table.column("uri").to_pylist() == ["/p/4.jpg", "/p/2.jpg"]
    assert "1 error rows not explained" in inputs.lines[0]
    highest = select_inputs(str(tmp_path / "scored"), str(tmp_path / "out"),
                            Selection(select="highest"))
    assert highest.table.column("image_id").to_pylist() == [0, 3, 2, 4]


def test_job_writes_table_heatmaps_and_panels_with_error_rows(trained, capsys, ray_local):
    root, _, _, _ = trained
    photos = root / "photos"
    (photos / "broken.jpg").write_bytes((photos / "coffee.jpg").read_bytes()[:300])
    (photos / "notes.jpg").write_bytes(b"not a photo\n")
    out = root / "explained"
    budget = 4 / 255
    argv = ["--input", str(photos), "--out", str(out), "--model", str(root / "model.pt"),
            "--image-size", str(SIZE), "--direction", "both", "--norm", "linf", "--budget", "4/255",
            "--steps", "4", "--batch-size", "8", "--concurrency", "1"]
    assert explain_job.main(argv) == 0
    assert "explained: 8 photos -> 16 rows = 12 ok + 4 error" in capsys.readouterr().out
    table = pq.read_table(out / "explanations.parquet")
    assert table.schema.equals(EXPLANATIONS_SCHEMA)
    rows = table.to_pylist()
    assert [r["direction"] for r in rows] == ["lower", "raise"] * 8
    assert len({r["uri"] for r in rows}) == 8
    for row in rows:
        name = row["uri"].rsplit("/", 1)[1]
        if name in ("broken.jpg", "notes.jpg"):
            assert row["status"] == "error" and row["error"], row
            assert row["score_after"] is None and row["heatmap_uri"] is None
            continue
        assert row["status"] == "ok" and row["error"] is None
        assert row["delta"] == pytest.approx(row["score_after"] - row["score_before"], abs=1e-5)
        assert row["delta"] < 0 if row["direction"] == "lower" else row["delta"] > 0
        assert row["perturbation_norm"] <= np.float32(budget) and row["norm"] == "linf"
        assert row["budget"] == np.float32(budget) and row["steps"] == 4
        x0, y0, x1, y1 = row["peak_bbox"]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        heatmap = np.asarray(Image.open(row["heatmap_uri"]))
        assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == 255
        # The box holds the heatmap's peak.
        y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert x0 <= x < x1 and y0 <= y < y1
        with Image.open(row["panel_uri"]) as panel:
            assert panel.format == "PNG" and panel.width > 2 * panel.height
    assert storage.exists(str(out / "panels" / "000000-lower.png"))
    # A second run does not silently replace the table.
    with pytest.raises(SystemExit):
        explain_job.main(argv)
    assert "--overwrite" in capsys.readouterr().err
