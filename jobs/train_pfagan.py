"""python -m jobs.train_pfagan: train PFAGAN, a GAN conditioned on a category and a score histogram."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from apm.core import storage
from apm.core.runtime import init_ray
from apm.training.trainer import final_state
from jobs import _cli
from pfagan.config import RESOLUTIONS, GANConfig
from pfagan.data import ConditioningSource, load_conditioning
from pfagan.training import epoch_line, fit, generator_uri

EPILOG = """\
Conditioning (one category and one normalised 10-bin score histogram per photo):
  --manifest M --truth T      synthetic AVA: category from truth.parquet, histogram from the
                              manifest's votes (joined on image_id)
  --clusters C --manifest M   category from jobs.cluster's clusters.parquet (cluster_N),
                              histogram from the manifest's votes
  --clusters C --scores S     for a library without votes: histogram from the distribution
                              jobs.score predicted (joined on uri)
  --manifest M                AVA's first semantic tag as the category (untagged photos skipped)
Photos come from the manifest's (or the scores table's) uri column.

Ray Train runs --num-workers workers with DDP over the generator and the discriminator (gloo on
CPUs; with --device cuda one GPU each, NCCL and bf16 autocast). Every epoch ends with a
checkpoint under OUT/NAME: state.pt (both networks, the moving average of the generator, the
optimisers, counters, loss history) and generator.pt (the averaged generator with its config
and category names, what jobs.generate loads). A crashed worker group restarts from the last
checkpoint; rerunning the same --out and --name resumes (raise --epochs to train longer; other
settings or data are refused, --force starts over). A NaN or infinite loss of either network
stops the run, with no restart and no checkpoint of the weights it reached.

example (a synthetic AVA from jobs.make_synthetic and jobs.prepare_ava):
  python -m jobs.train_pfagan --manifest work/ava/manifest.parquet \\
      --truth work/synthetic/truth.parquet --out work/runs --name pfagan-32 \\
      --resolution 32 --epochs 20 --num-workers 2
"""


def parser() -> argparse.ArgumentParser:
    p = _cli.parser("Train PFAGAN (category- and aesthetics-conditional GAN) on Ray Train.", EPILOG)
    p.add_argument("--manifest", metavar="PATH|s3://...",
                   help="manifest.parquet from jobs.prepare_ava: photos (uri) and votes")
    p.add_argument("--truth", metavar="PATH|s3://...", help="synthetic AVA truth.parquet: categories")
    p.add_argument("--clusters", metavar="PATH|s3://...", help="clusters.parquet of jobs.cluster: categories")
    p.add_argument("--scores", metavar="OUT|DIR|FILE",
                   help="jobs.score output: predicted histograms (with --clusters, instead of --manifest)")
    p.add_argument("--split", default="train", help="manifest split to train on; 'all' for every row "
                                                    "(default train)")
    p.add_argument("--out", required=True, metavar="DIR|s3://...",
                   help="where runs and checkpoints go (OUT/NAME)")
    p.add_argument("--name", default="pfagan", help="run name; rerunning the same name resumes "
                                                    "(default pfagan)")
    p.add_argument("--force", action="store_true",
                   help="start the run over: remove the checkpoints of --name first")
    p.add_argument("--resolution", type=int, default=32, choices=sorted(RESOLUTIONS),
                   help="image side in pixels (default 32)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="per worker (default 64)")
    p.add_argument("--z-dim", type=int, default=128, help="noise dimension (default 128)")
    p.add_argument("--g-channels", type=int, default=64,
                   help="generator width at the image; up to 8x deeper in (default 64)")
    p.add_argument("--d-channels", type=int, default=64,
                   help="discriminator width at the image; up to 8x deeper in (default 64)")
    p.add_argument("--g-lr", type=float, default=2e-4)
    p.add_argument("--d-lr", type=float, default=2e-4)
    p.add_argument("--n-critic", type=int, default=2,
                   help="discriminator steps (batches) per generator step (default 2)")
    p.add_argument("--ema-decay", type=float, default=0.999,
                   help="decay of the generator's moving average (default 0.999)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="centre crops without flips instead of random windows and flips")
    _cli.add_ray_train_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _cli.setup(args)
    try:
        source = ConditioningSource(manifest=args.manifest, truth=args.truth, clusters=args.clusters,
                                    scores=args.scores, split=None if args.split == "all" else args.split)
        for uri in source.inputs:
            storage.check_input(uri)
        storage.check_output(args.out)
        conditioning = load_conditioning(source)
        cfg = GANConfig(
            num_categories=len(conditioning.categories), resolution=args.resolution,
            z_dim=args.z_dim, g_channels=args.g_channels, d_channels=args.d_channels,
            g_lr=args.g_lr, d_lr=args.d_lr, n_critic=args.n_critic, ema_decay=args.ema_decay,
            batch_size=args.batch_size, epochs=args.epochs, num_workers=args.num_workers,
            use_gpu=args.device == "cuda", cpus_per_worker=args.cpus_per_worker,
            augment=args.augment)
        init_ray(args.ray_address)
    except (ValueError, storage.StorageError) as err:
        _cli.fail(str(err))
    print(f"{conditioning.rows.num_rows} photos from {source.kind}; categories: {conditioning.describe()}")
    print(f"model: {cfg.describe()}; {cfg.epochs} epochs, {cfg.num_workers} workers x batch "
          f"{cfg.batch_size}", flush=True)
    started = time.perf_counter()
    # Where the photos and conditions came from: a rerun on other data must not resume.
    data = {key: storage.normalize(value) if key != "split" and value else value
            for key, value in asdict(source).items()}
    result = _cli.train_or_fail(fit, cfg, conditioning, args.out, args.name,
                                max_failures=args.max_failures, data=data, force=args.force)
    state = final_state(result)
    for metrics in state["history"]:
        print(epoch_line(metrics))
    print(f"PFAGAN: {state['epoch'] + 1} epochs ({state['step']} D / {state['g_step']} G steps) "
          f"in {time.perf_counter() - started:.1f} s; generator checkpoint: "
          f"{generator_uri(result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
