"""python -m jobs.explain: adversarial heatmaps -> OUT/explanations.parquet and PNG panels."""
from __future__ import annotations

import argparse
from dataclasses import replace

from apm.core import storage
from apm.core.precision import DEVICES
from apm.core.runtime import init_ray
from apm.explain import (
    DIRECTIONS,
    NORMS,
    SELECTIONS,
    AttackConfig,
    ExplainConfig,
    HeatmapConfig,
    Selection,
    run_explain,
)
from apm.models import ModelSpec, list_backbones
from jobs import _cli

EPILOG = f"""\
How: each photo is decoded and centre-cropped exactly as for scoring (--image-size; default
the crop the checkpoint was trained at, else 224) and scored by scoring's predictor. Projected
gradient descent (--steps of --step-size, default 2.5 * budget / steps) changes the crop's
pixels, in [0, 1], within a ball of radius --budget, keeping it a valid image, to lower or
raise the model's predicted mean score (the model in eval mode, at --precision, gradients
with respect to the pixels only). --norm l2 (default): the change's Euclidean length over the whole
crop is at most B and each step follows the gradient, so the change gathers where the score is
sensitive. --norm linf: every channel of every pixel changes by at most B (e.g. 8/255), with
signed steps that move nearly every pixel by B, so its heatmap is nearly flat. --tv-weight adds
a total-variation penalty for smoother changes. The heatmap is the per-pixel size of the change
(L2 over the channels), smoothed by a Gaussian of sigma = --smooth x the crop side and divided
by its maximum (so in [0, 1]). The peak region is the connected area around the maximum where
the heatmap is >= --peak-threshold; peak_bbox is its box in crop pixels (x0, y0, x1, y1, the
last two exclusive), like the heatmap itself.

Input: a folder or s3:// prefix of photos (listed like jobs.score does, into OUT/_listing) or a
manifest .parquet; or the output folder of jobs.score (it holds scores/): then only rows with
status ok are explained, and --select lowest|highest picks the photos with the lowest or
highest predicted mean. --sample N keeps N photos (--select first|random|lowest|highest).

Output (schema in README.md): OUT/explanations.parquet, one row per photo and direction
(--direction both: lower, then raise): score_before, score_after, delta = after - before,
budget, the perturbation's size, peak_bbox and the PNGs, named by the photo's position ROW
among the chosen photos (the table's order): OUT/heatmaps/ROW-DIRECTION.png (8-bit
grayscale) and OUT/panels/ROW-DIRECTION.png (original | modified | heatmap overlay, with the
scores; --no-panels skips them). A photo that cannot be read, decoded or written is an error
row with the reason, never a failed job. An existing table is replaced only with --overwrite.

Model: an APM checkpoint (path or s3:// URI) or random:ARCH; architectures:
{', '.join(list_backbones())}.
On GPUs (--device cuda) one actor per GPU, photos decoded by CPU tasks; on CPUs one actor per
core. A summary ends the run: photos and rows, ok / error by reason, the score changes per
direction, photos/s, where the outputs are.

example:
  python -m jobs.explain --input work/scores --select lowest --sample 20 \\
      --model work/models/finetuned.pt --image-size 128 --direction both --budget 2 \\
      --steps 10 --out work/explain
"""


def budget(text: str) -> float:
    """A number, or a fraction such as 8/255."""
    top, slash, bottom = text.partition("/")
    try:
        return float(top) / float(bottom) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Explain APM scores: perturb photos within a budget to lower or raise their "
                    "predicted mean score, and show where they changed.", EPILOG)
    p.add_argument("--input", required=True, metavar="DIR|s3://prefix|MANIFEST|SCORES_OUT",
                   help="photos, a manifest .parquet, or the output folder of jobs.score")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--model", required=True, metavar="CKPT|random:ARCH",
                   help="APM checkpoint path / URI, or random:ARCH")
    p.add_argument("--direction", default="both", choices=[*DIRECTIONS, "both"],
                   help="lower or raise the score, or both (default)")
    p.add_argument("--budget", type=budget, required=True, metavar="B",
                   help="radius of the perturbation ball, pixels in [0, 1]: e.g. 1.0 for l2 at "
                        "64 px, 8/255 for linf")
    p.add_argument("--norm", default="l2", choices=NORMS, help="the ball's norm (default l2)")
    p.add_argument("--steps", type=int, default=10, help="gradient steps (default 10)")
    p.add_argument("--step-size", type=budget, metavar="S",
                   help="per step (default 2.5 * budget / steps)")
    p.add_argument("--tv-weight", type=float, default=0.0,
                   help="weight of the total-variation penalty on the change (default 0)")
    p.add_argument("--smooth", type=float, default=0.02,
                   help="heatmap Gaussian sigma as a fraction of the crop side (default 0.02)")
    p.add_argument("--peak-threshold", type=float, default=0.5,
                   help="peak region: heatmap >= this (default 0.5)")
    p.add_argument("--sample", type=int, metavar="N", help="explain at most N photos")
    p.add_argument("--select", default="first", choices=SELECTIONS,
                   help="which N: first, random, lowest / highest mean (scores input)")
    p.add_argument("--seed", type=int, default=0, help="for --select random (default 0)")
    p.add_argument("--no-panels", action="store_true", help="write heatmaps only, no panels")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the model runs")
    _cli.add_precision_arg(p)
    p.add_argument("--image-size", type=int,
                   help="crop size (default: the one the checkpoint was trained at, else 224)")
    p.add_argument("--batch-size", type=int, default=16, help="photos per batch (default 16)")
    p.add_argument("--concurrency", type=int,
                   help="actors (default: one per GPU with cuda, else one per CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    _cli.add_image_limit_args(p)
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = ExplainConfig(
            input=args.input, out=args.out, model=args.model, direction=args.direction,
            attack=AttackConfig(budget=args.budget, steps=args.steps, norm=args.norm,
                                step_size=args.step_size, tv_weight=args.tv_weight),
            heatmap=HeatmapConfig(smooth=args.smooth, peak_threshold=args.peak_threshold),
            selection=Selection(sample=args.sample, select=args.select, seed=args.seed),
            panels=not args.no_panels, device=args.device, precision=args.precision,
            image_size=args.image_size,
            batch_size=args.batch_size, concurrency=args.concurrency,
            limits=_cli.image_limits(args), overwrite=args.overwrite)
        storage.check_input(args.input)
        # Read once, here: a bad model stops the job with one line, before Ray.
        config = replace(config, model=ModelSpec.resolve(args.model))
        storage.check_output(args.out)
    except (ValueError, storage.StorageError) as err:  # CheckpointError is a ValueError
        _cli.fail(str(err))
    init_ray(args.ray_address)
    try:
        summary = run_explain(config)
    except (ValueError, storage.StorageError) as err:  # a table exists, nothing to explain
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
