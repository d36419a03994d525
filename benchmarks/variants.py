"""python -m benchmarks.variants: the paper's variant table on a synthetic AVA.

Murray & Gordo 2017 compare a mean-regression baseline with the distribution head trained with
the Euclidean, KL and CDF losses. This job trains each of the four from three starts on the
same backbone as the ImageNet teacher (EfficientNet-Lite0):

``scratch``       random weights;
``distilled``     a student distilled here from random weights towards the teacher's softmax;
``teacher-init``  the teacher's own ImageNet weights.

A distilled student has been trained for more epochs than a scratch one, so one control,
``kl / scratch-long``, trains from random weights for as many epochs as distillation and
fine-tuning together: it tells the teacher's knowledge apart from the extra training.

Stages, each skipped when its outputs exist in the work folder (a rerun after a crash goes on
where it stopped; an interrupted training resumes from its last epoch's checkpoint): the
synthetic AVA, its manifest and the teacher's softmax (the stages of :mod:`apm.pipeline`),
distillation, twelve fine-tunings with one recipe (same epochs, batch, learning rate and crop),
one evaluation of the twelve on the test split. Then it writes the report (default
``docs/benchmark_variants.md``) with the command, the machine and the date.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pyarrow.compute as pc
import torch

from apm import pipeline
from apm.core import storage
from apm.core.runtime import init_ray
from apm.data.manifest import MANIFEST_FILE
from apm.models import APM, read_checkpoint, save_checkpoint
from apm.stages.evaluation import METRIC_HEADERS, EvaluationConfig, plot_scatter, run_evaluation
from apm.training.data import training_rows
from apm.training.loop import TrainConfig
from apm.training.losses import distillation_kl, get_loss
from apm.training.trainer import final_state, fit, model_uri
from apm.votes.baselines import CONSTANT, train_mean_histogram
from apm.votes.fit_report import votes_from_manifest
from apm.votes.metrics import OVERALL, evaluate
from benchmarks._common import machine
from jobs import _cli

#: The teacher's architecture, so that ``teacher-init`` means the teacher's own weights.
BACKBONE = "efficientnet_lite0"
LOSS_NAMES = ("mse_mean", "euclidean", "kl", "cdloss")  # the paper's order; mse_mean = baseline
INITS = ("scratch", "distilled", "teacher-init")
#: The control: random weights, trained for the distillation's epochs plus the fine-tuning's.
CONTROL = "scratch-long"
#: Distilled students, one per aesthetic head (``apm.models.HEADS``).
DISTILLED = {"distribution": "distilled.pt", "mean": "distilled_mean.pt"}
#: Spearman differences below this count as ties: one training run per variant, so the
#: seed-to-seed spread is not measured, and the test split is 1000 images.
TIE = 0.02
STAGE_LOG = "stages.json"  # per stage run: seconds, and the 1-min load average after it


@dataclass(frozen=True)
class Variant:
    loss: str
    init: str  # one of INITS

    @property
    def name(self) -> str:
        return f"{self.loss}-{self.init}"

    @property
    def label(self) -> str:
        return f"{self.loss} / {self.init}"

    def init_spec(self, work: str) -> str:
        """The ``TrainConfig.init`` of this variant."""
        if self.init in ("scratch", CONTROL):
            return "random"
        if self.init == "teacher-init":
            return "teacher"
        return "checkpoint:" + storage.join(work, "models", DISTILLED[get_loss(self.loss).head])

    def epochs(self, args) -> int:
        return args.epochs + (args.distill_epochs if self.init == CONTROL else 0)


VARIANTS = tuple(Variant(loss, init) for loss in LOSS_NAMES for init in INITS)
CONTROL_VARIANT = Variant("kl", CONTROL)
EVALUATED = (*VARIANTS, CONTROL_VARIANT)


def _paths(work: str) -> dict[str, str]:
    return {"manifest": storage.join(work, "ava", MANIFEST_FILE),
            "teacher": storage.join(work, "teacher", "teacher.parquet"),
            "truth": storage.join(work, "synthetic", "truth.parquet"),
            "eval": storage.join(work, "eval")}


def _train(work: str, args, name: str, task: str, loss: str, init: str, epochs: int) -> list[str]:
    """Train on the train split; keep the model at ``models/NAME.pt``, its history beside it."""
    cfg = TrainConfig(task=task, backbone=BACKBONE, init=init, loss=loss, epochs=epochs,
                      batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                      num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker)
    paths = _paths(work)
    rows = training_rows(paths["manifest"], "train", paths["teacher"] if cfg.needs_teacher else None)
    runs = storage.join(work, "runs")
    result = fit(cfg, rows, runs, name)
    if result.error:
        raise RuntimeError(f"{name} failed: {result.error}")
    history = final_state(result)["history"]
    storage.write_text(storage.join(work, "models", f"{name}.json"), json.dumps(history))
    target = storage.join(work, "models", f"{name}.pt")
    storage.write_bytes(target, storage.read_bytes(model_uri(result, runs)))
    return [f"{rows.num_rows} images, init {init}, loss per epoch "
            + ", ".join(f"{h['loss']:.4f}" for h in history)
            + f"; {history[-1]['images_per_s'] * cfg.num_workers:.1f} images/s", f"model: {target}"]


def _distill(work: str, args) -> list[str]:
    """Distil a random student, then give a copy of it the mean head for the baseline.

    Distillation never trains the aesthetic head (it is frozen), so swapping a fresh mean head
    in is exactly what distilling a mean-head student would give, with the same backbone.
    """
    lines = _train(work, args, "distilled", "distill", "kl", "random", args.distill_epochs)
    config, state = read_checkpoint(storage.join(work, "models", DISTILLED["distribution"]))
    model = APM(replace(config, head="mean"))
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("aesthetic_head.")}, strict=False)
    if unexpected or any(not k.startswith("aesthetic_head.") for k in missing):
        raise RuntimeError(f"distilled checkpoint does not fit: {missing=}, {unexpected=}")
    target = storage.join(work, "models", DISTILLED["mean"])
    save_checkpoint(model, target)
    return [*lines, f"mean-head copy: {target}"]


def _finetune(work: str, args, variant: Variant) -> list[str]:
    return _train(work, args, variant.name, "finetune", variant.loss, variant.init_spec(work),
                  variant.epochs(args))


def _evaluate(work: str, args) -> list[str]:
    paths = _paths(work)
    config = EvaluationConfig(
        manifest=paths["manifest"], out=paths["eval"], truth=paths["truth"],
        models=tuple(storage.join(work, "models", f"{v.name}.pt") for v in EVALUATED),
        variants=tuple(v.label for v in EVALUATED), image_size=args.image_size)
    return run_evaluation(config).lines()


STAGES: tuple[pipeline.Stage, ...] = (
    *(s for s in pipeline.STAGES if s.name in ("synthetic", "prepare", "teacher")),
    pipeline.Stage("distill", tuple(f"models/{f}" for f in DISTILLED.values()), _distill),
    *(pipeline.Stage(v.name, (f"models/{v.name}.pt",), partial(_finetune, variant=v))
      for v in EVALUATED),
    pipeline.Stage("evaluate", ("eval/metrics.parquet", "eval/predictions.parquet"), _evaluate),
)


# --- the report -----------------------------------------------------------------------------

def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _read_json(uri: str):
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else {}


def _constant_baselines(manifest: str, overall: dict[str, dict]) -> dict[str, dict]:
    """What a model must beat on the test split: the evaluation's constant predictor (the
    train split's mean histogram, :mod:`apm.votes.baselines`) and, for the mean-regression variant,
    the train split's mean score."""
    table = storage.read_table(manifest)
    test = votes_from_manifest(table.filter(pc.equal(table["split"], "test")))[1]
    mean_score = float(train_mean_histogram(manifest) @ np.arange(1, 11))
    return {CONSTANT: overall[CONSTANT],
            f"constant: train mean score ({mean_score:.2f})":
            evaluate(test, pred_mean=np.full(len(test), mean_score))[0]}


def _teacher_facts(teacher_uri: str) -> dict:
    """What the teacher's softmax holds: its mean top-1 probability, its distinct top-1 classes
    (the commonest three), and the distillation loss of two students that ignore the image."""
    table = storage.read_table(teacher_uri, columns=["status", "probs", "top5_names", "top5_probs"])
    table = table.filter(pc.equal(table["status"], "ok"))
    top1 = Counter(names[0] for names in table["top5_names"].to_pylist())
    logits = torch.from_numpy(np.stack(table["probs"].to_numpy(zero_copy_only=False))).clamp_min(1e-8).log()
    t = TrainConfig.temperature  # the distillation's (the stage keeps the default)
    # The best image-independent student predicts the mean of the softened teacher.
    mean_student = t * torch.softmax(logits / t, -1).mean(0).log().expand_as(logits)
    return {"p1": float(np.mean([p[0] for p in table["top5_probs"].to_pylist()])),
            "classes": len(top1),
            "common": ", ".join(f"{name} {n / table.num_rows:.0%}" for name, n in top1.most_common(3)),
            "kl_uniform": float(distillation_kl(torch.zeros_like(logits), logits, t, teacher_is_logits=True)),
            "kl_mean": float(distillation_kl(mean_student, logits, t, teacher_is_logits=True))}


def _rho(row: dict) -> float:
    """Spearman ρ, with NaN (the model gives every photo the same score) counted as 0."""
    return 0.0 if np.isnan(row["spearman"]) else row["spearman"]


def _compare(overall: dict[str, dict], better: str, worse: str) -> tuple[str, int, int]:
    """``better`` against ``worse`` across the four losses by Spearman ρ: text, wins, defeats."""
    deltas = [_rho(overall[Variant(loss, better).label]) - _rho(overall[Variant(loss, worse).label])
              for loss in LOSS_NAMES]
    wins = [loss for loss, d in zip(LOSS_NAMES, deltas) if d >= TIE]
    defeats = [loss for loss, d in zip(LOSS_NAMES, deltas) if d <= -TIE]

    def which(names: list[str]) -> str:
        return f" ({', '.join(names)})" if names else ""

    text = (f"**{better} vs {worse}**: better on {len(wins)} of {len(LOSS_NAMES)} losses"
            f"{which(wins)}, worse on {len(defeats)}{which(defeats)}, tied on "
            f"{len(LOSS_NAMES) - len(wins) - len(defeats)}; mean Δρ = {np.mean(deltas):+.3f} "
            f"(per loss: {', '.join(f'{loss} {d:+.3f}' for loss, d in zip(LOSS_NAMES, deltas))}).")
    return text, len(wins), len(defeats)


def _matrix(overall: dict[str, dict], key: str) -> list[str]:
    lines = ["| loss \\ init | " + " | ".join(INITS) + " |", "|---|" + "---|" * len(INITS)]
    for loss in LOSS_NAMES:
        lines.append(f"| {loss} | " + " | ".join(_num(overall[Variant(loss, i).label][key])
                                                for i in INITS) + " |")
    return lines


def _setup(args, splits: Counter, distill_kl: list[float], teacher: dict, loads: list[float]) -> list[str]:
    cores = os.cpu_count()
    return [
        f"- command: `{shlex.join(['python', '-m', 'benchmarks.variants', *sys.argv[1:]])}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}; torch {torch.__version__}",
        f"- load: 1-min load average after each stage {min(loads):.1f}–{max(loads):.1f}, mean "
        f"{np.mean(loads):.1f}, on {cores} cores (above {cores}: other jobs shared the machine, "
        "and times and images/s are lower than on an idle one)",
        f"- dataset: synthetic AVA (`apm.data.synthetic`, seed {args.seed}) of {sum(splits.values())} "
        f"images, {args.size} px long side; train {splits['train']}, test {splits['test']}",
        "- teacher: EfficientNet-Lite0 with its real ImageNet weights, softmax on 224-px centre "
        "crops of the renders (`apm.stages.teacher`)",
        f"- distillation: a random-init {BACKBONE} student learns the teacher's softmax through "
        f"its semantic head (KL, temperature {TrainConfig.temperature:g}) on the train split, "
        f"{_plural(args.distill_epochs, 'epoch')}; its training loss per epoch: "
        f"{', '.join(f'{v:.3f}' for v in distill_kl)} (a uniform student scores "
        f"{teacher['kl_uniform']:.3f}, one that outputs the teacher's mean softmax for every "
        f"image {teacher['kl_mean']:.3f})",
        f"- fine-tuning, identical for the 12 variants: {BACKBONE}, {args.image_size}-px random "
        f"crops + flips, {_plural(args.epochs, 'epoch')}, AdamW lr {args.lr:g} (weight decay "
        f"1e-4), batch {args.batch_size} × {args.num_workers} Ray Train workers (DDP, gloo, "
        f"{args.cpus_per_worker:g} CPU each; Ray Data decodes on the rest); the semantic head "
        f"is frozen (semantic weight 0). The control {CONTROL_VARIANT.label} has the same recipe "
        f"with {_plural(CONTROL_VARIANT.epochs(args), 'epoch')}, as many as distillation plus "
        "fine-tuning. One run per variant (no seeds averaged).",
        f"- evaluation: `apm.stages.evaluation.run_evaluation` on the test split, {args.image_size}-px "
        "centre crops",
    ]


def _results(overall: dict, constants: dict, seconds: dict, rates: dict, best: Variant) -> list[str]:
    def minutes(name: str) -> str:
        return f"{seconds.get(name, float('nan')) / 60:.1f} min"

    keys = list(METRIC_HEADERS)
    lines = [
        "Train time is the wall time of the variant's Ray Train run (start-up, ingest and "
        "epochs); images/s over both workers, mean of the epochs. ρ = nan: the model gives "
        "every photo the same score (counted as 0 in the verdict). The constant rows use no "
        "image: they show what a model must beat to have learned anything.",
        "",
        "| variant | " + " | ".join(METRIC_HEADERS.values()) + " | train time | images/s |",
        "|---|" + "---|" * (len(keys) + 2),
    ]
    for name, row in constants.items():
        lines.append(f"| {name} | " + " | ".join(_num(row[k]) for k in keys) + " | — | — |")
    for v in EVALUATED:
        label = f"**{v.label}**" if v == best else v.label
        lines.append(f"| {label} | " + " | ".join(_num(overall[v.label][k]) for k in keys)
                     + f" | {minutes(v.name)} | {rates[v.name]} |")
    total = sum(seconds.get(v.name, 0.0) for v in VARIANTS) / 60
    return [*lines, "", f"Fine-tuning took {total:.0f} min for the 12 variants; the control "
            f"{minutes(CONTROL_VARIANT.name)}; distillation {minutes('distill')}; teacher softmax "
            f"{minutes('teacher')}; evaluation {minutes('evaluate')}.",
            "", "### Spearman ρ: loss × init", "", *_matrix(overall, "spearman"),
            "", "### MSE of the mean score: loss × init", "", *_matrix(overall, "mse")]


def _verdict(args, overall: dict, constant_mse: float, best: Variant, splits: Counter,
             distill_kl: list[float], teacher: dict) -> list[str]:
    distilled_text, wins, defeats = _compare(overall, "distilled", "scratch")
    teacher_text, *_ = _compare(overall, "teacher-init", "scratch")
    teacher_vs_distilled, teacher_wins, _ = _compare(overall, "teacher-init", "distilled")
    control_rho = _rho(overall[CONTROL_VARIANT.label])
    distilled_rho = _rho(overall[Variant(CONTROL_VARIANT.loss, "distilled").label])
    control = (f"{CONTROL_VARIANT.loss} / distilled ρ = {distilled_rho:.3f} against "
               f"{control_rho:.3f} for {CONTROL_VARIANT.label}, Δρ = {distilled_rho - control_rho:+.3f}")
    if wins >= 3 and distilled_rho - control_rho >= TIE:
        answer = (f"**Yes**: the distilled start beats training from scratch on {wins} of "
                  f"{len(LOSS_NAMES)} losses, and also beats the control trained from scratch "
                  f"for as many epochs in total ({control}): the teacher's softmax, not only the "
                  "extra passes over the images, helps.")
    elif wins >= 3:
        answer = (f"**Only as extra training**: the distilled start beats scratch with the same "
                  f"fine-tuning on {wins} of {len(LOSS_NAMES)} losses, but not the control trained "
                  f"from scratch for as many epochs in total ({control}): what helps is the extra "
                  "training, not the teacher's knowledge.")
    elif defeats > wins:
        answer = "**No**: the distilled start does worse than training from scratch."
    else:
        answer = (f"**No measurable help**: the distilled start does not beat training from "
                  f"scratch by ρ ≥ {TIE} on at least three of the {len(LOSS_NAMES)} losses.")
    scratch = [overall[Variant(loss, "scratch").label] for loss in LOSS_NAMES]
    best_row = overall[best.label]
    return [
        f"Does distillation help? {answer}", "",
        f"By Spearman ρ, differences under {TIE} counted as ties:", "",
        f"- {distilled_text}",
        f"- **distilled vs equal training**: {control}.",
        f"- {teacher_text}",
        f"- {teacher_vs_distilled}",
        f"- Best variant by ρ: **{best.label}**, ρ = {best_row['spearman']:.3f}, MSE "
        f"{best_row['mse']:.3f} against {constant_mse:.3f} for the constant train mean "
        f"(R² = {1 - best_row['mse'] / constant_mse:.2f}).",
        "", "Why, and how far this is from the paper's setting:", "",
        f"- From random weights, {_plural(args.epochs, 'epoch')} of fine-tuning barely move a "
        f"model: the scratch variants reach ρ {min(map(_rho, scratch)):.3f} to "
        f"{max(map(_rho, scratch)):.3f} and MSE {min(r['mse'] for r in scratch):.3f} to "
        f"{max(r['mse'] for r in scratch):.3f} (constant: {constant_mse:.3f}). Any start that "
        "already has features is ahead; the control measures how much of the distilled start's "
        "lead the extra epochs alone buy.",
        f"- The teacher sees cartoon renders of {args.size} px upscaled to 224 px, not photos: "
        f"its mean top-1 probability is {teacher['p1']:.2f}, over {teacher['classes']} distinct "
        f"top-1 classes (commonest: {teacher['common']}). What its softmax says about these "
        "images is all that distillation can pass on.",
        f"- The student is distilled from random weights for {_plural(args.distill_epochs, 'epoch')} "
        f"over {splits['train']} images at {args.image_size} px. Its loss ends at "
        f"{distill_kl[-1]:.3f}, {1 - distill_kl[-1] / teacher['kl_mean']:.0%} below the "
        f"{teacher['kl_mean']:.3f} of a student that ignores the image: it has learned only a "
        "part of what the teacher tells images apart by. The paper distils on full-size photos "
        "with far more data and time.",
        "- The synthetic aesthetic truth is made of photographic attributes (blur, exposure, "
        "contrast, saturation, harmony, noise, tilt, composition; `apm/data/synthetic/attributes.py`) "
        "that a classification teacher is not trained to keep; teacher-init transfers the "
        "ImageNet features themselves (edges, textures, colour), "
        + ("and is the stronger start here." if teacher_wins >= 3 else
           "yet here it does not clearly beat the distilled start either."),
        f"- One run per variant: gaps under ρ {TIE} are within what a different seed could change.",
    ]


def _per_category(metrics: list[dict], splits: Counter) -> list[str]:
    rows = {(r["variant"], r["category"]): r for r in metrics}
    lines = ["Per category (synthetic truth), Spearman ρ of the paper's loss (KL) for each init, "
             f"about {splits['test'] // 10} test images each:", "",
             "| category | " + " | ".join(INITS) + " |", "|---|" + "---|" * len(INITS)]
    for category in sorted({r["category"] for r in metrics} - {OVERALL}):
        lines.append(f"| {category} | " + " | ".join(
            _num(rows[(Variant("kl", i).label, category)]["spearman"]) for i in INITS) + " |")
    return lines


def _write_scatter(eval_uri: str, path: str) -> None:
    """The library's scatter plot for the KL loss's three inits."""
    predictions = storage.read_table(storage.join(eval_uri, "predictions.parquet"))
    shown = pc.cast([Variant("kl", i).label for i in INITS], "string")
    storage.write_bytes(path, plot_scatter(predictions.filter(pc.is_in(predictions["variant"],
                                                                       value_set=shown))))


def report(work: str, args) -> str:
    """The markdown report; also writes the scatter plot beside ``args.doc``."""
    paths = _paths(work)
    metrics = storage.read_table(storage.join(paths["eval"], "metrics.parquet")).to_pylist()
    overall = {r["variant"]: r for r in metrics if r["category"] == OVERALL}
    stages = _read_json(storage.join(work, STAGE_LOG))
    seconds = {name: s["seconds"] for name, s in stages.items()}
    histories = {v.name: _read_json(storage.join(work, "models", f"{v.name}.json")) for v in EVALUATED}
    rates = {name: f"{np.mean([e['images_per_s'] for e in h]) * args.num_workers:.0f}" if h else "—"
             for name, h in histories.items()}
    distill_kl = [h["loss"] for h in _read_json(storage.join(work, "models", "distilled.json"))]
    splits = Counter(storage.read_table(paths["manifest"], columns=["split"])["split"].to_pylist())
    constants = _constant_baselines(paths["manifest"], overall)
    constant_mse = list(constants.values())[-1]["mse"]
    teacher = _teacher_facts(paths["teacher"])
    best = max(EVALUATED, key=lambda v: _rho(overall[v.label]))
    scatter = os.path.splitext(args.doc)[0] + "_scatter.png"
    _write_scatter(paths["eval"], scatter)
    lines = [
        "# APM variants: loss × initialisation on a synthetic AVA", "",
        *_setup(args, splits, distill_kl, teacher, [s["load"] for s in stages.values()]), "",
        "## Results (test split)", "",
        *_results(overall, constants, seconds, rates, best), "",
        "## Verdict", "",
        *_verdict(args, overall, constant_mse, best, splits, distill_kl, teacher), "",
        *_per_category(metrics, splits), "",
        f"![predicted vs true mean score, KL loss, three inits]({os.path.basename(scatter)})", "",
        f"Full per-category tables of all {len(EVALUATED)} models: `WORK/eval/metrics.md`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Train the paper's variants on a synthetic AVA and write the comparison: mean "
        "regression (mse_mean) and the distribution head with the euclidean, kl and cdloss "
        "losses, each from scratch, from a distilled student and from the teacher's ImageNet "
        "weights; all evaluated on the test split. Writes a markdown report.",
        "stages: " + ", ".join(s.name for s in STAGES) + ", then the report. A stage whose "
        "outputs exist in --work is skipped, so a rerun continues after a crash; delete the "
        "folder (or one model in WORK/models) to redo, and rerun with the same options: the "
        "report describes the options it is given. The defaults took 82 min on 2 shared CPU "
        "cores: 15 for the teacher's softmax, 4 for distillation, 3-6 per fine-tuning (8 for the "
        "control), 4 for the evaluation.")
    p.add_argument("--work", default="work/variants", metavar="DIR|s3://...",
                   help="work folder (default work/variants)")
    p.add_argument("--n", type=int, default=10000, help="synthetic images (default 10000)")
    p.add_argument("--size", type=int, default=96, help="synthetic image long side (default 96)")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed (default 0)")
    p.add_argument("--image-size", type=int, default=64,
                   help="training and evaluation crop in pixels (default 64)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default 2)")
    p.add_argument("--distill-epochs", type=int, default=2, help="distillation epochs (default 2)")
    p.add_argument("--batch-size", type=int, default=32, help="per worker (default 32)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW learning rate of every training run (default 1e-3)")
    p.add_argument("--num-workers", type=int, default=2, help="Ray Train workers (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=0.5,
                   help="CPUs each worker reserves; the rest decode (default 0.5)")
    p.add_argument("--doc", default="docs/benchmark_variants.md",
                   help="report to write; the scatter plot goes beside it as NAME_scatter.png")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    work = args.work = storage.normalize(args.work)
    try:
        storage.check_output(work)
    except storage.StorageError as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    started = time.perf_counter()
    log_uri = storage.join(work, STAGE_LOG)
    for i, stage in enumerate(STAGES, 1):
        outputs = [storage.join(work, o) for o in stage.outputs]
        if all(storage.exists(o) for o in outputs):
            print(f"[{i}/{len(STAGES)} {stage.name}] skipped: outputs exist", flush=True)
            continue
        start = time.perf_counter()
        lines = stage.run(work, args)
        seconds = time.perf_counter() - start
        entry = {"seconds": seconds, "load": os.getloadavg()[0]}
        storage.write_text(log_uri, json.dumps({**_read_json(log_uri), stage.name: entry}))
        print(f"[{i}/{len(STAGES)} {stage.name}] done in {seconds:.1f} s", flush=True)
        print("\n".join("    " + line for line in lines), flush=True)
    text = report(work, args)
    os.makedirs(os.path.dirname(args.doc) or ".", exist_ok=True)
    with open(args.doc, "w") as f:
        f.write(text)
    print(text)
    print(f"report: {args.doc}; this run took {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
