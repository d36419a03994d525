"""python -m jobs.generate: photos from a trained PFAGAN generator for chosen conditions.

The sampling, judging and tables are :mod:`pfagan.generation`; this module is the command line.
"""
from __future__ import annotations

from apm.core import storage
from apm.core.runtime import init_ray
from apm.models import check_model_spec
from jobs import _cli
from pfagan.generation import GenerateConfig, run_generate
from pfagan.sampling import DEFAULT_STD, histogram_for_mean, parse_histogram

EPILOG = f"""\
Conditions: --histogram h1,...,h10 (vote counts or shares for scores 1..10, normalised), or
--mean M[,M2,...]: a binned Gaussian histogram of std --std (default {DEFAULT_STD}, about AVA's
median) whose mean score is exactly M; several means give several grid columns.
Categories: --category NAME (repeatable); default every category the generator was trained
on (the names are stored in its checkpoint).

outputs under --out:
  samples.parquet  a row per sample (SAMPLES_SCHEMA): the conditioning, the noise seed, the
                   sample as PNG, with --apm the APM's predicted distribution and mean, with
                   --classifier the predicted category and its probability
  grid.png         categories x conditions, up to 4 samples per cell

--classifier takes a category classifier written by benchmarks.pfagan (a softmax regression
on an APM's features of real photos; it names its own APM).

example:
  python -m jobs.generate --checkpoint work/pfagan/generator.pt --mean 3,5,7 --n 8 \\
      --apm work/models/finetuned.pt --out work/samples
"""


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as err:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from err


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Draw samples from a PFAGAN generator for categories and score conditions.",
                    EPILOG)
    p.add_argument("--checkpoint", required=True, metavar="PATH|s3://...",
                   help="generator file from jobs.train_pfagan")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--histogram", metavar="h1,...,h10", help="the score histogram to condition on")
    which.add_argument("--mean", metavar="M[,M2,...]", help="mean score(s) to condition on, in (1, 10)")
    p.add_argument("--std", type=float, default=DEFAULT_STD,
                   help=f"spread of the histogram made from --mean (default {DEFAULT_STD})")
    p.add_argument("--category", action="append", default=[], metavar="NAME",
                   help="category to draw (repeatable; default all)")
    p.add_argument("--n", type=int, default=8, help="samples per category and condition (default 8)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--apm", metavar="CKPT|random:ARCH", help="APM that scores the samples")
    p.add_argument("--classifier", metavar="PATH|s3://...", help="category classifier file")
    p.add_argument("--seed", type=int, default=0, help="first noise seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the generator runs in a Ray task holding one GPU, on a node that "
                        "has one (this process needs none); cpu: here (default)")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        if args.histogram:
            histograms = [parse_histogram(_floats(args.histogram))]
        else:
            histograms = [histogram_for_mean(m, args.std) for m in _floats(args.mean)]
        config = GenerateConfig(checkpoint=args.checkpoint, out=args.out,
                                histograms=tuple(tuple(float(v) for v in h) for h in histograms),
                                categories=tuple(args.category), n=args.n, apm=args.apm,
                                classifier=args.classifier, seed=args.seed,
                                batch_size=args.batch_size, device=args.device)
        for uri in [args.checkpoint, *([args.classifier] if args.classifier else [])]:
            storage.check_input(uri)
        if args.apm:  # a bad model stops here in one line, not after the samples are drawn
            check_model_spec(args.apm)
        if args.device == "cuda":
            init_ray(args.ray_address)
        summary = run_generate(config)
    except (ValueError, storage.StorageError) as err:  # incl. GeneratorCheckpointError
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
