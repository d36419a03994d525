"""Writing a synthetic AVA in the official package layout, rendered in parallel with Ray Data.

Layout written under ``out``::

    AVA.txt, tags.txt, challenges.txt
    aesthetics_image_lists/generic_ls_train.jpgl, generic_test.jpgl, {category}_{split}.jpgl
    images/{image_id}.jpg        the photos
    masks/{image_id}.png         subject masks (255 = subject)
    truth.parquet                SYNTHETIC_TRUTH_SCHEMA: what generated every image

Labels (categories, attributes, latent, votes) are drawn on the driver from one generator
seeded with ``seed``; each image is rendered from its own generator seeded with
``(seed, image_id)``, so the output does not depend on how Ray splits the work.
"""
from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from apm.core import storage
from apm.core.schemas import NUM_BINS, SYNTHETIC_TRUTH_SCHEMA
from apm.data.synthetic.aesthetics import SyntheticLabels, attributes_at, sample_labels, thirds_distance
from apm.data.synthetic.attributes import ATTRIBUTE_NAMES, CATEGORIES
from apm.data.synthetic.render import render_scene

#: AVA tag ids (from the official tags.txt) that describe each category: (tag1, tag2).
CATEGORY_TAGS: dict[str, tuple[int, int]] = {
    "barn": (27, 20), "beach": (35, 23), "bird": (57, 19), "cat": (19, 5), "flower": (38, 22),
    "lake": (14, 28), "meadow": (15, 14), "mountain": (14, 15), "portrait": (17, 16),
    "sunset": (7, 14),
}
TAG_NAMES: dict[int, str] = {
    5: "Humorous", 7: "Sky", 14: "Landscape", 15: "Nature", 16: "Candid", 17: "Portraiture",
    19: "Animals", 20: "Architecture", 22: "Macro", 23: "Travel", 27: "Rural", 28: "Water",
    35: "Seascapes", 38: "Floral", 57: "Birds",
}
# Categories often shot in portrait orientation.
VERTICAL_SHARE = {"bird": 0.25, "cat": 0.25, "flower": 0.3, "portrait": 0.5}
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SyntheticConfig:
    n: int
    size: int = 256  # long side in pixels; images are 4:3 (or 3:4)
    seed: int = 0
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be at least 1, got {self.n}")
        if self.size < 32:
            raise ValueError(f"--size must be at least 32 pixels, got {self.size}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class SyntheticSummary:
    out: str
    n: int
    seconds: float
    categories: dict[str, int]
    splits: dict[str, int]
    mean_score: float

    def lines(self) -> list[str]:
        return [
            f"synthetic AVA: {self.out}",
            f"images: {self.n} in {self.seconds:.1f} s ({self.n / self.seconds:.1f} images/s)",
            "categories: " + ", ".join(f"{k}={v}" for k, v in sorted(self.categories.items())),
            "splits: " + ", ".join(f"{k}={v}" for k, v in sorted(self.splits.items())),
            f"mean of per-image mean scores: {self.mean_score:.3f}",
        ]


def _label_table(labels: SyntheticLabels, config: SyntheticConfig, out: str) -> pa.Table:
    """Everything known before rendering, one row per image (input of the render step)."""
    n = config.n
    rng = np.random.default_rng([config.seed, 1])  # independent of the label stream
    ids = np.arange(1, n + 1, dtype=np.int64)
    categories = [CATEGORIES[c] for c in labels.category_id]
    vertical = rng.random(n) < np.array([VERTICAL_SHARE.get(c, 0.0) for c in categories])
    short = int(round(config.size * 3 / 4))
    split = np.where(rng.random(n) < config.test_fraction, "test", "train")
    columns = {
        "image_id": ids,
        "category": categories,
        "category_id": labels.category_id.astype(np.int32),
        **{name: labels.attributes[name].astype(np.float32) for name in ATTRIBUTE_NAMES},
        "thirds_distance": thirds_distance(labels.attributes["subject_x"],
                                           labels.attributes["subject_y"]).astype(np.float32),
        "latent": labels.latent.astype(np.float32),
        "true_pmf": list(labels.pmf.astype(np.float32)),
        "true_mean": labels.true_mean.astype(np.float32),
        "n_votes": labels.n_votes,
        "split": split,
        "image_uri": [storage.join(out, "images", f"{i}.jpg") for i in ids],
        "mask_uri": [storage.join(out, "masks", f"{i}.png") for i in ids],
        "width": np.where(vertical, short, config.size).astype(np.int32),
        "height": np.where(vertical, config.size, short).astype(np.int32),
    }
    return pa.table(columns)


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


RENDER_INPUTS = ("image_id", "category", *ATTRIBUTE_NAMES, "width", "height", "image_uri",
                 "mask_uri")


def render_batch(batch: dict[str, np.ndarray], seed: int, storage_env: dict[str, str]) -> pa.Table:
    """Render, encode and store a batch of images; returns each subject's bounding box."""
    storage.apply_env(storage_env)
    boxes = []
    for i in range(len(batch["image_id"])):
        attrs = attributes_at(batch, i)
        rng = np.random.default_rng([seed, int(batch["image_id"][i])])
        image, mask = render_scene(str(batch["category"][i]), attrs, int(batch["width"][i]),
                                   int(batch["height"][i]), rng)
        storage.write_bytes(str(batch["image_uri"][i]),
                            _encode(image, "JPEG", quality=JPEG_QUALITY))
        storage.write_bytes(str(batch["mask_uri"][i]),
                            _encode(mask.astype(np.uint8) * 255, "PNG"))
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    return pa.table({
        "image_id": pa.array(batch["image_id"], type=pa.int64()),
        "subject_bbox": pa.array(boxes, type=SYNTHETIC_TRUTH_SCHEMA.field("subject_bbox").type),
    })


def _ava_txt(truth: pa.Table, votes: np.ndarray) -> str:
    categories = truth.column("category").to_pylist()
    lines = []
    for row, (image_id, category) in enumerate(zip(truth.column("image_id").to_pylist(),
                                                   categories)):
        tag1, tag2 = CATEGORY_TAGS[category]
        challenge = CATEGORIES.index(category) + 1
        counts = " ".join(str(v) for v in votes[row])
        lines.append(f"{row + 1} {image_id} {counts} {tag1} {tag2} {challenge}")
    return "\n".join(lines) + "\n"


def _write_package(out: str, truth: pa.Table, votes: np.ndarray) -> None:
    storage.write_text(storage.join(out, "AVA.txt"), _ava_txt(truth, votes))
    storage.write_text(storage.join(out, "tags.txt"),
                       "".join(f"{k} {v}\n" for k, v in sorted(TAG_NAMES.items())))
    storage.write_text(storage.join(out, "challenges.txt"),
                       "".join(f"{i + 1} Synthetic_{c.capitalize()}\n"
                               for i, c in enumerate(CATEGORIES)))
    ids = np.asarray(truth.column("image_id"))
    split = np.asarray(truth.column("split"))
    category = np.asarray(truth.column("category"))
    lists = {"generic_ls_train": split == "train", "generic_test": split == "test"}
    for c in CATEGORIES:
        for s in ("train", "test"):
            lists[f"{c}_{s}"] = (category == c) & (split == s)
    for name, keep in lists.items():
        storage.write_text(storage.join(out, "aesthetics_image_lists", f"{name}.jpgl"),
                           "".join(f"{i}\n" for i in ids[keep]))


def generate(config: SyntheticConfig, out: str) -> SyntheticSummary:
    """Render and write a synthetic AVA of ``config.n`` images to ``out`` (local or s3://)."""
    import ray

    start = time.perf_counter()
    out = storage.normalize(out)
    labels = sample_labels(np.random.default_rng(config.seed), config.n)
    table = _label_table(labels, config, out)
    storage.makedirs(storage.join(out, "images"))
    storage.makedirs(storage.join(out, "masks"))
    # One block per batch, and small batches, keep every core busy even for a few hundred images.
    batch_size = max(1, min(64, config.n // 8))
    inputs = table.select(RENDER_INPUTS)
    blocks = [inputs.slice(i, batch_size) for i in range(0, config.n, batch_size)]
    boxes = (ray.data.from_arrow(blocks)
             .map_batches(render_batch, batch_size=batch_size, batch_format="numpy",
                          fn_kwargs={"seed": config.seed, "storage_env": storage.ray_env_vars()})
             .to_arrow_refs())
    boxes = pa.concat_tables(ray.get(boxes)).sort_by("image_id")  # ids are 1..n, as in table
    table = table.append_column("subject_bbox", boxes.column("subject_bbox"))
    truth = pa.table([table.column(f.name).cast(f.type) for f in SYNTHETIC_TRUTH_SCHEMA],
                     schema=SYNTHETIC_TRUTH_SCHEMA)
    storage.write_table(truth, storage.join(out, "truth.parquet"))
    _write_package(out, truth, labels.votes)
    means = labels.votes @ np.arange(1, NUM_BINS + 1) / labels.votes.sum(axis=1)
    return SyntheticSummary(
        out=out, n=config.n, seconds=time.perf_counter() - start,
        categories=dict(Counter(truth.column("category").to_pylist())),
        splits=dict(Counter(truth.column("split").to_pylist())),
        mean_score=float(means.mean()),
    )
