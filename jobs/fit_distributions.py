"""python -m jobs.fit_distributions: Gaussian, Gamma and mirrored-Gamma fits of every histogram.

The fitting is :mod:`apm.votes.distributions`; the stage (read, fit, tables, report, plots, write) is
:func:`apm.votes.fit_report.run`, which ``jobs.pipeline`` calls too. This module is the command line.
"""
from __future__ import annotations

import textwrap

from apm.core import storage
from apm.votes.distributions import (
    DEFAULT_METHOD,
    DEFAULT_METHOD_REASON,
    DEFAULT_PMF,
    DEFAULT_PMF_REASON,
    METHODS,
    PMFS,
)
from apm.votes.fit_report import run
from jobs import _cli

DESCRIPTION = """\
Fit three distributions to each image's 10-bin vote histogram and measure how well each fits.

Per image: a Gaussian, a Gamma on the score and a mirrored Gamma (a Gamma on 11 - score, for
the ceiling effect). Each density becomes a pmf over the scores 1..10 in one of two ways
(--pmf): 'binned' rounds and censors (score k takes [k-0.5, k+0.5]; mass below 1.5 goes to
score 1, above 9.5 to score 10); 'density', the source work's (Murray et al. 2012), takes the
density at k = 1..10 and renormalises it over the ten scores. The RMSE between the normalised
histogram and that pmf is taken over the 10 bins; --method lsq minimises it for the chosen pmf.
The source work's configuration is --method moments --pmf density."""


def _epilog() -> str:
    methods = "\n".join(f"  {name:8} {text}" for name, text in METHODS.items())
    pmfs = "\n".join(f"  {name:8} {text}" for name, text in PMFS.items())
    reason = textwrap.fill(f"Default method: {DEFAULT_METHOD}, because {DEFAULT_METHOD_REASON}.",
                           width=92)
    pmf_reason = textwrap.fill(f"Default pmf: {DEFAULT_PMF}, because {DEFAULT_PMF_REASON}.",
                               width=92)
    return f"""\
outputs under --out:
  per_image.parquet    one row per manifest row: moments, fitted parameters and RMSE per
                       family, the best family (PER_IMAGE_FIT_SCHEMA in apm/core/schemas.py)
  bucket_rmse.parquet  mean RMSE per family in the mean-score buckets [1,2) .. [8,9) and
                       overall (BUCKET_RMSE_SCHEMA)
  report.md            the bucket table, which family wins where, the method, the pmf
                       construction and the timing
  rmse_by_bucket.png, example_fits.png (low, middle, high mean), std_vs_mean.png

methods:
{methods}

{reason}

pmf constructions (--pmf):
{pmfs}

{pmf_reason}

example:
  python -m jobs.fit_distributions --manifest work/ava/manifest.parquet --out work/fits
  python -m jobs.fit_distributions --manifest s3://bucket/ava/manifest.parquet \\
      --out s3://bucket/fits --method moments --s3-endpoint http://minio:9000
  python -m jobs.fit_distributions --manifest work/ava/manifest.parquet --out work/fits-source \\
      --method moments --pmf density        # the source work's configuration
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(DESCRIPTION, _epilog())
    p.add_argument("--manifest", required=True, metavar="PATH|s3://...",
                   help="manifest Parquet file or folder; needs the columns image_id and votes")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help=f"fitting method (default: {DEFAULT_METHOD})")
    p.add_argument("--pmf", choices=list(PMFS), default=DEFAULT_PMF,
                   help="how a density becomes a 10-bin pmf: 'binned' integrates it over each "
                        "score's bin [k-0.5, k+0.5] with open end bins, 'density' takes it at "
                        f"k = 1..10 and renormalises (default: {DEFAULT_PMF})")
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        summary = run(args.manifest, args.out, args.method, args.pmf)
    except (storage.StorageError, ValueError) as err:  # bad input: one clear line
        _cli.fail(str(err))
    print("\n".join(f"{key}: {value}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
