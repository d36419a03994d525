"""The pipeline's settings: one dataclass, a preset's defaults, options that override them."""
from __future__ import annotations

from dataclasses import dataclass

from apm.core import storage
from apm.data.manifest import MANIFEST_FILE
from apm.votes.distributions import DEFAULT_METHOD


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; a preset gives the defaults, options override them."""

    preset: str
    work: str
    ava_dir: str | None = None  # ava: the AVA package (AVA.txt, tags, challenges, lists)
    images: str | None = None  # ava: the photos
    n: int = 2000  # demo: synthetic photos
    size: int = 128  # demo: their long side
    test_fraction: float = 0.25  # demo: share of photos in the test split
    seed: int = 0
    fit_method: str = DEFAULT_METHOD
    backbone: str = "efficientnet_lite0"
    teacher_size: int | None = 128  # the teacher's crop (the photos are 128 px); None: its own 224
    init: str = "teacher"  # the student's start: ImageNet weights (apm.models.list_inits)
    train_size: int = 96
    distill_epochs: int = 1
    train_epochs: int = 3  # fine-tuning
    train_lr: float = 2e-3  # peak of the one-cycle schedule
    # Fine-tuning keeps the semantic head learning the teacher (the paper's joint loss), so
    # the shared features stay semantic: the clusters are made of them.
    semantic_weight: float = 0.2
    train_workers: int = 2
    device: str = "cpu"
    clusters: int = 10
    explain_sample: int = 8
    # L2 radius of the edit in [0, 1] pixel units: 1 at a 96-px crop is an RMS change of 0.6%
    # of the range per pixel (1.5/255), enough to move a trained model, too small to see.
    explain_budget: float = 1.0
    gan_resolution: int = 32
    # The GAN gets what is left of the 8 minutes: in so few steps no width learns the
    # conditions (docs/benchmark_demo.md), so the narrow, cheap one with small batches.
    gan_channels: int = 16
    gan_batch_size: int = 16  # per worker
    gan_epochs: int = 2
    gan_means: tuple[float, ...] = (3.0, 5.0, 7.0)
    force: bool = False

    @property
    def synthetic(self) -> bool:
        return self.preset == "demo"

    def uri(self, *parts: str) -> str:
        return storage.join(self.work, *parts)

    @property
    def manifest(self) -> str:
        return self.uri("ava", MANIFEST_FILE)

    @property
    def truth(self) -> str | None:
        return self.uri("synthetic", "truth.parquet") if self.synthetic else None

    @property
    def photos(self) -> str:
        return self.uri("synthetic", "images") if self.synthetic else self.images


PRESETS: dict[str, dict] = {
    # 2 cores, under 8 minutes: a small synthetic AVA at low resolution, a student that starts
    # from the ImageNet weights, short one-cycle training (docs/benchmark_demo.md).
    "demo": {},
    # A real AVA copy on a GPU cluster: the paper's crop, more epochs.
    "ava": {"teacher_size": None, "train_size": 224, "distill_epochs": 2, "train_epochs": 10,
            "train_lr": 1e-3, "train_workers": 4, "device": "cuda", "explain_sample": 32,
            "explain_budget": 2.3, "gan_resolution": 64, "gan_channels": 64, "gan_batch_size": 32,
            "gan_epochs": 50,
            "gan_means": (3.0, 4.0, 5.0, 6.0, 7.0)},
}
