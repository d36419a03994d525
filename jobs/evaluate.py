"""python -m jobs.evaluate: the paper's metrics for APM checkpoints on a manifest's test split.

The predictor, metrics, report and plots are :mod:`apm.stages.evaluation`; this module is the command line.
"""
from __future__ import annotations

from dataclasses import replace

from apm.core import storage
from apm.core.precision import DEVICES
from apm.core.runtime import init_ray
from apm.models import ModelSpec
from apm.stages.evaluation import EvaluationConfig, run_evaluation
from jobs import _cli

EPILOG = """\
Each --model is an APM checkpoint (from jobs.distill / jobs.finetune), or random:ARCH for a
randomly initialised model (a floor to compare with); --variant names them in
the same order (default: the checkpoint file names). Every photo of the split is resized (short
side image_size * 8/7), centre-cropped to --image-size and scored by --concurrency actors that
load the checkpoint once, with bulk scoring's predictor (the same precision: what is measured
is what jobs.score writes). A photo that cannot be read is counted in n_errors, never fatal.

Metrics (apm.votes.metrics): KLDIV, CDLoss (null for the mean-regression head), MSE of the mean score,
Spearman rho, Pearson r, accuracy of high (mean >= 5) vs low; overall and per semantic category
(the manifest's tag1_name, 'unknown' without one; with --truth, the synthetic truth's category).

outputs under --out:
  metrics.parquet      one row per variant and category (EVALUATION_SCHEMA in apm/core/schemas.py)
  metrics.md           the paper-style table, then one table per category
  predictions.parquet  per variant and photo: true and predicted mean / std, predicted
                       distribution (null for the mean head), status and error
  scatter.png          predicted vs true mean per variant
  calibration.png      binned predicted std vs the |error| of the mean and the true std

example:
  python -m jobs.evaluate --manifest work/ava/manifest.parquet --truth work/synthetic/truth.parquet \\
      --model runs/apm/model.pt --model runs/baseline/model.pt --variant APM --variant mean \\
      --out work/eval
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Evaluate APM checkpoints on a manifest split.", EPILOG)
    p.add_argument("--manifest", required=True, metavar="PATH|s3://...", help="prepare_ava's manifest")
    p.add_argument("--split", default="test", help="manifest split to evaluate (default test)")
    p.add_argument("--model", required=True, action="append", metavar="CKPT|random:ARCH",
                   help="an APM checkpoint, or random:ARCH; repeat to compare models")
    p.add_argument("--variant", action="append", default=[], metavar="NAME",
                   help="a name per --model, in order (default: checkpoint file names)")
    p.add_argument("--truth", metavar="PATH|s3://...",
                   help="synthetic truth.parquet: per-category metrics by its category column")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--image-size", type=int,
                   help="crop size (default: each checkpoint's training crop, else 224)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the models run")
    _cli.add_precision_arg(p)
    p.add_argument("--batch-size", type=int, help="photos per batch (default: 32 on cpu, 256 on cuda)")
    p.add_argument("--concurrency", type=int,
                   help="predictor actors per model, each loading the checkpoint once "
                        "(default: one per GPU with --device cuda, else one per CPU)")
    _cli.add_image_limit_args(p)
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = EvaluationConfig(
            manifest=args.manifest, models=tuple(args.model), out=args.out,
            variants=tuple(args.variant), split=args.split, truth=args.truth,
            image_size=args.image_size, device=args.device, precision=args.precision,
            batch_size=args.batch_size,
            concurrency=args.concurrency, limits=_cli.image_limits(args))
        for uri in [args.manifest, *([args.truth] if args.truth else [])]:
            storage.check_input(uri)
        storage.check_output(args.out)
        # Each read once, here: a bad model stops the job with one line, before Ray.
        config = replace(config, models=tuple(ModelSpec.resolve(m) for m in args.model))
    except (ValueError, storage.StorageError) as err:  # CheckpointError is a ValueError
        _cli.fail(str(err))
    init_ray(args.ray_address)
    try:
        summary = run_evaluation(config)
    except (ValueError, storage.StorageError) as err:  # e.g. an empty split, no photo scored
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
