"""The configuration of a PFAGAN run: the architecture and the training settings, in one record.

It is stored with every checkpoint, so a generator can be rebuilt from its file alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from apm.core.schemas import NUM_BINS

#: Output side in pixels -> number of ResNet up-blocks (generator) / down-blocks (discriminator)
#: between the 4x4 base and the image.
RESOLUTIONS: dict[int, int] = {32: 3, 64: 4, 128: 5}

#: The fields that shape the weights; the others only steer training and may change on a resume.
ARCHITECTURE_FIELDS = ("resolution", "z_dim", "g_channels", "d_channels", "num_categories", "num_bins")


@dataclass(frozen=True)
class GANConfig:
    """Defaults follow SNGAN with projection (hinge loss, Adam with beta1 = 0), with two
    discriminator steps per generator step as in BigGAN, which keeps CPU runs short."""

    num_categories: int
    resolution: int = 32
    z_dim: int = 128
    g_channels: int = 64  # width of the generator's last block; deeper blocks are up to 8x wider
    d_channels: int = 64  # width of the discriminator's first block
    num_bins: int = NUM_BINS
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    n_critic: int = 2  # discriminator steps (batches) per generator step
    ema_decay: float = 0.999
    batch_size: int = 64  # per worker
    epochs: int = 10
    num_workers: int = 2
    use_gpu: bool = False
    # CPUs each worker reserves; the rest are left to Ray Data's decoding (see apm TrainConfig).
    cpus_per_worker: float = 1.0
    augment: bool = True  # random square window along the long side + horizontal flip
    shuffle: bool = True  # a new order of the photos every epoch (apm.training.data)
    seed: int = 0  # the shuffles' seed

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)}, got {self.resolution}")
        if self.num_categories < 1 or self.num_bins < 2:
            raise ValueError("num_categories must be at least 1 and num_bins at least 2")
        if min(self.z_dim, self.g_channels, self.d_channels) < 1:
            raise ValueError("z_dim, g_channels and d_channels must be positive")
        # Batch norm in training mode needs two samples per worker.
        if self.batch_size < 2 or self.epochs < 1 or self.num_workers < 1 or self.n_critic < 1:
            raise ValueError("batch_size must be at least 2; epochs, num_workers, n_critic at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def num_blocks(self) -> int:
        return RESOLUTIONS[self.resolution]

    def architecture(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}

    def describe(self) -> str:
        return (f"{self.resolution} px, z {self.z_dim}, G width {self.g_channels}, "
                f"D width {self.d_channels}, {self.num_categories} categories, {self.num_bins} bins")
