"""The synthetic AVA: vote statistics like AVA's, category-dependent taste, the package layout."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from apm.core import storage
from apm.core.schemas import SYNTHETIC_TRUTH_SCHEMA
from apm.data.ava import read_ava_package
from apm.data.synthetic import aesthetics
from apm.data.synthetic.attributes import CATEGORIES
from jobs import make_synthetic

SCORES = np.arange(1, 11)


def histogram_stats(votes: np.ndarray):
    n = votes.sum(axis=1)
    mean = votes @ SCORES / n
    var = votes @ SCORES**2 / n - mean**2
    skew = (votes @ SCORES**3 / n - 3 * mean * var - mean**3) / var**1.5
    return n, mean, np.sqrt(var), skew


@pytest.fixture(scope="module")
def labels():
    return aesthetics.sample_labels(np.random.default_rng(123), 60_000)


def test_votes_look_like_ava(labels):
    n, mean, std, skew = histogram_stats(labels.votes)
    assert np.array_equal(n, labels.n_votes)
    assert n.min() >= 78 and n.max() <= 549 and abs(n.mean() - 210) < 8  # AVA: 78..549, ~210
    assert abs(mean.mean() - 5.4) < 0.1  # AVA: 5.38
    assert 0.6 < mean.std() < 0.85  # AVA: 0.73
    assert 1.2 < std.mean() < 1.7  # AVA: 1.43
    assert ((mean >= 4) & (mean <= 7)).mean() > 0.9
    # Floor and ceiling effects: poor photos skew right, excellent ones skew left.
    assert skew[mean < 4].mean() > 0.4
    assert skew[mean > 6.5].mean() < -0.1
    assert skew[mean < 4].mean() > skew[(mean > 5) & (mean < 6)].mean() > skew[mean > 6.5].mean()


def test_latent_is_standardised(labels):
    # The affine constants were calibrated on the sampling distribution; they must still fit it.
    assert abs(labels.latent.mean()) < 0.05 and abs(labels.latent.std() - 1) < 0.05


def test_true_mean_follows_the_latent(labels):
    latent = np.linspace(-4, 4, 200)
    for disagreement in (1.0, 1.5, 2.5):
        pmf = aesthetics.rating_pmf(latent, np.full_like(latent, disagreement))
        assert np.allclose(pmf.sum(axis=1), 1.0) and (pmf >= 0).all()
        assert np.all(np.diff(pmf @ SCORES) > 0)
    _, mean, _, _ = histogram_stats(labels.votes)
    assert np.corrcoef(mean, labels.true_mean)[0, 1] > 0.95


def quality(category: str, **changes) -> float:
    """Raw quality of one photo with neutral attributes, except ``changes``."""
    columns = {"blur": 0.0, "exposure": 0.0, "contrast": 1.0, "saturation": 1.1, "harmony": 0.7,
               "noise": 0.0, "tilt": 0.0, "subject_x": 1 / 3, "subject_y": 1 / 3,
               "subject_size": 0.4, "clutter": 0.0, "background_darkness": 0.0}
    columns.update(changes)
    arrays = {k: np.array([v], dtype=np.float64) for k, v in columns.items()}
    return float(aesthetics.raw_quality(arrays, np.array([CATEGORIES.index(category)]))[0])


def test_content_matters():
    # A dark plain backdrop suits a flower or a portrait, not a beach or a meadow.
    for category, sign in [("flower", 1), ("portrait", 1), ("beach", -1), ("meadow", -1)]:
        delta = quality(category, background_darkness=1.0) - quality(category)
        assert np.sign(delta) == sign, category
    # A tilted horizon hurts a lake much more than a cat close-up.
    lake = quality("lake") - quality("lake", tilt=10.0)
    cat = quality("cat") - quality("cat", tilt=10.0)
    assert lake > 3 * cat > 0
    # Everyone dislikes blur and noise.
    for category in CATEGORIES:
        assert quality(category, blur=0.8) < quality(category)
        assert quality(category, noise=0.1) < quality(category)


def test_category_dependence_shows_in_votes(labels):
    _, mean, _, _ = histogram_stats(labels.votes)
    dark = labels.attributes["background_darkness"] > 0.6
    for category, sign in [("flower", 1), ("beach", -1)]:
        mine = labels.category_id == CATEGORIES.index(category)
        delta = mean[mine & dark].mean() - mean[mine & ~dark].mean()
        assert np.sign(delta) == sign and abs(delta) > 0.2, (category, delta)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("synthetic") / "ava"
    assert make_synthetic.main(["--n", "60", "--size", "96", "--seed", "7", "--out", str(out)]) == 0
    return out


def test_written_in_the_ava_layout(synthetic_dir):
    truth = pq.read_table(synthetic_dir / "truth.parquet")
    assert truth.schema == SYNTHETIC_TRUTH_SCHEMA and truth.num_rows == 60
    table, report = read_ava_package(str(synthetic_dir), images=str(synthetic_dir / "images"))
    assert report.bad_rows == [] and table.num_rows == 60
    manifest = table.to_pandas().set_index("image_id")
    t = truth.to_pandas().set_index("image_id")
    assert (manifest["n_votes"] == t["n_votes"]).all()
    assert (manifest["split"] == t["split"]).all()
    assert set(manifest["split"]) == {"train", "test"}
    assert all(f"{c}_{s}" in lists for c, s, lists in
               zip(t["category"], t["split"], manifest["image_lists"]))
    assert manifest["tag1_name"].notna().all() and manifest["challenge_name"].notna().all()
    for _, row in t.iloc[:10].iterrows():
        with Image.open(row["image_uri"]) as image:
            assert image.size == (row["width"], row["height"]) and max(image.size) == 96
        mask = np.asarray(Image.open(row["mask_uri"])) > 0
        assert mask.shape == (row["height"], row["width"]) and mask.any()
        x0, y0, x1, y1 = row["subject_bbox"]
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_same_seed_same_dataset(synthetic_dir, tmp_path):
    again = tmp_path / "again"
    assert make_synthetic.main(["--n", "60", "--size", "96", "--seed", "7", "--out", str(again)]) == 0
    assert (again / "AVA.txt").read_text() == (synthetic_dir / "AVA.txt").read_text()
    for image_id in (1, 30, 60):
        assert (again / "images" / f"{image_id}.jpg").read_bytes() == \
            (synthetic_dir / "images" / f"{image_id}.jpg").read_bytes()
    other = tmp_path / "other"
    assert make_synthetic.main(["--n", "60", "--size", "96", "--seed", "8", "--out", str(other)]) == 0
    assert (other / "AVA.txt").read_text() != (synthetic_dir / "AVA.txt").read_text()


def test_bad_options_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_synthetic.main(["--n", "0", "--out", str(tmp_path)])
    assert "--n must be at least 1" in capsys.readouterr().err


def test_written_to_s3(s3_bucket, ray_local):
    out = f"{s3_bucket}/synthetic"
    assert make_synthetic.main(["--n", "12", "--size", "64", "--out", out]) == 0
    names = {f.uri.rsplit("/", 1)[-1] for f in storage.list_files(out)}
    assert {"AVA.txt", "tags.txt", "challenges.txt", "truth.parquet", "1.jpg", "12.png"} <= names
    truth = storage.read_table(f"{out}/truth.parquet")
    assert truth.column("image_uri").to_pylist()[0] == f"{out}/images/1.jpg"
