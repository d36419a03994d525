"""python -m benchmarks.pfagan: train PFAGAN on a synthetic AVA and measure its control.

Trains the generator on Ray Train (or takes ``--generator``), fits a category classifier on
real training photos' APM features, draws samples for every category x score condition, and
writes docs/benchmark_pfagan.md with category accuracy, aesthetic control (Spearman), the
Fréchet distance in the APM's feature space (see :mod:`pfagan.evaluation`), the training
curve and a sample grid. The classifier is kept for ``jobs.generate --classifier``.
"""
from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from apm.core import storage
from apm.core.runtime import init_ray
from apm.training.trainer import final_state
from apm.votes.distributions import SCORES
from benchmarks._common import machine
from jobs import _cli
from pfagan.checkpoint import StoredGenerator, load_generator
from pfagan.config import GANConfig
from pfagan.data import ConditioningSource, load_conditioning
from pfagan.evaluation import real_images, score_generator
from pfagan.generator import Generator
from pfagan.grids import sample_grid
from pfagan.judges import APMJudge, fit_classifier
from pfagan.sampling import grid_conditions, histogram_for_mean, sample
from pfagan.training import fit, generator_uri

GPU_RECIPE = """\
## Recipe: 128 px on the real AVA, on GPUs

1. Photos and labels: `python -m jobs.prepare_ava --ava-dir s3://BUCKET/AVA_dataset --images
   s3://BUCKET/ava/images --out s3://BUCKET/ava` (the manifest marks missing / unreadable photos,
   which training leaves out).
2. Categories: either AVA's semantic tags (`--manifest` alone: the first tag) or clusters of the
   scored collection, as in the paper (`python -m jobs.score ... --output s3://BUCKET/scores`, then
   `python -m jobs.cluster --scores s3://BUCKET/scores --k 10 --out s3://BUCKET/clusters`, then
   `--clusters s3://BUCKET/clusters/clusters.parquet --manifest s3://BUCKET/ava/manifest.parquet`).
3. Train on a GPU cluster (`ray_cluster.yaml` or `cluster/raycluster.yaml`), one worker per GPU,
   NCCL and bf16 autocast:

       ray job submit --runtime-env cluster/runtime_env.yaml -- python -m jobs.train_pfagan \\
           --manifest s3://BUCKET/ava/manifest.parquet --clusters s3://BUCKET/clusters/clusters.parquet \\
           --out s3://BUCKET/runs --name pfagan-128 --resolution 128 --g-channels 64 \\
           --d-channels 64 --batch-size 64 --epochs 200 --num-workers 8 --cpus-per-worker 4 --device cuda

   8 workers x 64 = a global batch of 512, BigGAN's range for 128 px; ~230k photos make ~450
   D steps per epoch. Give each worker 4+ CPUs so Ray Data decodes fast enough, and raise
   `--epochs` on a rerun of the same `--name` to continue from the last checkpoint.
4. Judge it as here with the 128 px generator and the fine-tuned APM, and draw grids with
   `python -m jobs.generate --checkpoint .../generator.pt --mean 3,4,5,6,7 --apm MODEL`.
"""


def parser():
    p = _cli.parser("Train and judge PFAGAN on a synthetic AVA; write docs/benchmark_pfagan.md.")
    p.add_argument("--manifest", required=True, help="synthetic AVA manifest.parquet")
    p.add_argument("--truth", required=True, help="its truth.parquet (categories)")
    p.add_argument("--apm", required=True, help="APM checkpoint that judges the samples")
    p.add_argument("--work", default="work/pfagan-bench", help="runs, generator, classifier")
    p.add_argument("--generator", help="judge this generator file instead of training one")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--channels", type=int, default=32, help="G and D width (default 32, for CPUs)")
    p.add_argument("--batch-size", type=int, default=64, help="per worker")
    p.add_argument("--num-workers", type=int, default=2, help="Ray Train workers (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=0.5,
                   help="CPUs each worker reserves; the rest decode photos (default 0.5)")
    p.add_argument("--means", default="3,4,5,6,7", help="conditioning mean scores (grid columns)")
    p.add_argument("--per-cell", type=int, default=30, help="samples per category x mean")
    p.add_argument("--classifier-photos", type=int, default=3000,
                   help="real training photos the category classifier learns from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--doc", default="docs/benchmark_pfagan.md")
    _cli.add_ray_args(p)
    return p


def train(args, work: str) -> tuple[str, list[dict], float, GANConfig]:
    conditioning = load_conditioning(ConditioningSource(manifest=args.manifest, truth=args.truth))
    cfg = GANConfig(num_categories=len(conditioning.categories), resolution=args.resolution,
                    g_channels=args.channels, d_channels=args.channels, batch_size=args.batch_size,
                    epochs=args.epochs, num_workers=args.num_workers,
                    cpus_per_worker=args.cpus_per_worker)
    started = time.perf_counter()
    result = fit(cfg, conditioning, storage.join(work, "runs"), "pfagan")
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    return (generator_uri(result, storage.join(work, "runs")), final_state(result)["history"],
            time.perf_counter() - started, cfg)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _cli.setup(args)
    work = storage.normalize(args.work)
    init_ray(args.ray_address)
    history, train_s = [], 0.0
    if args.generator:
        generator = args.generator
    else:
        generator, history, train_s, _ = train(args, work)
    stored = load_generator(generator)
    storage.write_bytes(storage.join(work, "generator.pt"), storage.read_bytes(generator))
    res = stored.config.resolution
    rng = np.random.default_rng(args.seed)

    def real(split: str, limit: int | None):
        rows = load_conditioning(ConditioningSource(manifest=args.manifest, truth=args.truth,
                                                    split=split)).rows
        if limit and rows.num_rows > limit:
            rows = rows.take(np.sort(rng.choice(rows.num_rows, limit, replace=False)))
        images, kept = real_images(rows.column("uri").to_pylist(), res)
        target = np.stack(rows.column("target").to_numpy(zero_copy_only=False))[kept]
        return images, rows.column("category_id").to_numpy()[kept], target @ SCORES

    judge = APMJudge(args.apm)
    train_images, train_labels, _ = real("train", args.classifier_photos)
    test_images, test_labels, test_means = real("test", None)
    train_features = judge(train_images).features
    classifier = fit_classifier(judge, train_features, train_labels, stored.categories)
    classifier.save(storage.join(work, "classifier.pt"))

    means = [float(m) for m in args.means.split(",")]
    hists = np.stack([histogram_for_mean(m) for m in means])
    ids = list(range(len(stored.categories)))
    conditions = grid_conditions(ids, hists, args.per_cell, args.seed)
    samples = sample(stored, conditions)
    torch.manual_seed(args.seed)
    untrained = StoredGenerator(Generator(stored.config).eval(), stored.config, stored.categories)
    scores = score_generator(judge, classifier, samples, conditions.category_ids,
                             conditions.histograms @ SCORES, test_images, test_labels, test_means,
                             train_features, sample(untrained, conditions))

    doc = Path(args.doc)
    grid_png = doc.with_name(doc.stem + "_grid.png")
    k = min(4, args.per_cell)
    cells = [[samples[(r * len(means) + c) * args.per_cell:][:k] for c in range(len(means))]
             for r in range(len(ids))]
    grid_png.write_bytes(sample_grid(cells, list(stored.categories), [f"mean {m:g}" for m in means],
                                     f"PFAGAN samples, {res} px: category x conditioning mean"))
    doc.write_text("\n".join(report(args, stored, history, train_s, scores, len(train_images),
                                    len(test_images), grid_png.name)) + "\n")
    print("\n".join(scores.table()))
    print(f"wrote {doc} and {grid_png}; generator {storage.join(work, 'generator.pt')}, "
          f"classifier {storage.join(work, 'classifier.pt')}")
    return 0


def report(args, stored, history, train_s, scores, n_train, n_test, grid_name) -> list[str]:
    cfg = stored.config
    lines = [
        "# PFAGAN on a synthetic AVA: category and aesthetic control",
        "",
        f"- command: `python -m benchmarks.pfagan {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; torch {torch.__version__}",
        f"- generator: {cfg.describe()}, hinge loss, spectral norm in D, {cfg.n_critic} D steps "
        f"per G step, EMA {cfg.ema_decay}; {len(stored.categories)} categories: "
        f"{', '.join(stored.categories)}",
        f"- judge: APM `{args.apm}`; category classifier = softmax regression on its features of "
        f"{n_train} real training photos; {n_test} real test photos as the held-out reference; "
        f"{scores.samples} samples ({args.per_cell} per category x mean, means {args.means})",
        "",
    ]
    if history:
        last = history[-1]
        lines += [f"Training: {len(history)} epochs on Ray Train ({cfg.num_workers} CPU workers, "
                  f"gloo) in {train_s / 60:.1f} min, {last['images_per_s']:.1f} images/s on rank 0 "
                  f"in the last epoch.", "",
                  "| epoch | D loss | G loss | D(real) | D(fake) |", "|---|---|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['d_loss']:.3f} | {h['g_loss']:.3f} | {h['d_real']:+.2f} | "
                  f"{h['d_fake']:+.2f} |" for h in history]
        lines.append("")
    lines += ["## Results", "", *scores.table(), "",
              "Average APM mean of the samples per conditioning mean:", "",
              "| conditioning mean | " + " | ".join(f"{m:g}" for m in scores.mean_by_condition) + " |",
              "|---|" + "---|" * len(scores.mean_by_condition),
              "| APM mean of samples | " + " | ".join(f"{v:.2f}" for v in scores.mean_by_condition.values())
              + " |", "",
              "The Fréchet distance uses the APM backbone's pooled features, because Inception "
              "weights cannot be downloaded here; it is comparable only within this table.", "",
              f"![samples]({grid_name})", "", GPU_RECIPE]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
