"""jobs.cluster on a small scores table of Gaussian blobs: the blobs are found (ARI 1 against
--truth), every 'ok' row is clustered once, error rows are counted, distances and the summary
agree with NumPy, Lloyd agrees with scikit-learn, and bad inputs stop the job with one line."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.cluster import KMeans

from apm.clustering.features import FeatureSpec
from apm.clustering.kmeans import (
    KMeansConfig,
    best_seeding,
    kmeans_plus_plus,
    nearest,
    partial_stats,
    refine_on_sample,
    update_centroids,
)
from apm.clustering.passes import census, draw_sample, lloyd, read_prepared
from apm.clustering.source import Census, check_columns, scores_files
from apm.clustering.truth import read_truth
from apm.core import storage
from apm.core.schemas import CLUSTER_SUMMARY_SCHEMA, CLUSTERS_SCHEMA, NUM_BINS, SCORES_SCHEMA
from jobs import cluster

K, PER_BLOB, DIM, N_ERRORS = 4, 30, 16, 5
#: Distinct ImageNet ids per blob, for the semantic features.
BLOB_CLASSES = [[1, 2, 3, 4, 5], [100, 101, 102, 103, 104], [500, 501, 502, 503, 504],
                [900, 901, 902, 903, 904]]


def scores_table(embedding: np.ndarray | None, labels: np.ndarray, uris: list[str],
                 n_errors: int, rng: np.random.Generator) -> pa.Table:
    """A SCORES_SCHEMA table: one ok row per label (ids 1..n), then ``n_errors`` error rows."""
    n = len(labels)
    ids = np.array([BLOB_CLASSES[b] for b in labels], np.int32)
    probs = np.sort(rng.dirichlet(np.ones(6), n)[:, :5].astype(np.float32), axis=1)[:, ::-1]
    mean = rng.uniform(1, 10, n).astype(np.float32)
    mean[0] = 10.0  # the last histogram bin holds exactly 10
    ok = {
        "uri": uris, "image_id": np.arange(1, n + 1), "size": [100] * n,
        "shard": [None] * n, "key": [None] * n, "meta": [None] * n, "status": ["ok"] * n,
        "error": [None] * n, "error_kind": [None] * n, "width": [32] * n, "height": [32] * n,
        "dist": [None] * n, "mean": mean, "std": [None] * n, "is_high": mean >= 5,
        "top5_ids": ids.tolist(), "top5_names": [[f"class{i}" for i in row] for row in ids],
        "top5_probs": probs.tolist(),
        "embedding": [None] * n if embedding is None else embedding.astype(np.float16).tolist(),
    }
    bad = {name: [None] * n_errors for name in ok}
    bad.update(uri=[f"/missing/{i}.jpg" for i in range(n_errors)],
               image_id=np.arange(n + 1, n + n_errors + 1), status=["error"] * n_errors,
               error=["not found"] * n_errors, error_kind=["permanent"] * n_errors)
    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = {name: list(ok[name]) + list(bad[name]) for name in ok}
    rows.update(model_id=["m"] * (n + n_errors), scored_at=[stamp] * (n + n_errors))
    return pa.table(rows, schema=SCORES_SCHEMA)


def write_photos(folder, labels: np.ndarray, corrupt: int) -> list[str]:
    """A small JPEG per row, coloured by blob; row ``corrupt`` is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    uris = []
    for i, blob in enumerate(labels):
        path = folder / f"{i + 1}.jpg"
        if i == corrupt:
            path.write_bytes(b"not a jpeg")
        else:
            Image.new("RGB", (40, 32), colours[blob]).save(path)
        uris.append(str(path))
    return uris


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Scores of K well-separated blobs in two part files (plus a _listing that must be
    ignored), their truth table, and the blob centres."""
    root = tmp_path_factory.mktemp("cluster")
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(K), PER_BLOB)
    centres = rng.normal(size=(K, DIM)) * 4
    embedding = centres[labels] + rng.normal(scale=0.3, size=(len(labels), DIM))
    corrupt = 0
    embedding[corrupt] = centres[labels[corrupt]]  # nearest its centroid: on the contact sheet
    uris = write_photos(root / "photos", labels, corrupt)
    table = scores_table(embedding, labels, uris, N_ERRORS, rng)
    out = root / "scored"
    (out / "scores").mkdir(parents=True)
    (out / "_listing").mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), out / "scores" / "part-00000.parquet")
    pq.write_table(table.slice(half), out / "scores" / "part-00001.parquet")
    pq.write_table(pa.table({"uri": ["x"]}), out / "_listing" / "part-00000.parquet")
    truth = root / "truth.parquet"
    pq.write_table(pa.table({"image_id": np.arange(1, len(labels) + 1),
                             "category": [f"blob{b}" for b in labels]}), truth)
    return {"root": root, "scores": out, "truth": truth, "table": table, "labels": labels,
            "uris": uris, "corrupt": uris[corrupt]}


def run_job(argv: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cluster.main(argv) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def clustered(blobs, ray_local):
    out = blobs["root"] / "clusters"
    printed = run_job(["--scores", str(blobs["scores"]), "--k", str(K), "--out", str(out),
                       "--truth", str(blobs["truth"]), "--sheet-size", "4", "--thumb-size", "16",
                       "--batch-size", "32"])
    tables = [pq.read_table(out / name) for name in ("clusters.parquet", "cluster_summary.parquet")]
    return out, printed, *tables


def ok_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["status"], "ok"))


def test_finds_the_blobs_and_reports_ari_errors_and_outputs(blobs, clustered):
    out, printed, clusters, _ = clustered
    assert "skipped 5 error rows" in printed and f"clustered {K * PER_BLOB} photos" in printed
    assert "adjusted Rand index vs the true categories: 1.0000" in printed
    assert str(out / "clusters.parquet") in printed
    by_id = dict(zip(clusters["image_id"].to_pylist(), clusters["cluster_id"].to_pylist()))
    found = np.array([by_id[i] for i in range(1, K * PER_BLOB + 1)])
    for blob in range(K):  # each blob is exactly one cluster
        assert len(set(found[blobs["labels"] == blob])) == 1
    assert len(set(found)) == K
    report = (out / "report.md").read_text()
    assert "## Against the true categories" in report
    assert "| 0 |" in report and f"| {PER_BLOB} |" in report and "100%" in report


def test_every_ok_row_is_clustered_exactly_once(blobs, clustered):
    clusters = clustered[2]
    assert clusters.schema.equals(CLUSTERS_SCHEMA)
    ids = clusters["image_id"].to_pylist()
    assert sorted(ids) == ok_rows(blobs["table"])["image_id"].to_pylist()
    assert set(clusters["uri"].to_pylist()) == set(blobs["uris"])


def test_distances_are_euclidean_to_the_nearest_centroid(blobs, clustered):
    _, _, clusters, summary = clustered
    ok = ok_rows(blobs["table"])
    x = np.stack(ok["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = np.stack(summary["centroid"].to_numpy(zero_copy_only=False)).astype(np.float64)
    position = {i: n for n, i in enumerate(ok["image_id"].to_pylist())}
    rows = [position[i] for i in clusters["image_id"].to_pylist()]
    all_distances = np.linalg.norm(x[rows, None, :] - centroids[None], axis=2)
    assert np.array_equal(clusters["cluster_id"].to_numpy(), all_distances.argmin(axis=1))
    assert np.allclose(clusters["distance"].to_numpy(), all_distances.min(axis=1), atol=1e-5)


def test_summary_counts_sizes_scores_and_classes(blobs, clustered):
    _, _, clusters, summary = clustered
    assert summary.schema.equals(CLUSTER_SUMMARY_SCHEMA)
    ok = ok_rows(blobs["table"])
    mean = dict(zip(ok["image_id"].to_pylist(), ok["mean"].to_numpy()))
    for row in summary.to_pylist():
        ids = clusters.filter(pc.equal(clusters["cluster_id"], row["cluster_id"]))["image_id"].to_pylist()
        means = np.array([mean[i] for i in ids], np.float64)
        assert row["size"] == len(ids) == PER_BLOB
        assert row["mean_score"] == pytest.approx(means.mean())
        # [1,2), ..., [9,10), then [10, 11): numpy's last bin is closed, and no mean exceeds 10.
        assert row["score_hist"] == np.histogram(means, bins=np.arange(1, NUM_BINS + 2))[0].tolist()
        if 1 in ids:  # the photo whose predicted mean is exactly 10
            assert row["score_hist"][-1] == 1
        first = blobs["table"]["top5_names"][ids[0] - 1].as_py()[0]  # every photo of a blob
        assert row["top_classes"] == [first] and row["top_class_shares"] == [1.0]
        assert len(row["centroid"]) == DIM


def test_contact_sheets_skip_an_undecodable_photo(blobs, clustered):
    out, printed, _, _ = clustered
    sheets = sorted((out / "sheets").glob("cluster_*.png"))
    assert [p.name for p in sheets] == [f"cluster_{c}.png" for c in range(K)]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in sheets)
    assert "1 photo(s) left out" in printed
    assert blobs["corrupt"] in (out / "report.md").read_text()


def test_lloyd_matches_scikit_learn_from_the_same_start(tmp_path, ray_local):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 5, 300)
    x = (rng.normal(size=(5, 8)) * 1.5)[labels] + rng.normal(size=(300, 8))  # overlapping blobs
    path = tmp_path / "scores.parquet"
    pq.write_table(scores_table(x, labels % 4, [f"p{i}.jpg" for i in range(300)], 0, rng), path)
    spec = FeatureSpec(normalize=False)
    config = KMeansConfig(k=5, max_iter=300, tol=0.0, seed=1)
    prepared = read_prepared(scores_files(str(path)), spec, config.seed, batch_size=64)
    counts = census(prepared, spec, batch_size=64)
    sample = draw_sample(prepared, spec, counts.dim, 100, counts.usable, batch_size=64)
    init = kmeans_plus_plus(sample, config.k, np.random.default_rng(config.seed))
    result = lloyd(prepared, init, spec, config, batch_size=64)
    x16 = x.astype(np.float16).astype(np.float64)  # what the scores table stores
    reference = KMeans(config.k, init=init, n_init=1, max_iter=300, tol=0.0).fit(x16)
    assert result.converged
    assert nearest(x16, result.centroids)[1].sum() == pytest.approx(reference.inertia_, rel=1e-9)
    assert np.allclose(np.sort(result.centroids, axis=0), np.sort(reference.cluster_centers_, axis=0))


def test_the_sample_does_not_depend_on_batching(blobs, ray_local):
    spec = FeatureSpec()
    files = scores_files(str(blobs["scores"]))
    samples = []
    for batch_size in (7, 64):
        prepared = read_prepared(files, spec, seed=5, batch_size=batch_size)
        samples.append(draw_sample(prepared, spec, DIM, 50, K * PER_BLOB, batch_size))
    assert samples[0].shape == (50, DIM) and np.array_equal(*samples)


def test_an_empty_cluster_restarts_at_the_farthest_point():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 1.0]])
    keys = np.arange(4, dtype=np.uint64)
    centroids = np.array([[0.0, 0.0], [100.0, 100.0]])  # the second is nobody's nearest
    total = partial_stats(x[:2], keys[:2], centroids).merge(partial_stats(x[2:], keys[2:], centroids))
    assert total.counts.tolist() == [4, 0] and total.inertia == pytest.approx(0.01 + 25 + 1)
    new, empty = update_centroids(centroids, total)
    assert empty.tolist() == [1]
    assert np.allclose(new, [x.mean(axis=0), [5.0, 0.0]])


def test_semantic_features_over_s3(blobs, s3_bucket, ray_local):
    for part in scores_files(str(blobs["scores"])):
        storage.write_bytes(f"{s3_bucket}/scored/scores/{Path(part).name}", Path(part).read_bytes())
    storage.write_bytes(f"{s3_bucket}/truth.parquet", blobs["truth"].read_bytes())
    out = f"{s3_bucket}/clusters"
    printed = run_job(["--scores", f"{s3_bucket}/scored", "--features", "semantic", "--k", str(K),
                       "--out", out, "--truth", f"{s3_bucket}/truth.parquet", "--sheet-size", "2"])
    assert "semantic features" in printed
    assert "adjusted Rand index vs the true categories: 1.0000" in printed
    summary = storage.read_table(f"{out}/cluster_summary.parquet")
    assert [len(c) for c in summary["centroid"].to_pylist()] == [1000] * K
    assert storage.read_table(f"{out}/clusters.parquet").num_rows == K * PER_BLOB
    assert storage.exists(f"{out}/report.md") and storage.exists(f"{out}/sheets/cluster_0.png")


def fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cluster.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_missing_embeddings_say_how_to_fix_it(tmp_path, ray_local, capsys):
    labels = np.repeat(np.arange(2), 4)
    path = tmp_path / "scores.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(scores_table(None, labels, [f"p{i}.jpg" for i in range(8)], 1, rng), path)
    err = fails(["--scores", str(path), "--k", "2", "--out", str(tmp_path / "out")], capsys)
    assert str(path) in err and "no embedding" in err and "--features semantic" in err


def test_k_larger_than_the_ok_rows_is_an_error(blobs, tmp_path, ray_local, capsys):
    err = fails(["--scores", str(blobs["scores"]), "--k", "500", "--out", str(tmp_path)], capsys)
    assert f"--k 500 is more than the {K * PER_BLOB} photos" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--k", "0"], "--k must be at least 1"),
    (["--k", "20", "--init-sample", "10"], "--init-sample (10) must be at least --k (20)"),
    (["--sheet-size", "-1"], "--sheet-size must be 0"),
])
def test_bad_options_are_named(argv, message, tmp_path, capsys):
    assert message in fails(["--scores", str(tmp_path), "--out", str(tmp_path), *argv], capsys)


def test_inputs_that_are_not_scores_are_named(tmp_path, blobs):
    with pytest.raises(storage.StorageError, match="empty: no Parquet files"):
        scores_files(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"truth\.parquet: lacks column\(s\) \['uri'"):
        check_columns(scores_files(str(blobs["truth"])), FeatureSpec())
    with pytest.raises(ValueError, match=r"part-00000\.parquet: lacks column\(s\) \['category'\]; --truth"):
        read_truth(str(blobs["scores"] / "scores" / "part-00000.parquet"))


def test_embeddings_of_different_lengths_name_both_files():
    counts = Census(rows=4, lengths={512: "s3://b/part-0.parquet", 1280: "s3://b/part-1.parquet"})
    with pytest.raises(ValueError, match="512 in s3://b/part-0.parquet, 1280 in s3://b/part-1"):
        counts.check(FeatureSpec(), 2, "s3://b")


def test_restarts_on_the_sample_escape_a_poor_local_minimum():
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [0, 3], [3, 0], [3, 3], [10, 10], [10, 13], [13, 10], [13, 13.0]])
    x = centres[rng.integers(0, 8, 800)] + rng.normal(scale=0.4, size=(800, 2))
    best = KMeans(8, n_init=50, random_state=0).fit(x).inertia_  # the global minimum, in effect
    single = [refine_on_sample(x, kmeans_plus_plus(x, 8, np.random.default_rng(s)),
                               KMeansConfig(k=8))[1] for s in range(20)]
    assert max(single) > 1.2 * best  # one seeding does get stuck on these blobs
    centroids = best_seeding(x, KMeansConfig(k=8, restarts=10, seed=0))
    assert nearest(x, centroids)[1].sum() == pytest.approx(best, rel=1e-6)
    assert np.array_equal(centroids, best_seeding(x, KMeansConfig(k=8, restarts=10, seed=0)))
    with pytest.raises(ValueError, match="--restarts"):
        KMeansConfig(k=8, restarts=0)
