"""Bulk scoring (jobs.score): one row per object, statuses, resume, EXIF, S3, schema."""
from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from apm.core import storage
from apm.core.rows import NO_ERROR
from apm.core.schemas import SCORES_SCHEMA
from apm.data.listing import ListingConfig, build_listing
from apm.models import ModelSpec
from apm.stages.scoring import ScoreConfig, ScorePredictor, ShardWriter, run_score
from jobs import score as score_job

MODEL = "random:resnet18"
SIZE = 64  # small crops keep the CPU tests quick


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def good_objects() -> dict[str, bytes]:
    """Real photos in every supported format and mode (name -> bytes)."""
    astronaut = Image.fromarray(skdata.astronaut())
    chelsea = Image.fromarray(skdata.chelsea())
    coffee = Image.fromarray(skdata.coffee())
    gray16 = Image.fromarray(skdata.camera().astype(np.uint16) * 257)  # mode I;16
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(128)
    frames = [coffee.convert("P"), chelsea.resize(coffee.size).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return {
        "photos/2019/astronaut.jpg": _encode(astronaut, "JPEG", quality=90),
        "photos/2019/chelsea.png": _encode(chelsea, "PNG"),
        "photos/2020/coffee.webp": _encode(coffee, "WEBP", quality=90),
        "photos/2020/camera16.tif": _encode(gray16, "TIFF"),
        "photos/2020/coffee.bmp": _encode(coffee, "BMP"),
        "photos/2021/animated.gif": gif.getvalue(),
        "photos/2021/cmyk.jpg": _encode(astronaut.convert("CMYK"), "JPEG"),
        "photos/2021/alpha.png": _encode(rgba, "PNG"),
        "photos/2021/gray.JPG": _encode(astronaut.convert("L"), "JPEG"),
        "photos/png-named.jpg": _encode(chelsea, "PNG"),  # content decides, not the suffix
    }


def bad_objects() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a word the error must contain)."""
    jpeg = _encode(Image.fromarray(skdata.astronaut()), "JPEG", quality=90)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "not a photo")
    bomb = _encode(Image.new("1", (12_000, 10_000)), "PNG")  # 120 MP, a few kB
    return {
        "photos/2019/empty.jpg": (b"", "empty"),
        "photos/2019/truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated"),
        "photos/2020/notes.jpg": (b"these are not pixels\n" * 20, "recognised"),
        "photos/2020/archive.png": (archive.getvalue(), "recognised"),
        "photos/2021/bomb.png": (bomb, "--max-pixels"),
    }


def _upload(root: str, objects: dict[str, bytes]) -> None:
    for name, content in objects.items():
        storage.write_bytes(storage.join(root, name), content)


def _scores(out: str) -> pd.DataFrame:
    return storage.read_table(storage.join(out, "scores")).to_pandas()


def test_predictor_scores_as_the_model_does():
    """The actors' optimised model (batch norm folded) gives the model's own outputs."""
    predictor = ScorePredictor(MODEL, SIZE, embedding=True, device="cpu", storage_env={})
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    crops = np.stack([predictor.transform.crop_bytes(_encode(Image.fromarray(p), "PNG"))
                      for p in photos] + [np.zeros((SIZE, SIZE, 3), np.uint8)])
    errors = np.array([NO_ERROR] * 3 + ["not found"], dtype=object)
    kinds = np.array([NO_ERROR] * 3 + ["permanent"], dtype=object)
    out = predictor({"row": np.arange(4), "error": errors, "error_kind": kinds, "crop": crops,
                     "width": np.zeros(4, np.int32), "height": np.zeros(4, np.int32)})
    model = ModelSpec.resolve(MODEL).load()
    with torch.no_grad():
        x = predictor.transform.normalize(torch.from_numpy(crops[:3]))
        features = model.backbone(x)
        expected = model.heads(features)
    np.testing.assert_allclose(out["dist"][:3], expected.dist.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["mean"][:3], expected.mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["embedding"][:3].astype(np.float32), features.numpy(),
                               rtol=1e-2, atol=1e-3)  # stored as float16
    assert (out["top5_ids"][:3] == expected.semantic_logits.topk(5).indices.numpy()).all()
    assert np.isnan(out["dist"][3]).all() and np.isnan(out["mean"][3])


def test_s3_end_to_end_one_row_per_object(ray_local, s3_bucket):
    good = good_objects()
    bad = bad_objects()
    _upload(s3_bucket, {**good, **{k: v for k, (v, _) in bad.items()}})
    storage.write_bytes(f"{s3_bucket}/photos/README.txt", b"not listed: not an image suffix")
    out = f"{s3_bucket}/scores-run"
    code = score_job.main(["--input", f"{s3_bucket}/photos/", "--output", out, "--model", MODEL,
                           "--image-size", str(SIZE), "--rows-per-file", "4",
                           "--batch-size", "4"])
    assert code == 0
    files = sorted(info.uri for info in storage.list_files(f"{out}/scores", (".parquet",)))
    assert len(files) == 4  # 15 rows, 4 per file
    # pyarrow (dataset over S3) and pandas read the table; its schema is the documented one.
    fs, path = storage.arrow_filesystem(f"{out}/scores")
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table()
    assert table.schema.equals(SCORES_SCHEMA)
    frame = table.to_pandas()
    expected = {f"{s3_bucket}/{name}" for name in [*good, *bad]}
    assert sorted(frame["uri"]) == sorted(expected)  # exactly one row per object
    by_uri = frame.set_index("uri")
    for name in good:
        row = by_uri.loc[f"{s3_bucket}/{name}"]
        assert row["status"] == "ok", (name, row["error"])
        assert 1 <= row["mean"] <= 10 and row["is_high"] == (row["mean"] >= 5)
        assert abs(sum(row["dist"]) - 1) < 1e-5 and row["std"] > 0
        assert len(row["embedding"]) == 512 and len(row["top5_names"]) == 5
        assert row["width"] > 0 and row["height"] > 0
    for name, (content, word) in bad.items():
        row = by_uri.loc[f"{s3_bucket}/{name}"]
        assert row["status"] == "error" and word in row["error"].lower(), (name, row["error"])
        assert row["size"] == len(content)
        assert pd.isna(row["mean"]) and row["dist"] is None and row["embedding"] is None
    assert by_uri.loc[f"{s3_bucket}/photos/2019/astronaut.jpg", "width"] == 512
    assert frame["model_id"].nunique() == 1 and frame["model_id"].iloc[0] == MODEL


def test_listing_in_parallel_tasks_matches_a_plain_listing(ray_local, s3_bucket):
    names = [f"lib/{user}/{day}/{i}.jpg" for user in ("ann", "bob", "cy") for day in ("d1", "d2")
             for i in range(3)] + ["lib/top.jpg", "lib/ann/notes.txt"]
    _upload(s3_bucket, {name: b"x" for name in names})
    listing = build_listing(ListingConfig(f"{s3_bucket}/lib", f"{s3_bucket}/listing",
                                          rows_per_part=2, tasks=4, page_keys=3))
    # The driver writes the first page (3 keys) and cuts the rest of the tree into 4 key
    # ranges; each task streams its range into parts of at most 2 rows.
    stems = [p.rsplit("/", 1)[1].split("-")[1] for p in listing.parts]
    assert stems[0] == "00000" and sorted(set(stems)) == ["00000", "00001", "00002", "00003",
                                                          "00004"]
    assert max(listing.counts) <= 2 and sum(listing.counts) == listing.rows == 19
    uris = listing.read(["uri"]).column("uri").to_pylist()
    assert uris == sorted(f"{s3_bucket}/{n}" for n in names if n.endswith(".jpg"))
    assert listing.skipped == {".txt": 1}
    again = build_listing(ListingConfig(f"{s3_bucket}/lib", f"{s3_bucket}/listing"))
    assert again.reused and again.parts == listing.parts and again.rows == listing.rows
    assert again.digest == listing.digest


def test_a_flat_prefix_is_listed_as_key_ranges(ray_local, s3_bucket):
    """Every key at one level (an upload service's layout): the key space is cut into ranges
    by probing, whatever the names look like; one row per object, in key order."""
    rng = np.random.default_rng(0)
    names = ([f"flat/{i:06d}.jpg" for i in range(0, 300, 7)]
             + [f"flat/{rng.integers(2**62):016x}.png" for _ in range(40)]
             + [f"flat/фото-{i}.jpg" for i in range(20)] + ["flat/😀.jpg", "flat/a b.jpg"])
    _upload(s3_bucket, {name: b"x" for name in names})
    listing = build_listing(ListingConfig(f"{s3_bucket}/flat", f"{s3_bucket}/flat-listing",
                                          tasks=6, page_keys=10, rows_per_part=1000))
    assert len(listing.parts) == 7  # the driver's first page, then 6 ranges
    assert listing.read(["uri"]).column("uri").to_pylist() == sorted(f"{s3_bucket}/{n}"
                                                                     for n in names)


def test_a_wide_local_tree_is_grouped_into_few_tasks(ray_local, tmp_path):
    """A folder per user: the folders are grouped into at most ``tasks`` listing tasks (not one
    task and one part per folder); the listing reads back as a dataset, block by block."""
    root = tmp_path / "users"
    expected = []
    for user in range(40):
        for i in range(user % 3 + 1):
            path = root / f"u{user:03d}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * (user + 1))
            expected.append(str(path))
    (root / "top.jpg").write_bytes(b"x")
    listing = build_listing(ListingConfig(str(root), str(tmp_path / "listing"), tasks=3))
    assert len(listing.parts) == 3 and listing.rows == len(expected) + 1
    uris = listing.read(["uri"]).column("uri").to_pylist()
    assert sorted(uris) == sorted([*expected, str(root / "top.jpg")])
    rows = np.array([0, 1, 2, 5, 6, 30, listing.rows - 1])
    table = pa.concat_tables(ray_local.get(listing.dataset(rows, 2).to_arrow_refs()))
    table = table.sort_by("row")
    assert table.column("row").to_pylist() == rows.tolist()
    assert table.column("uri").to_pylist() == [uris[r] for r in rows]
    assert table.column("size").to_pylist() == [os.path.getsize(uris[r]) for r in rows]


def _config(src, out, **kw) -> ScoreConfig:
    settings = {"image_size": SIZE, "batch_size": 2, "rows_per_file": 3, "concurrency": 1, **kw}
    return ScoreConfig(input=str(src), out=str(out), model=MODEL, **settings)


def test_interrupted_run_resumes_with_exactly_one_row_each(ray_local, tmp_path, monkeypatch):
    src = tmp_path / "photos"
    photos = {f"{i:02d}.jpg": _encode(Image.fromarray(skdata.chelsea()).rotate(i * 7), "JPEG")
              for i in range(10)}
    for name, content in photos.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    (src / "broken.jpg").write_bytes(b"")
    out = tmp_path / "out"

    real_write, written = ShardWriter._write, []

    def crash_after_two(self, shard):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")  # what a Ctrl-C or a dying driver looks like
        real_write(self, shard)
        written.append(shard)

    monkeypatch.setattr(ShardWriter, "_write", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_score(_config(src, out))
    monkeypatch.setattr(ShardWriter, "_write", real_write)
    kept = {s: pq.read_table(out / "scores" / f"part-{s:06d}.parquet") for s in written}
    # A torn file (a killed writer) must be scored again, not trusted.
    torn = out / "scores" / "part-000003.parquet"
    torn.write_bytes(b"PAR1 torn")

    summary = run_score(_config(src, out))
    assert summary.files_kept == 2 and summary.rows == 11 - 6
    frame = _scores(str(out))
    assert sorted(frame["uri"]) == sorted(str(p) for p in src.iterdir())
    assert frame["uri"].is_unique and (frame["status"] == "ok").sum() == 10
    for shard, table in kept.items():  # kept files are untouched, not rescored
        assert pq.read_table(out / "scores" / f"part-{shard:06d}.parquet").equals(table)

    # Other settings in the same OUT are refused; --overwrite starts over.
    with pytest.raises(ValueError, match="rows_per_file"):
        run_score(_config(src, out, rows_per_file=5))
    summary = run_score(_config(src, out, rows_per_file=5, overwrite=True))
    assert summary.files_kept == 0 and summary.rows == 11
    assert len(list((out / "scores").iterdir())) == 3


def test_exif_orientation_is_applied(ray_local, tmp_path):
    upright = Image.fromarray(skdata.chelsea())  # 451 x 300, landscape
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the sensor's pixels: portrait
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": undoes ROTATE_90 (which is counter-clockwise)
    src = tmp_path / "photos"
    src.mkdir()
    (src / "upright.jpg").write_bytes(_encode(upright, "JPEG", quality=95))
    (src / "tagged.jpg").write_bytes(_encode(stored, "JPEG", quality=95, exif=exif))
    (src / "untagged.jpg").write_bytes(_encode(stored, "JPEG", quality=95))
    run_score(_config(src, tmp_path / "out"))
    rows = _scores(str(tmp_path / "out")).set_index("uri")
    upright_row, tagged, untagged = (rows.loc[str(src / n)] for n in
                                     ("upright.jpg", "tagged.jpg", "untagged.jpg"))
    assert (tagged["width"], tagged["height"]) == (300, 451)  # as stored

    def cosine(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    # The tagged photo is seen upright: (nearly) the upright photo's features, unlike the
    # same pixels without the tag.
    assert cosine(tagged["embedding"], upright_row["embedding"]) > 0.99
    assert cosine(untagged["embedding"], upright_row["embedding"]) < cosine(
        tagged["embedding"], upright_row["embedding"]) - 0.01


def test_manifest_input_keeps_image_ids_and_known_bad_rows(ray_local, tmp_path):
    import pyarrow as pa

    src = tmp_path / "photos"
    src.mkdir()
    (src / "7.jpg").write_bytes(_encode(Image.fromarray(skdata.coffee()), "JPEG"))
    manifest = pa.table({
        "image_id": [7, 8, 9],
        "uri": [str(src / "7.jpg"), str(src / "8.jpg"), None],
        "image_status": ["ok", None, None],
        "image_error": [None, None, None],
    })
    pq.write_table(manifest, tmp_path / "manifest.parquet")
    run_score(_config(tmp_path / "manifest.parquet", tmp_path / "out", embedding=False))
    frame = _scores(str(tmp_path / "out")).sort_values("image_id")
    assert frame["image_id"].tolist() == [7, 8, 9]
    assert frame["status"].tolist() == ["ok", "error", "error"]
    assert frame["error"].iloc[1] == "not found" and "no uri" in frame["error"].iloc[2]
    assert frame["embedding"].isna().all()


def test_cli_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    for model, words in [(str(tmp_path / "bad.pt"), "bad.pt"), ("random:vgg99", "vgg99")]:
        with pytest.raises(SystemExit) as exit_info:
            score_job.main(["--input", str(tmp_path / "photos"), "--output", str(tmp_path / "o"),
                            "--model", model])
        assert exit_info.value.code == 2
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score_job.main(["--help"])
    assert "Rerunning with the same --output resumes" in capsys.readouterr().out


def test_scores_of_synthetic_ava_cluster_by_category(ray_local, tmp_path):
    """Score a synthetic AVA with ImageNet features (the teacher's weights), then cluster.

    Measured on such sets: ARI 0.29-0.41 with embeddings, depending on the k-means++ start (seeds
    1-5, two sample draws), and 0.07 with the top-5 semantic vector (ImageNet classes describe
    procedural renders poorly). The test keeps a margin below the lowest.
    """
    from apm.data.synthetic.dataset import SyntheticConfig, generate
    from apm.models import APMConfig, create_apm, save_checkpoint
    from jobs import cluster as cluster_job

    generate(SyntheticConfig(n=300, size=160, seed=0), str(tmp_path / "syn"))
    model = tmp_path / "imagenet.pt"
    save_checkpoint(create_apm(APMConfig("efficientnet_lite0"), "teacher"), str(model))
    run_score(ScoreConfig(input=str(tmp_path / "syn" / "images"), out=str(tmp_path / "scores"),
                          model=str(model), image_size=128))
    cluster_job.main(["--scores", str(tmp_path / "scores"), "--k", "10", "--out",
                      str(tmp_path / "clusters"), "--truth", str(tmp_path / "syn" / "truth.parquet"),
                      "--sheet-size", "4", "--thumb-size", "16"])
    report = (tmp_path / "clusters" / "report.md").read_text()
    ari = float(re.search(r"adjusted Rand index vs the true categories: ([\d.]+)", report).group(1))
    assert ari >= 0.2
    clusters = pq.read_table(tmp_path / "clusters" / "clusters.parquet")
    assert clusters.num_rows == 300 and len(set(clusters.column("uri").to_pylist())) == 300
