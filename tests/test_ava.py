"""The AVA package reader and the prepare_ava job: real labels, bad rows, images, S3."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from apm.core import storage
from apm.core.schemas import MANIFEST_SCHEMA
from apm.data.ava import AvaFormatError, read_ava_package
from jobs import prepare_ava

GOOD_ROWS = [
    "1 101 0 1 2 10 20 30 10 5 2 0 14 15 3",
    "2 102 5 9 12 30 40 20 5 1 0 0 17 0 0",
    "3 103 1 1 1 5 10 30 50 40 20 10 -1 -1 -1",
]


def write_package(root, ava_rows, images: dict[int, bytes] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "AVA.txt").write_text("\n".join(ava_rows) + "\n")
    (root / "tags.txt").write_text("14 Landscape\n15 Nature\n17 Portraiture\n")
    (root / "challenges.txt").write_text("3 Sunsets\n")
    lists = root / "aesthetics_image_lists"
    lists.mkdir(exist_ok=True)
    (lists / "generic_ls_train.jpgl").write_text("101\n103\n")
    (lists / "generic_test.jpgl").write_text("102\n")
    (lists / "landscape_train.jpgl").write_text("101\n")
    styles = root / "style_image_lists"
    styles.mkdir(exist_ok=True)
    (styles / "styles.txt").write_text("1 Complementary_Colors\n2 Duotones\n3 HDR\n")
    (styles / "train.jpgl").write_text("101\n")
    (styles / "train.lab").write_text("3\n")
    (styles / "test.jpgl").write_text("102\n")
    (styles / "test.multilab").write_text("1 1 0\n")
    if images:
        (root / "images").mkdir(exist_ok=True)
        for image_id, data in images.items():
            (root / "images" / f"{image_id}.jpg").write_bytes(data)
    return root


def jpeg_bytes(width=64, height=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_reads_every_column(tmp_path):
    table, report = read_ava_package(str(write_package(tmp_path / "ava", GOOD_ROWS)))
    assert table.schema == MANIFEST_SCHEMA
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert report.bad_rows == [] and len(rows) == 3
    r = rows[101]
    votes = np.array([0, 1, 2, 10, 20, 30, 10, 5, 2, 0])
    assert r["votes"] == votes.tolist() and r["n_votes"] == 80
    scores = np.arange(1, 11)
    assert r["mean"] == pytest.approx((votes * scores).sum() / 80)
    assert r["std"] == pytest.approx(np.sqrt(np.cov(np.repeat(scores, votes), bias=True)))
    assert (r["tag1_id"], r["tag1_name"], r["tag2_id"], r["tag2_name"]) == (14, "Landscape", 15,
                                                                            "Nature")
    assert (r["challenge_id"], r["challenge_name"]) == (3, "Sunsets")
    assert r["split"] == "train" and r["image_lists"] == ["generic_ls_train", "landscape_train"]
    assert r["style_ids"] == [3] and r["style_names"] == ["HDR"] and r["style_split"] == "train"
    assert r["semantics_known"] and r["uri"] is None and r["source_line"] == 1
    # 0 means "no tag": null id, semantics still known.
    assert rows[102]["tag2_id"] is None and rows[102]["challenge_id"] is None
    assert rows[102]["semantics_known"] and rows[102]["split"] == "test"
    assert rows[102]["style_names"] == ["Complementary_Colors", "Duotones"]
    # -1 means unknown: nulls, and semantics_known is False.
    assert rows[103]["tag1_id"] is None and not rows[103]["semantics_known"]
    assert rows[103]["style_ids"] is None


@pytest.mark.parametrize("bad_line, message", [
    ("4 104 1 2 3 4 5 6 7 8 9 14 0 0", "line 4: expected 15 columns, got 14"),
    ("4 104 1 2 3 x 5 6 7 8 9 10 14 0 0", "line 4: non-integer value"),
    ("4 104 1 2 3 -4 5 6 7 8 9 10 14 0 0", "line 4: negative vote count"),
    ("4 104 0 0 0 0 0 0 0 0 0 0 14 0 0", "line 4: image 104 has zero votes"),
    ("4 101 1 2 3 4 5 6 7 8 9 10 14 0 0", "line 4: image 101 already listed on line 1"),
])
def test_bad_rows_name_file_and_line(tmp_path, bad_line, message):
    ava = write_package(tmp_path / "ava", GOOD_ROWS + [bad_line])
    with pytest.raises(AvaFormatError, match=f"AVA.txt {message}"):
        read_ava_package(str(ava))
    table, report = read_ava_package(str(ava), skip_bad_rows=True)
    assert table.num_rows == 3 and len(report.bad_rows) == 1 and message in report.bad_rows[0]


def test_prepare_job_skips_and_accounts_for_bad_rows(tmp_path, capsys):
    ava = write_package(tmp_path / "ava", GOOD_ROWS + ["4 104 1 2", "5 105 0 0 0 0 0 0 0 0 0 0 0 0 0"])
    with pytest.raises(SystemExit) as exit_info:
        prepare_ava.main(["--ava-dir", str(ava), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "AVA.txt line 4: expected 15 columns" in capsys.readouterr().err
    assert prepare_ava.main(["--ava-dir", str(ava), "--out", str(tmp_path / "out"),
                             "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "input rows: 5 = 3 written + 2 bad rows skipped" in out
    assert pq.read_table(tmp_path / "out" / "manifest.parquet").num_rows == 3


def test_images_missing_and_unreadable_are_marked(tmp_path, ray_local, capsys):
    good = jpeg_bytes()
    ava = write_package(tmp_path / "ava", GOOD_ROWS, images={101: good, 102: good[: len(good) // 2]})
    assert prepare_ava.main(["--ava-dir", str(ava), "--images", str(ava / "images"),
                             "--out", str(tmp_path / "out")]) == 0
    rows = {r["image_id"]: r for r in
            pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()}
    assert rows[101]["image_status"] == "ok" and (rows[101]["width"], rows[101]["height"]) == (64, 48)
    assert rows[101]["uri"] == str(ava / "images" / "101.jpg")
    assert rows[102]["image_status"] == "unreadable" and "truncated" in rows[102]["image_error"].lower()
    assert rows[103]["image_status"] == "missing" and rows[103]["width"] is None
    assert "images: missing=1, ok=1, unreadable=1" in capsys.readouterr().out


def test_prepare_through_s3(tmp_path, s3_bucket, ray_local):
    local = write_package(tmp_path / "ava", GOOD_ROWS, images={101: jpeg_bytes(), 103: b""})
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.write_bytes(f"{s3_bucket}/ava/{path.relative_to(local).as_posix()}",
                            path.read_bytes())
    out = f"{s3_bucket}/prepared"
    assert prepare_ava.main(["--ava-dir", f"{s3_bucket}/ava", "--images",
                             f"{s3_bucket}/ava/images", "--out", out]) == 0
    table = storage.read_table(f"{out}/manifest.parquet")
    assert table.schema == MANIFEST_SCHEMA
    status = dict(zip(table.column("image_id").to_pylist(), table.column("image_status").to_pylist()))
    assert status == {101: "ok", 102: "missing", 103: "unreadable"}
    assert table.column("uri").to_pylist()[0] == f"{s3_bucket}/ava/images/101.jpg"


def test_prepare_names_a_missing_bucket(s3_endpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_ava.main(["--ava-dir", "s3://absent-bucket/ava", "--out", str(tmp_path)])
    assert "s3://absent-bucket/ava/AVA.txt: bucket 'absent-bucket' does not exist" in \
        capsys.readouterr().err


def test_real_ava_labels(real_ava_dir, tmp_path):
    table, report = read_ava_package(str(real_ava_dir))
    assert table.num_rows == 241_842 and report.bad_rows == []
    df = table.to_pandas()
    assert df["image_id"].is_unique
    assert (~df["semantics_known"]).sum() == 32_470  # rows with -1 -1 -1, kept as unknown
    assert df.loc[~df["semantics_known"], ["tag1_id", "tag2_id", "challenge_id"]].isna().all().all()
    assert df["mean"].mean() == pytest.approx(5.383, abs=0.001)
    assert df["mean"].std() == pytest.approx(0.732, abs=0.001)
    assert df["n_votes"].min() == 78 and df["n_votes"].max() == 541
    assert df["n_votes"].mean() == pytest.approx(210.2, abs=0.05)
    assert (df["split"] == "test").sum() == 19_930  # of generic_test's 20,000 ids
    assert df["challenge_name"].notna().sum() > 200_000
    assert set(df["style_split"].dropna()) == {"train", "test"}

