"""PFAGAN: the MCBN layer and the projection by hand, shapes, losses, EMA, checkpoints, the
conditioning tables, and Ray Train (2 CPU workers) with a resumed rerun."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import small_synthetic_ava

from apm.core import storage
from apm.data.synthetic.dataset import CATEGORY_TAGS, TAG_NAMES
from jobs import train_pfagan
from pfagan.checkpoint import GeneratorCheckpointError, generator_bytes, load_generator, save_generator
from pfagan.config import GANConfig
from pfagan.data import ConditioningSource, load_conditioning
from pfagan.discriminator import Discriminator
from pfagan.ema import averaged_copy, effective_decay, update_ema
from pfagan.generator import Generator
from pfagan.layers import MixedConditionalBatchNorm2d
from pfagan.losses import d_hinge_loss, g_hinge_loss

TINY = {"z_dim": 16, "g_channels": 8, "d_channels": 8}


def conditions(n: int, num_categories: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, TINY["z_dim"], generator=g),
            torch.randint(0, num_categories, (n,), generator=g),
            torch.softmax(torch.randn(n, 10, generator=g), dim=1))


def test_mcbn_matches_a_hand_computation():
    layer = MixedConditionalBatchNorm2d(channels=2, num_categories=2, num_bins=3)
    with torch.no_grad():
        layer.weight_gamma.copy_(torch.arange(12.0).view(2, 3, 2) / 10)
        layer.bias_gamma.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.weight_beta.copy_(-torch.arange(12.0).view(2, 3, 2) / 20)
        layer.bias_beta.copy_(torch.tensor([[0.5, -0.5], [1.5, -1.5]]))
    h = torch.arange(16.0).view(2, 2, 2, 2) ** 1.5
    category = torch.tensor([1, 0])
    hist = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    out = layer(h, category, hist)

    expected = torch.empty_like(h)
    for c in range(2):
        values = h[:, c]
        mu = values.mean()
        sigma = ((values - mu) ** 2).mean().add(1e-5).sqrt()  # biased variance, as batch norm
        for n in range(2):
            s = category[n]
            gamma = sum(hist[n, b] * layer.weight_gamma[s, b, c] for b in range(3)) + layer.bias_gamma[s, c]
            beta = sum(hist[n, b] * layer.weight_beta[s, b, c] for b in range(3)) + layer.bias_beta[s, c]
            expected[n, c] = gamma * (values[n] - mu) / sigma + beta
    torch.testing.assert_close(out, expected.detach())


def test_mcbn_starts_as_plain_batch_norm():
    layer = MixedConditionalBatchNorm2d(channels=4, num_categories=3, num_bins=10)
    h = torch.randn(5, 4, 3, 3)
    _, category, hist = conditions(5, 3)
    torch.testing.assert_close(layer(h, category, hist), torch.nn.BatchNorm2d(4, affine=False)(h))


def test_projection_term_by_hand():
    d = Discriminator(GANConfig(num_categories=3, **TINY)).eval()  # eval: no power iteration
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    hist = torch.softmax(torch.randn(2, 10), dim=1)
    with torch.no_grad():
        phi = d.features(x)
        out = d(x, torch.tensor([0, 1]), hist)
        E, V = d.embed.weight, d.hist_embed.weight  # spectrally normalised, (3, C) and (C, 10)
        by_hand = phi @ d.psi.weight[0] + d.psi.bias + (E[[0, 1]] * phi).sum(1) + ((hist @ V.T) * phi).sum(1)
        torch.testing.assert_close(out, by_hand)
        # Only the category changes: the output moves by <E[s'] - E[s], phi>, nothing else.
        moved = d(x, torch.tensor([2, 2]), hist) - out
        torch.testing.assert_close(moved, ((E[[2, 2]] - E[[0, 1]]) * phi).sum(1))
        # Only the histogram changes: by <V (y' - y), phi>.
        other = torch.full((2, 10), 0.1)
        torch.testing.assert_close(d(x, torch.tensor([0, 1]), other) - out,
                                   (((other - hist) @ V.T) * phi).sum(1))


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes(resolution):
    cfg = GANConfig(num_categories=4, resolution=resolution, **TINY)
    z, category, hist = conditions(3, 4)
    images = Generator(cfg)(z, category, hist)
    assert images.shape == (3, 3, resolution, resolution)
    assert images.abs().max() <= 1
    assert Discriminator(cfg)(images, category, hist).shape == (3,)


def test_config_refuses_other_resolutions():
    with pytest.raises(ValueError, match="resolution must be one of"):
        GANConfig(num_categories=2, resolution=48)


def test_hinge_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # real: max(0, 1 - x) = 0, 0.5, 2; fake: max(0, 1 + x) = 0, 1, 2.
    assert d_hinge_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert g_hinge_loss(fake).item() == pytest.approx(1 / 3)


def test_ema_update_on_known_numbers():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
    ema = averaged_copy(model)
    with torch.no_grad():
        ema[0].weight.fill_(1.0)
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(7.0)
    update_ema(ema, model, decay=0.9)
    assert ema[0].weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert ema[1].running_mean.item() == 7.0  # buffers are copied
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    assert effective_decay(0.999, 0) == pytest.approx(0.1)
    assert effective_decay(0.999, 90) == pytest.approx(0.91)
    assert effective_decay(0.999, 10**6) == 0.999


def test_generator_checkpoint_round_trip(tmp_path):
    cfg = GANConfig(num_categories=2, **TINY)
    generator = Generator(cfg)
    z, category, hist = conditions(4, 2)
    generator(z, category, hist)  # a training-mode pass moves the batch-norm running statistics
    save_generator(generator, ["cat", "dog"], str(tmp_path / "g.pt"))
    stored = load_generator(str(tmp_path / "g.pt"))
    assert stored.config == cfg and stored.categories == ("cat", "dog")
    assert stored.category_id("dog") == 1 and not stored.generator.training
    with torch.no_grad():
        torch.testing.assert_close(stored.generator(z, category, hist),
                                   generator.eval()(z, category, hist), rtol=0, atol=0)
    with pytest.raises(ValueError, match="3 category names"):
        generator_bytes(generator, ["a", "b", "c"])
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GeneratorCheckpointError, match="not readable as a PFAGAN generator checkpoint"):
        load_generator(str(tmp_path / "other.pt"))


def test_conditioning_from_clusters_and_scores(tmp_path):
    fixed = pa.list_(pa.float32(), 10)
    scores = pa.table({
        "uri": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "image_id": pa.array([1, 2, 3, 4], pa.int64()),
        "status": ["ok", "ok", "error", "ok"],
        "dist": pa.array([[2.0] + [0.0] * 9, [0.1] * 10, None, [0.0] * 9 + [1.0]], fixed)})
    clusters = pa.table({"uri": ["a.jpg", "b.jpg", "c.jpg"], "image_id": pa.array([1, 2, 3], pa.int64()),
                         "cluster_id": pa.array([3, 0, 0], pa.int32()),
                         "distance": pa.array([0.1, 0.2, 0.3], pa.float32())})
    storage.write_table(scores, str(tmp_path / "scores" / "part-000000.parquet"))
    storage.write_table(clusters, str(tmp_path / "clusters.parquet"))
    got = load_conditioning(ConditioningSource(clusters=str(tmp_path / "clusters.parquet"),
                                               scores=str(tmp_path)))
    # c.jpg failed scoring and d.jpg has no cluster: both are left out.
    assert got.categories == ("cluster_0", "cluster_3")
    assert got.rows.column("uri").to_pylist() == ["a.jpg", "b.jpg"]
    assert got.rows.column("category_id").to_pylist() == [1, 0]
    target = np.stack(got.rows.column("target").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(target, [[1.0] + [0.0] * 9, [0.1] * 10], rtol=1e-6)


def test_conditioning_source_needs_histograms():
    with pytest.raises(ValueError, match="exactly one of --manifest"):
        ConditioningSource(clusters="c.parquet")
    with pytest.raises(ValueError, match="not both"):
        ConditioningSource(manifest="m", truth="t", clusters="c")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, ray_local):
    return small_synthetic_ava(tmp_path_factory.mktemp("pfagan"), n=32, seed=5)


def test_conditioning_from_a_synthetic_ava(synthetic, tmp_path):
    manifest, truth = synthetic
    by_truth = load_conditioning(ConditioningSource(manifest=manifest, truth=truth))
    assert set(by_truth.categories) <= set(CATEGORY_TAGS)
    target = np.stack(by_truth.rows.column("target").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(target.sum(axis=1), 1.0, rtol=1e-6)
    by_tags = load_conditioning(ConditioningSource(manifest=manifest, split=None))
    assert set(by_tags.categories) <= set(TAG_NAMES.values())
    assert by_tags.rows.num_rows == 32 > by_truth.rows.num_rows  # every split vs 'train'
    ids = by_truth.rows.column("image_id")
    clusters = pa.table({"uri": pa.nulls(len(ids), pa.string()), "image_id": ids,
                         "cluster_id": pa.array(np.arange(len(ids)) % 2, pa.int32())})
    storage.write_table(clusters, str(tmp_path / "clusters.parquet"))
    by_clusters = load_conditioning(ConditioningSource(manifest=manifest,
                                                       clusters=str(tmp_path / "clusters.parquet")))
    assert by_clusters.categories == ("cluster_0", "cluster_1")
    assert by_clusters.rows.column("image_id").to_pylist() == ids.to_pylist()
    assert by_clusters.rows.column("category_id").to_pylist() == clusters.column("cluster_id").to_pylist()


def _train(synthetic, out: Path, epochs: int, capsys) -> tuple[str, dict]:
    manifest, truth = synthetic
    assert train_pfagan.main([
        "--manifest", manifest, "--truth", truth, "--out", str(out), "--name", "tiny",
        "--resolution", "32", "--epochs", str(epochs), "--batch-size", "4", "--num-workers", "2",
        "--cpus-per-worker", "0.5", "--z-dim", "16", "--g-channels", "8", "--d-channels", "8"]) == 0
    uri = capsys.readouterr().out.split("generator checkpoint: ")[1].strip()
    state = torch.load(Path(uri).parent / "state.pt", weights_only=True)
    return uri, state


def test_training_on_two_workers_then_a_rerun_resumes(synthetic, tmp_path, capsys):
    uri, first = _train(synthetic, tmp_path, 1, capsys)
    train = load_conditioning(ConditioningSource(manifest=synthetic[0], truth=synthetic[1]))
    per_epoch = train.rows.num_rows // 2 // 4  # equal shards per worker, full batches of 4
    assert [m["epoch"] for m in first["history"]] == [0]
    assert first["step"] == per_epoch and first["g_step"] == per_epoch // 2
    assert np.isfinite([first["history"][0][k] for k in ("d_loss", "g_loss")]).all()

    # The generator file rebuilds the averaged generator on its own, with the category names.
    stored = load_generator(uri)
    assert stored.categories == train.categories
    ema = Generator(stored.config).eval()
    ema.load_state_dict(first["ema"])
    z, category, hist = conditions(3, len(train.categories))
    with torch.no_grad():
        torch.testing.assert_close(stored.generator(z, category, hist), ema(z, category, hist),
                                   rtol=0, atol=0)

    _, second = _train(synthetic, tmp_path, 2, capsys)
    assert [m["epoch"] for m in second["history"]] == [0, 1]
    assert second["history"][0] == first["history"][0]  # epoch 0 was not trained again
    assert second["step"] == 2 * per_epoch  # the counters continued from the stored ones
    assert second["g_step"] == 2 * per_epoch // 2
