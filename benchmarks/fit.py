"""python -m benchmarks.fit: time the score-distribution fits on the full real AVA label set.

Fits all 241,842 AVA histograms with every method of :mod:`apm.votes.distributions` (all three
families each) and writes ``docs/benchmark_fit_distributions.md``: the command, the machine, the
date, seconds per method, the overall RMSE per family per method and the bucket table of the
default method. The speed target is the default method in under 60 s on a 2-core machine.

It also compares the source work's configuration (Murray et al. 2012: method ``moments``, pmf
``density``) with ours (the default method and pmf) side by side, with the two mixed
configurations (``moments`` + ``binned``, ``lsq`` + ``density``) so that the effect of the method
and of the pmf construction show separately: overall and per-bucket mean RMSE, the family that
wins each bucket under each configuration, and how many fits leave the scale.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import time

import numpy as np
import scipy

from apm.core import storage
from apm.data.ava import read_ava_package
from apm.votes.distributions import (
    DEFAULT_METHOD,
    DEFAULT_METHOD_REASON,
    DEFAULT_PMF,
    DEFAULT_PMF_REASON,
    FAMILIES,
    LSQ_LIMITS,
    METHODS,
    PMFS,
    FitResult,
    fit_all,
)
from apm.votes.fit_report import (
    BUCKET_TABLE_NOTE,
    LABELS,
    Timing,
    bucket_markdown,
    bucket_table,
    bucket_winner,
    build_outputs,
    fmt_rmse,
    votes_from_manifest,
    winners_summary,
)
from benchmarks._common import REAL_AVA, machine
from jobs import _cli

SPEED_TARGET_S = 60.0
#: The source work's configuration (Murray et al. 2012): moments, then the density at k = 1..10.
SOURCE = ("moments", "density")
#: The configurations compared side by side: method x pmf construction, the source work's first.
CONFIGURATIONS: tuple[tuple[str, str], ...] = (
    SOURCE, ("moments", "binned"), ("lsq", "density"), ("lsq", "binned"))
#: Short family names for the wide side-by-side table.
SHORT = {"gaussian": "G", "gamma": "Γ", "gamma_mirrored": "mΓ"}
#: A fit "leaves the scale" when the mean of its density is outside this range.
SCALE_RANGE = (0.5, 10.5)

Config = tuple[str, str]


def config_name(config: Config) -> str:
    """``moments + density (source work)``, ``lsq + binned (ours)``, ``moments + binned``."""
    tags = [tag for tag, is_it in (("source work", config == SOURCE),
                                   ("ours", config == (DEFAULT_METHOD, DEFAULT_PMF))) if is_it]
    return f"{config[0]} + {config[1]}" + (f" ({', '.join(tags)})" if tags else "")


def off_scale(fit: FitResult, family: str) -> int:
    """Images whose fit of ``family`` has its mean outside ``SCALE_RANGE`` or a parameter at
    the least-squares bounds ``LSQ_LIMITS`` (a limit, e.g. a ramp, rather than a density)."""
    params = fit.params[family]
    location = FAMILIES[family].location(*params)
    outside = (location < SCALE_RANGE[0]) | (location > SCALE_RANGE[1])
    for value, positive in zip(params, FAMILIES[family].log_params):
        outside |= np.abs(value) >= 0.99 * LSQ_LIMITS[1]
        if positive:
            outside |= value <= 1.01 * LSQ_LIMITS[0]
    return int(np.sum(outside))


def comparison_lines(fits: dict[Config, FitResult], seconds: dict[Config, float]) -> list[str]:
    """The side-by-side sections: overall, per bucket, winners per bucket, 'Which pmf and why'."""
    buckets = {c: bucket_table(fits[c]).to_pylist() for c in CONFIGURATIONS}
    families = list(FAMILIES)
    lines = [
        "## The source work's configuration against ours",
        "",
        "The source work (Murray et al., AVA, CVPR 2012) fits each family by the method of "
        "moments and takes the fitted density at the ten integer scores, renormalised over them "
        "(`--method moments --pmf density`). Ours is the default, "
        f"`--method {DEFAULT_METHOD} --pmf {DEFAULT_PMF}`. The two mixed configurations separate "
        "the effect of the method from that of the pmf. Each configuration's RMSE is against its "
        "own pmf. pmf constructions: " + "; ".join(f"`{k}`: {v}" for k, v in PMFS.items()) + ".",
        "",
        "### Overall",
        "",
        "| configuration | seconds | " + " | ".join(f"RMSE {LABELS[f]}" for f in families)
        + " | lowest | " + " | ".join(f"off the scale: {LABELS[f]}" for f in families) + " |",
        "|---|---|" + "---|" * (2 * len(families) + 1),
    ]
    for c in CONFIGURATIONS:
        overall = buckets[c][-1]
        best = bucket_winner(overall)
        lines.append(
            f"| {config_name(c)} | {seconds[c]:.1f} | "
            + " | ".join(fmt_rmse(overall[f"rmse_{f}"], f == best, 5) for f in families)
            + f" | {LABELS[best]} | "
            + " | ".join(f"{off_scale(fits[c], f):,}" for f in families) + " |")
    lines += [
        "",
        "'off the scale': images whose fitted density has its mean outside "
        f"[{SCALE_RANGE[0]}, {SCALE_RANGE[1]}] or a parameter at the least-squares bounds "
        f"[{LSQ_LIMITS[0]:g}, {LSQ_LIMITS[1]:g}] (out of {len(fits[SOURCE].moments.mean):,} "
        "per family).",
        "",
        "### Mean RMSE by mean-score bucket, side by side",
        "",
        "Columns: " + ", ".join(f"{SHORT[f]} = {LABELS[f]}" for f in families)
        + "; bold: the lowest of the bucket under that configuration.",
        "",
        "| bucket | images | " + " | ".join(
            f"{c[0]}+{c[1]} {SHORT[f]}" for c in CONFIGURATIONS for f in families) + " |",
        "|---|---|" + "---|" * (len(CONFIGURATIONS) * len(families)),
    ]
    for i, row in enumerate(buckets[SOURCE]):
        cells = [row["bucket"], f"{row['n_images']:,}"]
        for c in CONFIGURATIONS:
            r = buckets[c][i]
            best = bucket_winner(r)
            cells += [fmt_rmse(r[f"rmse_{f}"], f == best, 4) for f in families]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Family with the lowest mean RMSE per bucket",
        "",
        "| bucket | images | " + " | ".join(config_name(c) for c in CONFIGURATIONS) + " |",
        "|---|---|" + "---|" * len(CONFIGURATIONS),
    ]
    for i, row in enumerate(buckets[SOURCE]):
        winners = [bucket_winner(buckets[c][i]) for c in CONFIGURATIONS]
        lines.append(f"| {row['bucket']} | {row['n_images']:,} | "
                     + " | ".join(LABELS[w] if w else "–" for w in winners) + " |")
    ours = (DEFAULT_METHOD, DEFAULT_PMF)
    same = [row["bucket"] for i, row in enumerate(buckets[SOURCE][:-1])
            if row["n_images"] and bucket_winner(row) == bucket_winner(buckets[ours][i])]
    lines += [
        "",
        f"The source work's configuration and ours agree on the winner in {len(same)} of the "
        f"{sum(1 for r in buckets[SOURCE][:-1] if r['n_images'])} non-empty buckets"
        + (f" ({', '.join(same)})" if same else "") + ".",
        "",
        *which_pmf_lines(fits, buckets),
    ]
    return lines


def which_pmf_lines(fits: dict[Config, FitResult], buckets: dict[Config, list[dict]]) -> list[str]:
    """'Which pmf and why': the measured effect of the pmf under each method, and the default."""
    def overall(c: Config, f: str) -> float:
        return buckets[c][-1][f"rmse_{f}"]

    sentences = []
    for method in ("moments", "lsq"):
        lower = [f for f in FAMILIES
                 if overall((method, "density"), f) < overall((method, "binned"), f)]
        change = ", ".join(f"{LABELS[f]} {overall((method, 'binned'), f):.5f} → "
                           f"{overall((method, 'density'), f):.5f}" for f in FAMILIES)
        verdict = ("a lower overall RMSE than the binned pmf for every family"
                   if len(lower) == len(FAMILIES) else
                   "a higher overall RMSE than the binned pmf for every family" if not lower else
                   "a lower overall RMSE than the binned pmf for the "
                   + " and the ".join(LABELS[f] for f in lower) + " only")
        off = {p: sum(off_scale(fits[(method, p)], f) for f in FAMILIES) for p in PMFS}
        sentences.append(
            f"With {method}, the density pmf gives {verdict} "
            f"(binned → density: {change}); fits off the scale: {off['binned']:,} binned, "
            f"{off['density']:,} density (all families).")
    return [
        "## Which pmf and why",
        "",
        " ".join(sentences) + " Moments do not fit the pmf, so with moments the pmf only "
        "changes what the same densities are compared with; least squares fits the pmf it is "
        "evaluated with, so the lsq rows compare the two constructions each at its best. The "
        "density pmf is a truncation renormalised over 1..10, so least squares can run a family "
        "to a limit (a Gaussian with a mean far off the scale and a huge sigma is a ramp over "
        "1..10) to follow a histogram that rises to an end of the scale; 'off the scale' counts "
        "such fits, whose parameters no longer describe a distribution of scores. The binned "
        "pmf's open end bins give the tails beyond the scale to 1 and 10 instead, so a spike "
        "on an end bin needs no runaway parameters. "
        f"Default: **{DEFAULT_PMF}**, because "
        f"{DEFAULT_PMF_REASON}.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Time every fitting method on the full real AVA label set and write a markdown report.",
        f"The default method ({DEFAULT_METHOD}) must fit all images, three families, in under "
        f"{SPEED_TARGET_S:.0f} s.")
    p.add_argument("--ava-dir", default=str(REAL_AVA), metavar="DIR|s3://...",
                   help=f"AVA package holding AVA.txt (default {REAL_AVA})")
    p.add_argument("--doc", default="docs/benchmark_fit_distributions.md",
                   help="report to write (default docs/benchmark_fit_distributions.md)")
    args = p.parse_args(argv)
    _cli.setup(args)
    ava_txt = storage.join(args.ava_dir, "AVA.txt")
    try:
        storage.check_input(ava_txt)
    except storage.StorageError as err:
        _cli.fail(f"real AVA labels are needed: {err}")
    image_id, votes = votes_from_manifest(read_ava_package(args.ava_dir)[0])
    load = os.getloadavg()[0]

    seconds, cpu, fits = {}, {}, {}  # keyed by (method, pmf); wall and CPU seconds
    for config in [(m, DEFAULT_PMF) for m in METHODS] + [c for c in CONFIGURATIONS
                                                           if c[1] != DEFAULT_PMF]:
        start, start_cpu = time.perf_counter(), time.process_time()
        fits[config] = fit_all(votes, *config)
        seconds[config] = time.perf_counter() - start
        cpu[config] = time.process_time() - start_cpu
        print(f"{config_name(config)}: {seconds[config]:.1f} s ({cpu[config]:.1f} s CPU)",
              file=sys.stderr)
    default = fits[(DEFAULT_METHOD, DEFAULT_PMF)]
    moments = fits[("moments", DEFAULT_PMF)]
    start = time.perf_counter()
    build_outputs(image_id, votes, default, Timing(0.0, seconds[(DEFAULT_METHOD, DEFAULT_PMF)]),
                  ava_txt)
    outputs_s = time.perf_counter() - start

    n = len(votes)
    buckets = bucket_table(default)
    default_key = (DEFAULT_METHOD, DEFAULT_PMF)
    default_s = seconds[default_key]
    verdict = "meets" if default_s < SPEED_TARGET_S else "MISSES"
    lines = [
        "# Benchmark: score-distribution fits on the real AVA labels",
        "",
        f"- command: `{shlex.join(['python', '-m', 'benchmarks.fit', *sys.argv[1:]])}`",
        f"- machine: {machine()}; load average {load:.1f} when the run started",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- software: Python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}",
        f"- data: `{ava_txt}`, {n:,} images",
        "",
        f"## Seconds per method (all three families, single process, {DEFAULT_PMF} pmf)",
        "",
        "| method | seconds | CPU seconds | images/s | " + " | ".join(
            f"overall RMSE {LABELS[f]}" for f in FAMILIES) + " |",
        "|---|---|---|---|" + "---|" * len(FAMILIES),
    ]
    for method in METHODS:
        c = (method, DEFAULT_PMF)
        rmse = " | ".join(f"{fits[c].rmse[f].mean():.5f}" for f in FAMILIES)
        lines.append(f"| {method} | {seconds[c]:.1f} | {cpu[c]:.1f} | {n / seconds[c]:,.0f} | "
                     f"{rmse} |")
    lines += [
        "",
        f"Default method **{DEFAULT_METHOD}**: {default_s:.1f} s, which {verdict} the "
        f"{SPEED_TARGET_S:.0f} s target on the wall clock with the load average at {load:.1f} "
        f"on {os.cpu_count()} cores; its CPU time, which other processes inflate far less, is "
        f"{cpu[default_key]:.1f} s. Building the tables, report and plots of the "
        f"default fit takes another {outputs_s:.1f} s. Why {DEFAULT_METHOD}: "
        f"{DEFAULT_METHOD_REASON}. Against moments, {DEFAULT_METHOD} lowers the overall mean "
        "RMSE by " + ", ".join(
            f"{1 - default.rmse[f].mean() / moments.rmse[f].mean():.0%} ({LABELS[f]})"
            for f in FAMILIES) + ".",
        "",
        f"## Mean RMSE by mean-score bucket ({DEFAULT_METHOD}, {DEFAULT_PMF} pmf)",
        "",
        bucket_markdown(buckets, default),
        "",
        BUCKET_TABLE_NOTE,
        "",
        winners_summary(buckets),
        "",
        "Votes are the rounded latent score with everything beyond the scale on 1 or 10 (see "
        "`apm/votes/distributions.py`), so a family whose unbounded tail crosses the near end of the "
        "scale can reproduce the spike of 1s or 10s that many AVA histograms have.",
        "",
        *comparison_lines(fits, seconds),
    ]
    storage.write_text(args.doc, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
