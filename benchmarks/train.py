"""python -m benchmarks.train: Ray Train's overhead against the same loop in plain PyTorch.

Both sides train the same APM (same backbone, loss, image size and global batch) on the same
synthetic photos, decoding and augmenting JPEGs on the fly: plain PyTorch with a
``DataLoader`` in one process using every core, Ray Train with N DDP workers (gloo) fed by Ray
Data. The first epoch warms up (thread pools, allocator, Ray Data start-up) and is not counted.
Writes docs/benchmark_training.md with the command, the machine and the date.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import tempfile
import time

import numpy as np
import torch

from apm.core.runtime import init_ray
from apm.data.decode import decode_image, random_crop
from apm.data.manifest import build_manifest
from apm.data.synthetic.dataset import SyntheticConfig, generate
from apm.models import APMConfig, create_apm, input_normalisation
from apm.training.data import IngestConfig, training_rows
from apm.training.loop import TrainConfig
from apm.training.losses import get_loss
from apm.training.trainer import final_state, fit
from benchmarks._common import machine
from jobs import _cli


class _PhotoDataset(torch.utils.data.Dataset):
    """Decode + random crop, exactly what the Ray Data ingest does per photo."""

    def __init__(self, uris: list[str], targets: np.ndarray, ingest: IngestConfig) -> None:
        self.uris, self.targets, self.ingest = uris, targets, ingest
        self.rng = np.random.default_rng()

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int):
        with open(self.uris[i], "rb") as f:
            rgb = decode_image(f.read(), size=self.ingest.resize).rgb
        crop = np.ascontiguousarray(random_crop(rgb, self.ingest.image_size, self.rng))
        return torch.from_numpy(crop), torch.from_numpy(self.targets[i])


def plain_pytorch(rows, cfg: TrainConfig, loader_workers: int) -> list[float]:
    """Images/s per epoch of a single-process loop (all cores to torch's intra-op threads)."""
    torch.set_num_threads(os.cpu_count() or 1)
    ingest = IngestConfig(image_size=cfg.image_size)
    targets = np.stack(rows.column("target").to_numpy(zero_copy_only=False)).astype(np.float32)
    loader = torch.utils.data.DataLoader(
        _PhotoDataset(rows.column("uri").to_pylist(), targets, ingest),
        batch_size=cfg.batch_size * cfg.num_workers, shuffle=True, num_workers=loader_workers,
        persistent_workers=loader_workers > 0)
    model = create_apm(APMConfig(backbone=cfg.backbone, head=cfg.head), cfg.init)
    model.semantic_head.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalisation(cfg.backbone))
    loss_fn = get_loss(cfg.loss)
    rates = []
    for _ in range(cfg.epochs):
        model.train()
        start, images = time.perf_counter(), 0
        for image, target in loader:
            x = (image.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            loss = loss_fn.on_output(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(x)
        rates.append(images / (time.perf_counter() - start))
    return rates


def ray_train(rows, cfg: TrainConfig, storage_uri: str) -> list[float]:
    """Images/s per epoch over all workers (rank 0's rate times the number of workers)."""
    state = final_state(fit(cfg, rows, storage_uri, "benchmark"))
    return [m["images_per_s"] * cfg.num_workers for m in state["history"]]


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Compare Ray Train's images/s with the same training loop in plain PyTorch.")
    p.add_argument("--n", type=int, default=1536,
                   help="synthetic photos, one epoch (default 1536: epochs long enough that Ray "
                        "Data's per-epoch start-up does not dominate, as in real training)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="per Ray worker (default 16)")
    p.add_argument("--num-workers", type=int, default=2, help="Ray Train workers (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="the first one is warm-up (default 3)")
    p.add_argument("--doc", default="docs/benchmark_training.md")
    args = p.parse_args(argv)
    _cli.setup(args)
    init_ray()
    cfg = TrainConfig(task="finetune", backbone=args.backbone, init="random", loss="kl",
                      epochs=args.epochs, batch_size=args.batch_size,
                      image_size=args.image_size, num_workers=args.num_workers,
                      cpus_per_worker=(os.cpu_count() or 2) / args.num_workers / 2)
    with tempfile.TemporaryDirectory() as tmp:
        generate(SyntheticConfig(n=args.n, size=int(args.image_size * 1.5)), f"{tmp}/synthetic")
        manifest = build_manifest(f"{tmp}/synthetic", f"{tmp}/ava",
                                  images=f"{tmp}/synthetic/images").manifest_uri
        rows = training_rows(manifest, split=None)
        plain = plain_pytorch(rows, cfg, loader_workers=args.num_workers)
        ray_rates = ray_train(rows, cfg, f"{tmp}/runs")
    plain_rate, ray_rate = float(np.mean(plain[1:])), float(np.mean(ray_rates[1:]))
    overhead = 1 - ray_rate / plain_rate
    lines = [
        "# Training throughput: Ray Train vs plain PyTorch",
        "",
        f"- command: `python -m benchmarks.train {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; torch {torch.__version__}",
        f"- workload: {rows.num_rows} synthetic JPEGs decoded and randomly cropped on the fly, "
        f"{args.backbone} at {args.image_size} px, KL loss, AdamW, global batch "
        f"{args.batch_size * args.num_workers}; epochs after the first (warm-up) are averaged",
        "",
        "| setup | images/s per epoch | mean (warm epochs) |",
        "|---|---|---|",
        f"| plain PyTorch: 1 process, {os.cpu_count()} threads, DataLoader({args.num_workers} "
        f"workers) | {', '.join(f'{r:.1f}' for r in plain)} | **{plain_rate:.1f}** |",
        f"| Ray Train: {args.num_workers} DDP workers (gloo), Ray Data decoding | "
        f"{', '.join(f'{r:.1f}' for r in ray_rates)} | **{ray_rate:.1f}** |",
        "",
        f"Ray's overhead: **{overhead:.0%}** (target ≤ 10%: "
        f"{'met' if overhead <= 0.10 else 'NOT met'}).",
    ]
    os.makedirs(os.path.dirname(args.doc) or ".", exist_ok=True)
    with open(args.doc, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
