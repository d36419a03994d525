"""python -m benchmarks.synthetic: how fast the synthetic AVA renders, and how AVA-like it is.

Renders N images on the local Ray (rate in images/s), then compares the vote statistics of a
large label sample (no rendering needed) with the real AVA labels when they are present, and
writes docs/synthetic_ava.md with the command, the machine and the date.
"""
from __future__ import annotations

import datetime as dt
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from apm.core.runtime import init_ray
from apm.data.ava import read_ava_package
from apm.data.synthetic.aesthetics import sample_labels
from apm.data.synthetic.attributes import CATEGORIES
from apm.data.synthetic.dataset import SyntheticConfig, generate
from apm.votes.distributions import histogram_moments
from apm.votes.fit_report import votes_from_manifest
from benchmarks._common import REAL_AVA, machine, write_doc
from jobs import _cli


def vote_stats(votes: np.ndarray) -> dict[str, float]:
    moments = histogram_moments(votes)
    n, mean, skew = moments.n_votes, moments.mean, moments.skewness
    stats = {
        "images": float(len(votes)),
        "votes per image: min": float(n.min()),
        "votes per image: mean": float(n.mean()),
        "votes per image: max": float(n.max()),
        "mean of per-image means": float(mean.mean()),
        "sd of per-image means": float(mean.std()),
        "mean per-image std": float(moments.std.mean()),
        "share of means in [4, 7]": float(((mean >= 4) & (mean <= 7)).mean()),
    }
    for low in range(2, 9):
        inside = (mean >= low) & (mean < low + 1)
        stats[f"skewness, mean in [{low},{low + 1})"] = (
            float(skew[inside].mean()) if inside.sum() >= 20 else float("nan"))
    return stats


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Measure the synthetic AVA's render rate and compare it with real AVA.")
    p.add_argument("--n", type=int, default=2000, help="images to render (default 2000)")
    p.add_argument("--size", type=int, default=256, help="long side in pixels (default 256)")
    p.add_argument("--label-sample", type=int, default=200_000,
                   help="labels drawn (without rendering) for the statistics (default 200000)")
    p.add_argument("--real-ava", default=str(REAL_AVA), help="real AVA package for comparison")
    p.add_argument("--doc", default="docs/synthetic_ava.md", help="report to write")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    init_ray(args.ray_address)

    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(SyntheticConfig(n=args.n, size=args.size, seed=0), tmp)
    rate = summary.n / summary.seconds
    synthetic = vote_stats(sample_labels(np.random.default_rng(0), args.label_sample).votes)
    real = None
    if (Path(args.real_ava) / "AVA.txt").exists():
        table, _ = read_ava_package(args.real_ava)
        real = vote_stats(votes_from_manifest(table)[1])

    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    lines = [
        "# Synthetic AVA: render rate and vote statistics",
        "",
        f"- command: `python -m benchmarks.synthetic {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()}; Ray CPUs: {cpus}",
        f"- date: {dt.date.today().isoformat()}",
        "",
        "## Render rate",
        "",
        f"{summary.n} images at {args.size} px (long side), JPEG + mask PNG + truth, local disk, "
        f"Ray Data over {cpus} CPUs: **{summary.seconds:.1f} s, {rate:.1f} images/s** "
        "(Ray start-up excluded, label sampling and writing the package included).",
        f"At this rate 100,000 images take about {100_000 / rate / 60:.0f} min on this machine; "
        "the work is embarrassingly parallel, so it scales with the CPUs of a Ray cluster.",
        "",
        "## Vote statistics",
        "",
        f"Synthetic: {args.label_sample} images drawn with seed 0 (labels only). "
        + ("Real: the AVA labels in ../shared/data/ava." if real else "Real AVA labels: absent."),
        "",
        "| statistic | synthetic | real AVA |",
        "|---|---|---|",
    ]
    for key, value in synthetic.items():
        lines.append(f"| {key} | {_fmt(value)} | {_fmt(real[key]) if real else 'n/a'} |")
    lines += ["", "Category priors and tastes: `apm/data/synthetic/aesthetics.py` (`TASTES`). Mean "
              "score per category in the synthetic sample:", ""]
    labels = sample_labels(np.random.default_rng(0), 50_000)
    means = histogram_moments(labels.votes).mean
    lines += [f"- {c}: {means[labels.category_id == i].mean():.2f}"
              for i, c in enumerate(CATEGORIES)]
    write_doc(args.doc, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
