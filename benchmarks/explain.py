"""python -m benchmarks.explain: adversarial explanations on a synthetic AVA (docs/).

On random test photos of a synthetic AVA and a trained APM, runs the explanation job in both
directions once per budget (by default an L2 sweep and one L∞ budget; lowering and raising
always get the same budget and steps), and measures

(a) how far the predicted mean score can be lowered and how far raised: both distributions,
    their quantiles and ratio, with histograms;
(b) concentration: the share of each heatmap's mass inside the photo's true subject mask,
    against the share of the crop the mask covers (what a uniform heatmap would get). The mask
    goes through the same resize and centre crop as the photo
    (:meth:`apm.models.transforms.ImageTransform.crop_image`).

The model is by default a checkpoint of ``benchmarks.variants`` (EfficientNet-Lite0 at 64 px
crops) on its synthetic AVA; when that file does not exist, a small one is fine-tuned here from
the teacher's ImageNet weights with :mod:`apm.training` and the report says so.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import shlex
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from matplotlib.figure import Figure
from PIL import Image

from apm.core import storage
from apm.core.precision import DEVICES
from apm.core.rows import STATUS_OK
from apm.core.runtime import init_ray
from apm.explain import (
    DIRECTIONS,
    NORMS,
    TABLE_FILE,
    AttackConfig,
    ExplainConfig,
    ExplainSummary,
    mass_inside,
    run_explain,
)
from apm.models import check_model_spec
from apm.models.spec import ModelSpec
from apm.models.transforms import image_transform
from apm.training.data import training_rows
from apm.training.loop import TrainConfig
from apm.training.trainer import fit, model_uri
from apm.votes.fit_report import png_bytes
from benchmarks._common import machine
from jobs import _cli
from jobs.explain import budget as parse_budget

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: One run each: an L2 sweep from small (no photo near the model's score range ends) to large
#: (most photos pushed to them), and the smallest change an 8-bit image can hold, in L-infinity.
DEFAULT_BUDGETS = ("l2:0.02", "l2:0.1", "l2:0.5", "linf:1/255")


@dataclass
class Run:
    """One explanation run (one norm) and what was measured on it."""

    config: ExplainConfig
    summary: ExplainSummary
    rows: list[dict]  # the ok rows of explanations.parquet
    concentration: list[dict]  # per ok row: direction, inside, share, peak_inside

    @property
    def label(self) -> str:
        attack = self.config.attack
        radius = f"{attack.budget * 255:g}/255" if attack.norm == "linf" else f"{attack.budget:g}"
        return f"{attack.norm} {radius}"

    def changes(self, direction: str) -> np.ndarray:
        """|score change| of the photos, for ``direction``."""
        return np.array([abs(r["delta"]) for r in self.rows if r["direction"] == direction])

    def placed(self, direction: str) -> tuple[np.ndarray, np.ndarray, float]:
        """Mask shares, heat mass inside the masks, share of peaks inside, for ``direction``."""
        pts = [c for c in self.concentration
               if c["direction"] == direction and np.isfinite(c["inside"])]
        return (np.array([c["share"] for c in pts]), np.array([c["inside"] for c in pts]),
                float(np.mean([c["peak_inside"] for c in pts])))

    def moved(self, direction: str) -> float:
        """Share of the photos whose score moved the asked way."""
        return float(np.mean([np.sign(r["delta"]) == DIRECTIONS[direction]
                              for r in self.rows if r["direction"] == direction]))


def norm_budget(text: str) -> tuple[str, float]:
    """``NORM:B`` -> (norm, budget), e.g. ``linf:1/255``."""
    norm, colon, radius = text.partition(":")
    if not colon or norm not in NORMS:
        raise argparse.ArgumentTypeError(f"expected NORM:B with NORM one of {', '.join(NORMS)}, "
                                         f"got {text!r}")
    return norm, parse_budget(radius)


def _train_model(args, target: str) -> str:
    """Fine-tune a small APM (cdloss, teacher init) when no trained checkpoint is given."""
    cfg = TrainConfig(task="finetune", backbone="efficientnet_lite0", init="teacher",
                      loss="cdloss", epochs=args.train_epochs, image_size=args.image_size,
                      batch_size=32, num_workers=2, cpus_per_worker=0.5)
    rows = training_rows(args.manifest, "train").slice(0, args.train_images)
    runs = storage.join(args.work, "runs")
    result = fit(cfg, rows, runs, "explain-model")
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    storage.write_bytes(target, storage.read_bytes(model_uri(result, runs)))
    return (f"trained here (no {args.model}): EfficientNet-Lite0 from the teacher's ImageNet "
            f"weights, cdloss, {rows.num_rows} train photos, {cfg.epochs} epochs, "
            f"{args.image_size} px crops")


def _test_photos(args) -> pa.Table:
    """``n`` random test photos of the synthetic AVA, with their masks."""
    truth = storage.read_table(storage.join(args.synthetic, "truth.parquet"))
    test = truth.filter(pc.equal(truth["split"], "test"))
    pick = np.sort(np.random.default_rng(args.seed).permutation(test.num_rows)[:args.n])
    chosen = test.take(pa.array(pick))
    return pa.table({"uri": chosen["image_uri"], "image_id": chosen["image_id"],
                     "mask_uri": chosen["mask_uri"]})


def _concentration(rows: list[dict], masks: dict[str, str], image_size: int, backbone: str
                   ) -> list[dict]:
    """Per row: heat mass inside the mask, the mask's share of the crop, peak in the mask."""
    transform = image_transform(backbone, image_size)
    out = []
    for row in rows:
        with Image.open(io.BytesIO(storage.read_bytes(masks[row["uri"]]))) as mask_image:
            mask = transform.crop_image(mask_image.convert("RGB"))[..., 0] >= 128
        with Image.open(io.BytesIO(storage.read_bytes(row["heatmap_uri"]))) as heat_image:
            heat = np.asarray(heat_image, dtype=np.float64) / 255
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        out.append({"direction": row["direction"], "inside": mass_inside(heat, mask),
                    "share": float(mask.mean()), "peak_inside": bool(mask[y, x])})
    return out


def _explain(args, model: str, inputs: str, masks: dict[str, str], attack: AttackConfig) -> Run:
    out = storage.join(args.work, f"explain-{attack.norm}-{attack.budget:.6g}")
    config = ExplainConfig(input=inputs, out=out, model=model, attack=attack, device=args.device,
                           image_size=args.image_size, overwrite=True)
    summary = run_explain(config)
    print("\n".join(summary.lines()), flush=True)
    rows = [r for r in storage.read_table(config.uri(TABLE_FILE)).to_pylist()
            if r["status"] == STATUS_OK]
    backbone = check_model_spec(model).backbone
    return Run(config, summary, rows, _concentration(rows, masks, args.image_size, backbone))


# --- figures --------------------------------------------------------------------------------

def _figure(runs: list[Run]) -> bytes:
    fig = Figure(figsize=(11, 4.2 * len(runs)), layout="constrained")
    for (left, right), run in zip(fig.subplots(len(runs), 2, squeeze=False), runs):
        changes = {d: run.changes(d) for d in DIRECTIONS}
        bins = np.linspace(0, max(float(v.max()) for v in changes.values()), 31)
        for direction, values in changes.items():
            left.hist(values, bins=bins, alpha=0.6,
                      label=f"{direction} (median {np.median(values):.2f})")
        left.set_xlabel("|change of the predicted mean score|")
        left.set_ylabel("photos")
        left.set_title(f"(a) how far the score moves, {run.label}")
        left.legend()
        for direction, marker in zip(DIRECTIONS, ("o", "^")):
            pts = [c for c in run.concentration if c["direction"] == direction]
            right.scatter([c["share"] for c in pts], [c["inside"] for c in pts], s=10,
                          alpha=0.6, marker=marker, label=direction)
        top = min(1.0, 1.1 * max(max(c["share"], c["inside"]) for c in run.concentration))
        right.plot([0, top], [0, top], color="gray", linewidth=1, label="uniform heatmap")
        right.set(xlim=(0, top), ylim=(0, top), xlabel="subject mask's share of the crop",
                  ylabel="share of heatmap mass inside the mask")
        right.set_title(f"(b) concentration on the subject, {run.label}")
        right.legend()
    return png_bytes(fig)


def _pad_concat(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Stack RGB images along ``axis`` (0: one below the other), padding with white."""
    other = 1 - axis
    size = max(i.shape[other] for i in images)
    padded = []
    for image in images:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, size - image.shape[other])
        padded.append(np.pad(image, pad, constant_values=255))
    return np.concatenate(padded, axis=axis)


def _examples(runs: list[Run]) -> bytes:
    """The first photo's panels: one row per run, lowering left of raising."""
    rows = []
    for run in runs:
        panels = [np.asarray(Image.open(io.BytesIO(storage.read_bytes(r["panel_uri"])))
                             .convert("RGB")) for r in run.rows[:2]]
        rows.append(_pad_concat(panels, axis=1))
    buffer = io.BytesIO()
    Image.fromarray(_pad_concat(rows, axis=0)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- report ---------------------------------------------------------------------------------

def _quantile_row(run: Run, direction: str) -> str:
    values = run.changes(direction)
    qs = " | ".join(f"{q:.3f}" for q in np.quantile(values, QUANTILES))
    after = np.array([r["score_after"] for r in run.rows if r["direction"] == direction])
    return (f"| {run.label} | {direction} | {len(values)} | {values.mean():.3f} | {qs} | "
            f"{100 * run.moved(direction):.0f}% | {np.median(after):.2f} "
            f"({after.min():.2f}..{after.max():.2f}) |")


def _ratio_line(run: Run) -> str:
    lower, raised = run.changes("lower"), run.changes("raise")
    before = np.array([r["score_before"] for r in run.rows if r["direction"] == "lower"])
    with_lower, with_raise = (np.corrcoef(before, v)[0, 1] for v in (lower, raised))
    return (f"- **{run.label}**: ratio of medians lowering / raising "
            f"**{np.median(lower) / np.median(raised):.2f}**, of means "
            f"{lower.mean() / raised.mean():.2f}; lowering moved further than raising for "
            f"{100 * np.mean(lower > raised):.0f}% of the photos (median per-photo ratio "
            f"{np.median(lower / raised):.2f}); correlation of the score before with |lowering| "
            f"{with_lower:+.2f}, with raising {with_raise:+.2f}")


def _concentration_row(run: Run, direction: str) -> str:
    share, inside, peak = run.placed(direction)
    return (f"| {run.label} | {direction} | {len(share)} | {np.median(share):.3f} | "
            f"{np.median(inside):.3f} | {np.median(inside / share):.2f} | "
            f"{100 * np.mean(inside > share):.0f}% | {100 * peak:.0f}% (mean mask share "
            f"{100 * share.mean():.0f}%) |")


def _summary(runs: list[Run]) -> list[str]:
    """The headline ranges over the runs, computed from them."""
    ratios = {run.label: np.median(run.changes("lower")) / np.median(run.changes("raise"))
              for run in runs}
    further = [np.mean(run.changes("lower") > run.changes("raise")) for run in runs]
    placed = [run.placed(d) for run in runs for d in DIRECTIONS]
    concentration = [np.median(inside / share) for share, inside, _ in placed]
    peaks = [peak for _, _, peak in placed]
    low, high = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
    return [
        f"- Lowering vs raising, ratio of the median score changes: {ratios[low]:.2f} ({low}) "
        f"to {ratios[high]:.2f} ({high}); lowering went further for "
        f"{100 * min(further):.0f}-{100 * max(further):.0f}% of the photos.",
        f"- Heat mass inside the subject mask over the mask's share of the crop, median per "
        f"budget and direction: {min(concentration):.2f}-{max(concentration):.2f} (1: no "
        f"concentration); the heatmap's peak lies inside the mask for "
        f"{100 * min(peaks):.0f}-{100 * max(peaks):.0f}% of the photos, against a mean mask "
        f"share of {100 * placed[0][0].mean():.0f}% of the crop.",
    ]


def report(args, model: str, model_line: str, runs: list[Run], figure: str, examples: str) -> str:
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.explain",
                                                 *sys.argv[1:]])
    first = runs[0]
    before = np.array([r["score_before"] for r in first.rows if r["direction"] == "lower"])
    lines = [
        "# Adversarial explanations: lowering vs raising, and where the changes go",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}; CPU only, shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end)",
        f"- date: {dt.date.today().isoformat()}; torch {torch.__version__}",
        f"- model: `{model}` ({ModelSpec.resolve(model).id}); {model_line}",
        f"- photos: {len(before)} random test photos of the synthetic AVA `{args.synthetic}` "
        f"(seed {args.seed}), {args.image_size} px centre crops; predicted mean before: median "
        f"{np.median(before):.2f}, range {before.min():.2f}..{before.max():.2f}",
        f"- explanations: `jobs.explain --direction both --steps {args.steps}` (step size "
        f"2.5 x budget / steps, no TV prior, heatmap sigma {first.config.heatmap.smooth} x "
        "crop side, panels on), once per budget:",
    ]
    for run in runs:
        s = run.summary
        lines.append(f"  - {run.label}: {s.rows} rows ({s.rows - s.ok} error) in {s.seconds:.0f} s, "
                     f"{s.images / s.seconds:.2f} photos/s for both directions")
    lines += [
        "",
        "## Summary",
        "",
        *_summary(runs),
        "",
        "## (a) How far the mean score moves, same budget and steps",
        "",
        "|score change| on the 1..10 scale:",
        "",
        "| budget | direction | photos | mean | "
        + " | ".join(f"q{int(q * 100):02d}" for q in QUANTILES)
        + " | moved the asked way | score after: median (range) |",
        "|---|---|---|---|" + "---|" * len(QUANTILES) + "---|---|",
        *(_quantile_row(run, d) for run in runs for d in DIRECTIONS),
        "",
        *(_ratio_line(run) for run in runs),
        "",
        f"![lower vs raise and concentration]({figure})",
        "",
        "## (b) Concentration of the heatmap on the true subject",
        "",
        "The subject mask (`masks/ID.png`) goes through the photo's resize and centre crop. A "
        "heatmap spread uniformly over the crop would put the mask's share of the crop inside "
        "the mask (ratio 1); more means the changes concentrate on the subject.",
        "",
        "| budget | direction | photos | mask share of the crop (median) | heat mass inside "
        "the mask (median) | median ratio mass / share | photos with mass > share | heatmap "
        "peak inside the mask |",
        "|---|---|---|---|---|---|---|---|",
        *(_concentration_row(run, d) for run in runs for d in DIRECTIONS),
        "",
        "## Reading the numbers",
        "",
        "- Scores are the model's on the float crop; the panels show it rounded to 8 bits.",
        "- The last column of (a) shows where the scores end. When a budget pushes most photos "
        "to about the same score after, it has reached the ends of the range the model can "
        "output, and how far a photo moves then mostly says how far its score was from that "
        "end; the small budgets measure the model's sensitivity around each photo instead.",
        "- Signed L-infinity steps move almost every pixel by the whole budget, so an "
        "L-infinity heatmap is nearly flat by construction and its concentration stays near 1; "
        "the L2 heatmaps follow the gradient's size.",
        "- In this synthetic AVA most of the aesthetic truth is global (blur, exposure, "
        "contrast, saturation, colour harmony, noise, tilt; `apm/data/synthetic/aesthetics.py`); "
        "only subject placement and clutter are local. A model that learned it has no reason to "
        "change only the subject.",
        "",
        "## Examples",
        "",
        "Panels of the job (`OUT/panels/`) for the first photo: lowering left, raising right, "
        "one row per budget (top to bottom: "
        + ", ".join(run.label for run in runs) + "); the box is `peak_bbox`.",
        "",
        f"![example panels]({examples})",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Benchmark the explanations on a synthetic AVA: with one budget and number of steps, "
        "how far the predicted mean score can be lowered vs raised, and how much of each "
        "heatmap's mass falls on the true subject; one run per --budget. Writes a markdown "
        "report and two figures.",
        "The defaults use benchmarks.variants' outputs in work/variants (its synthetic AVA "
        "and a checkpoint); without the checkpoint a small model is fine-tuned here first. "
        "About 8 min for the default 100 photos and 4 budgets on 2 shared CPU cores.")
    p.add_argument("--synthetic", default="work/variants/synthetic",
                   help="synthetic AVA with truth.parquet and masks (default work/variants/synthetic)")
    p.add_argument("--model", default="work/variants/models/cdloss-teacher-init.pt",
                   help="trained APM checkpoint (default: benchmark_variants' cdloss / teacher-init)")
    p.add_argument("--manifest", default="work/variants/ava/manifest.parquet",
                   help="without --model's file: train on this manifest's train split")
    p.add_argument("--train-images", type=int, default=2000,
                   help="without --model's file: train photos (default 2000)")
    p.add_argument("--train-epochs", type=int, default=2,
                   help="without --model's file: epochs (default 2)")
    p.add_argument("--n", type=int, default=100, help="test photos to explain (default 100)")
    p.add_argument("--seed", type=int, default=0, help="which test photos (default 0)")
    p.add_argument("--image-size", type=int, default=64, help="the model's crop (default 64)")
    p.add_argument("--budget", type=norm_budget, action="append", metavar="NORM:B",
                   help="one run per budget, e.g. l2:0.1 or linf:1/255 (pixels in [0, 1]); "
                        f"default: {' '.join(DEFAULT_BUDGETS)}")
    p.add_argument("--steps", type=int, default=10, help="gradient steps (default 10)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the model runs")
    p.add_argument("--work", default="work/explain-bench", help="outputs of the runs")
    p.add_argument("--doc", default="docs/benchmark_explain.md",
                   help="report; its figures go beside it as NAME.png and NAME_panels.png")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        attacks = [AttackConfig(budget=radius, steps=args.steps, norm=norm)
                   for norm, radius in args.budget or map(norm_budget, DEFAULT_BUDGETS)]
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        storage.check_input(args.synthetic)
        storage.check_output(args.work)
    except (ValueError, storage.StorageError) as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    model = args.model
    if storage.exists(model):
        model_line = "trained by `benchmarks.variants`"
    else:
        model = storage.join(args.work, "model.pt")
        model_line = _train_model(args, model)
    photos = _test_photos(args)
    inputs = storage.join(args.work, "photos.parquet")
    storage.write_table(photos.select(["uri", "image_id"]), inputs)
    masks = dict(zip(photos["uri"].to_pylist(), photos["mask_uri"].to_pylist()))
    runs = [_explain(args, model, inputs, masks, attack) for attack in attacks]
    stem = os.path.splitext(args.doc)[0]
    figure, examples = f"{stem}.png", f"{stem}_panels.png"
    with open(figure, "wb") as f:
        f.write(_figure(runs))
    with open(examples, "wb") as f:
        f.write(_examples(runs))
    text = report(args, model, model_line, runs, os.path.basename(figure),
                  os.path.basename(examples))
    with open(args.doc, "w") as f:
        f.write(text)
    print(text)
    print(f"report: {args.doc}, figures: {figure}, {examples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
