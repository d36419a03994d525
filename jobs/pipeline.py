"""python -m jobs.pipeline: the whole system end to end, from photos to a report.

Stages run in order; a stage whose outputs already exist is skipped (``--force`` redoes all).
``--preset demo`` renders a small synthetic AVA and runs everything on a local Ray; ``--preset
ava`` takes a real AVA copy (``--ava-dir``, ``--images``) and, usually, a cluster.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
from ray.train import TrainingFailedError

from apm import storage
from apm.clustering.kmeans import KMeansConfig
from apm.clustering.stage import ClusterConfig, run_clustering
from apm.distributions import DEFAULT_METHOD, METHODS
from apm.evaluation import EvaluationConfig, run_evaluation
from apm.explain import AttackConfig, ExplainConfig, Selection, run_explain
from apm.fit_report import run as fit_distributions
from apm.headline import Figure, condition_table, headline_figures
from apm.manifest import MANIFEST_FILE, build_manifest
from apm.report import Report, Section, first_markdown_table, plot_score_histogram, score_means
from apm.runtime import init_ray
from apm.scoring import ScoreConfig, run_score
from apm.synthetic.dataset import SyntheticConfig, generate
from apm.teacher_inference import TeacherJobConfig, run_teacher
from apm.training.data import training_rows
from apm.training.loop import TrainConfig
from apm.training.trainer import describe_failure, final_state, fit, model_uri
from jobs import _cli
from pfagan.checkpoint import load_generator
from pfagan.config import GANConfig
from pfagan.data import ConditioningSource, load_conditioning
from pfagan.evaluation import classifier_on_real_photos
from pfagan.generation import GenerateConfig, run_generate
from pfagan.judges import APMJudge
from pfagan.sampling import histogram_for_mean
from pfagan.training import fit as fit_gan
from pfagan.training import generator_uri


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; a preset gives the defaults, options override them."""

    preset: str
    work: str
    ava_dir: str | None = None  # ava: the AVA package (AVA.txt, tags, challenges, lists)
    images: str | None = None  # ava: the photos
    n: int = 2000  # demo: synthetic photos
    size: int = 128  # demo: their long side
    test_fraction: float = 0.25  # demo: share of photos in the test split
    seed: int = 0
    fit_method: str = DEFAULT_METHOD
    backbone: str = "efficientnet_lite0"
    teacher_size: int | None = 128  # the teacher's crop (the photos are 128 px); None: its own 224
    init: str = "teacher"  # the student's start: ImageNet weights (apm.models.list_inits)
    train_size: int = 96
    distill_epochs: int = 1
    train_epochs: int = 3  # fine-tuning
    train_lr: float = 2e-3  # peak of the one-cycle schedule
    # Fine-tuning keeps the semantic head learning the teacher (the paper's joint loss), so
    # the shared features stay semantic: the clusters are made of them.
    semantic_weight: float = 0.2
    train_workers: int = 2
    device: str = "cpu"
    clusters: int = 10
    explain_sample: int = 8
    # L2 radius of the edit in [0, 1] pixel units: 1 at a 96-px crop is an RMS change of 0.6%
    # of the range per pixel (1.5/255), enough to move a trained model, too small to see.
    explain_budget: float = 1.0
    gan_resolution: int = 32
    # The GAN gets what is left of the 8 minutes: in so few steps no width learns the
    # conditions (docs/benchmark_demo.md), so the narrow, cheap one with small batches.
    gan_channels: int = 16
    gan_batch_size: int = 16  # per worker
    gan_epochs: int = 2
    gan_means: tuple[float, ...] = (3.0, 5.0, 7.0)
    force: bool = False

    @property
    def synthetic(self) -> bool:
        return self.preset == "demo"

    def uri(self, *parts: str) -> str:
        return storage.join(self.work, *parts)

    @property
    def manifest(self) -> str:
        return self.uri("ava", MANIFEST_FILE)

    @property
    def truth(self) -> str | None:
        return self.uri("synthetic", "truth.parquet") if self.synthetic else None

    @property
    def photos(self) -> str:
        return self.uri("synthetic", "images") if self.synthetic else self.images


PRESETS: dict[str, dict] = {
    # 2 cores, under 8 minutes: a small synthetic AVA at low resolution, a student that starts
    # from the ImageNet weights, short one-cycle training (docs/benchmark_demo.md).
    "demo": {},
    # A real AVA copy on a GPU cluster: the paper's crop, more epochs.
    "ava": {"teacher_size": None, "train_size": 224, "distill_epochs": 2, "train_epochs": 10,
            "train_lr": 1e-3, "train_workers": 4, "device": "cuda", "explain_sample": 32,
            "explain_budget": 2.3, "gan_resolution": 64, "gan_channels": 64, "gan_batch_size": 32,
            "gan_epochs": 50,
            "gan_means": (3.0, 4.0, 5.0, 6.0, 7.0)},
}


@dataclass(frozen=True)
class Stage:
    name: str
    outputs: tuple[str, ...]  # relative to the work folder; all present -> the stage is done
    run: Callable[[Settings], list[str]]  # returns summary lines
    presets: tuple[str, ...] = tuple(PRESETS)


def _synthetic(s: Settings) -> list[str]:
    config = SyntheticConfig(n=s.n, size=s.size, seed=s.seed, test_fraction=s.test_fraction)
    return generate(config, s.uri("synthetic")).lines()


def _prepare(s: Settings) -> list[str]:
    ava_dir = s.uri("synthetic") if s.synthetic else s.ava_dir
    return build_manifest(ava_dir, s.uri("ava"), images=s.photos).lines()


def _fit(s: Settings) -> list[str]:
    summary = fit_distributions(s.manifest, s.uri("fits"), method=s.fit_method)
    return [f"{key}: {value}" for key, value in summary.items()]


def _teacher(s: Settings) -> list[str]:
    return run_teacher(TeacherJobConfig(input=s.manifest, out=s.uri("teacher"), device=s.device,
                                        image_size=s.teacher_size)).lines()


def _run_name(s: Settings, name: str) -> str:
    """A run per model and preset; with --force the earlier run goes, so training starts over
    instead of resuming from its last checkpoint."""
    run = f"{name}-{s.preset}"
    if s.force:
        storage.remove(s.uri("runs", run), recursive=True)
    return run


def _train(s: Settings, task: str, init: str, epochs: int, model_file: str) -> list[str]:
    """Train on the train split and keep the final model at a stable path, ``models/NAME``."""
    cfg = TrainConfig(task=task, backbone=s.backbone, init=init, loss="kl", epochs=epochs,
                      lr=s.train_lr, image_size=s.train_size, batch_size=32, seed=s.seed,
                      semantic_weight=s.semantic_weight if task == "finetune" else 0.0,
                      num_workers=s.train_workers, use_gpu=s.device == "cuda",
                      cpus_per_worker=0.5 if s.device == "cpu" else 2.0)
    rows = training_rows(s.manifest, "train",
                         s.uri("teacher", "teacher.parquet") if cfg.needs_teacher else None)
    result = fit(cfg, rows, s.uri("runs"), _run_name(s, task))
    if result.error:
        raise RuntimeError(f"{task} failed: {result.error}")
    target = s.uri("models", model_file)
    storage.write_bytes(target, storage.read_bytes(model_uri(result, s.uri("runs"))))
    losses = ", ".join(f"{m['loss']:.4f}" for m in final_state(result)["history"])
    what = "KL to the teacher" if task == "distill" else f"{cfg.loss} loss"
    return [f"{len(rows)} images, {cfg.epochs} epochs from {init.split(':')[0]} weights; "
            f"{what} per epoch: {losses}", f"model: {target}"]


def _distill(s: Settings) -> list[str]:
    return _train(s, "distill", s.init, s.distill_epochs, "distilled.pt")


def _finetune(s: Settings) -> list[str]:
    return _train(s, "finetune", f"checkpoint:{s.uri('models', 'distilled.pt')}", s.train_epochs,
                  "finetuned.pt")


def _evaluate(s: Settings) -> list[str]:
    config = EvaluationConfig(manifest=s.manifest, out=s.uri("eval"),
                              models=(s.uri("models", "distilled.pt"), s.uri("models", "finetuned.pt")),
                              variants=("distilled", "finetuned"), truth=s.truth,
                              image_size=s.train_size, device=s.device)
    return run_evaluation(config).lines()


def _score(s: Settings) -> list[str]:
    config = ScoreConfig(input=s.photos, out=s.uri("scores"), model=s.uri("models", "finetuned.pt"),
                         image_size=s.train_size, device=s.device, overwrite=s.force)
    return run_score(config).lines()


def _cluster(s: Settings) -> list[str]:
    config = ClusterConfig(scores=s.uri("scores"), out=s.uri("clusters"),
                           kmeans=KMeansConfig(k=s.clusters), truth=s.truth)
    return run_clustering(config).lines()


def _explain(s: Settings) -> list[str]:
    config = ExplainConfig(input=s.uri("scores"), out=s.uri("explain"),
                           model=s.uri("models", "finetuned.pt"),
                           attack=AttackConfig(budget=s.explain_budget),
                           selection=Selection(sample=s.explain_sample, select="random", seed=s.seed),
                           image_size=s.train_size, device=s.device, overwrite=True)
    return run_explain(config).lines()


def _conditioning(s: Settings):
    """PFAGAN's train photos and their categories: the synthetic truth, else the clusters of the
    scored collection (the paper's way)."""
    return load_conditioning(
        ConditioningSource(manifest=s.manifest, truth=s.truth) if s.synthetic else
        ConditioningSource(manifest=s.manifest, clusters=s.uri("clusters", "clusters.parquet")))


def _pfagan(s: Settings) -> list[str]:
    conditioning = _conditioning(s)
    cfg = GANConfig(num_categories=len(conditioning.categories), resolution=s.gan_resolution,
                    g_channels=s.gan_channels, d_channels=s.gan_channels, epochs=s.gan_epochs,
                    batch_size=s.gan_batch_size, num_workers=s.train_workers,
                    use_gpu=s.device == "cuda",
                    cpus_per_worker=0.5 if s.device == "cpu" else 2.0, seed=s.seed)
    result = fit_gan(cfg, conditioning, s.uri("runs"), _run_name(s, "pfagan"))
    if result.error:
        raise RuntimeError(f"PFAGAN failed: {result.error}")
    target = s.uri("models", "generator.pt")
    storage.write_bytes(target, storage.read_bytes(generator_uri(result, s.uri("runs"))))
    last = final_state(result)["history"][-1]
    return [f"{conditioning.rows.num_rows} photos, {len(conditioning.categories)} categories, "
            f"{cfg.describe()}, {cfg.epochs} epochs; last D loss {last['d_loss']:.3f}, "
            f"G loss {last['g_loss']:.3f}", f"generator: {target}"]


def _classifier(s: Settings) -> str:
    """A category classifier on the APM's features of (up to CLASSIFIER_PHOTOS) real train
    photos at the GAN's resolution: what judges whether a sample shows the asked category."""
    uri = s.uri("generated", "classifier.pt")
    rows = _conditioning(s).rows
    if rows.num_rows > CLASSIFIER_PHOTOS:
        rows = rows.take(np.sort(np.random.default_rng(s.seed).choice(
            rows.num_rows, CLASSIFIER_PHOTOS, replace=False)))
    categories = load_generator(s.uri("models", "generator.pt")).categories
    judge = APMJudge(s.uri("models", "finetuned.pt"))
    classifier_on_real_photos(judge, rows.column("uri").to_pylist(),
                              rows.column("category_id").to_numpy(), categories,
                              s.gan_resolution).save(uri)
    return uri


CLASSIFIER_PHOTOS = 600


def _generate(s: Settings) -> list[str]:
    config = GenerateConfig(checkpoint=s.uri("models", "generator.pt"), out=s.uri("generated"),
                            histograms=tuple(tuple(histogram_for_mean(m)) for m in s.gan_means),
                            n=GAN_SAMPLES_PER_CELL, apm=s.uri("models", "finetuned.pt"),
                            classifier=_classifier(s), device=s.device)
    return run_generate(config).lines()


GAN_SAMPLES_PER_CELL = 8


def _report(s: Settings) -> list[str]:
    histogram = s.uri("report", "score_histogram.png")
    storage.write_bytes(histogram, plot_score_histogram(score_means(s.uri("scores"))))
    figures = headline_figures(s.work, truth=s.truth)
    storage.write_text(s.uri("report", HEADLINE_FILE),
                       json.dumps([f.to_dict() for f in figures], indent=1) + "\n")
    report = Report(f"Photo aesthetics pipeline ({s.preset})", [
        f"Work folder: `{s.work}`. Each section names the stage's full outputs.", "",
        "## What each part reached", "",
        "Each figure beside what it must beat; ⚠ marks one that does not beat it.", "",
        *[f"- {f.line()}" for f in figures]])
    report.add(Section("Score distributions of the votes", [
        f"Gaussian, Gamma and mirrored-Gamma fits per photo: `{s.uri('fits', 'report.md')}`."],
        [("RMSE of the fits by mean-score bucket", s.uri("fits", "rmse_by_bucket.png")),
         ("Example fits", s.uri("fits", "example_fits.png"))]))
    report.add(Section("APM models on the test split", [
        *first_markdown_table(s.uri("eval", "metrics.md")), "",
        f"Per category and plots: `{s.uri('eval', 'metrics.md')}`."],
        [("Predicted vs true mean score", s.uri("eval", "scatter.png"))]))
    report.add(Section("The scored library", [
        f"Scores of every photo: `{s.uri('scores', 'scores')}`."],
        [("Predicted mean scores of the library", histogram)]))
    clusters = [line for line in storage.read_text(s.uri("clusters", "report.md")).splitlines()
                if "Rand" in line]
    report.add(Section("Semantic clusters", [*clusters, "",
                                             f"All clusters: `{s.uri('clusters', 'report.md')}`."],
                       [(f"Cluster {i}", s.uri("clusters", "sheets", name))
                        for i, name in enumerate(_first_files(s.uri("clusters", "sheets"), 3))]))
    report.add(Section("Where photos would have to change (adversarial heatmaps)", [
        *[f"- {f.line()}" for f in figures if f.key.startswith("explain")], "",
        f"Table and all heatmaps: `{s.uri('explain')}`."],
        [(f"Panel {name}", s.uri("explain", "panels", name))
         for name in _first_files(s.uri("explain", "panels"), 2)]))
    report.add(Section("PFAGAN samples", [
        "What the fine-tuned APM says of the samples drawn for each conditioning mean (a "
        "generator that follows its condition gives higher means to higher conditions):", "",
        *condition_table(s.work), "",
        *[f"- {f.line()}" for f in figures if f.key.startswith("gan")], "",
        f"Generator: `{s.uri('models', 'generator.pt')}`; samples with the APM's scores: "
        f"`{s.uri('generated', 'samples.parquet')}`."],
        [("Category x conditioning mean score", s.uri("generated", "grid.png"))]))
    return [f"report: {report.write(s.uri('report'))}"]


HEADLINE_FILE = "headline.json"


def _first_files(folder: str, n: int) -> list[str]:
    return [info.uri.rsplit("/", 1)[-1] for info in storage.list_files(folder, (".png",))][:n]


STAGES: tuple[Stage, ...] = (
    Stage("synthetic", ("synthetic/AVA.txt", "synthetic/truth.parquet"), _synthetic, ("demo",)),
    Stage("prepare", (f"ava/{MANIFEST_FILE}",), _prepare),
    Stage("fit_distributions", ("fits/per_image.parquet", "fits/bucket_rmse.parquet",
                                "fits/report.md"), _fit),
    Stage("teacher", ("teacher/teacher.parquet",), _teacher),
    Stage("distill", ("models/distilled.pt",), _distill),
    Stage("finetune", ("models/finetuned.pt",), _finetune),
    Stage("evaluate", ("eval/metrics.parquet", "eval/metrics.md"), _evaluate),
    Stage("score", ("scores/_job.json", "scores/_listing/_SUCCESS.json"), _score),
    Stage("cluster", ("clusters/clusters.parquet", "clusters/report.md"), _cluster),
    Stage("explain", ("explain/explanations.parquet",), _explain),
    Stage("pfagan", ("models/generator.pt",), _pfagan),
    Stage("generate", ("generated/samples.parquet", "generated/grid.png"), _generate),
    Stage("report", ("report/report.md",), _report),
)

EPILOG = """\
presets:
  demo  (default) a synthetic AVA of --n 2000 photos at 128 px rendered here (a quarter in the
        test split); the EfficientNet-Lite0 student starts from the ImageNet weights, is
        distilled from the teacher for 1 epoch and fine-tuned for 3 at 96 px; a 32 px PFAGAN;
        a local Ray: under 8 minutes on 2 cores (docs/benchmark_demo.md)
  ava   a real AVA copy: --ava-dir (AVA.txt, tags.txt, challenges.txt, style and split lists)
        and --images (the photos, a folder or s3:// prefix); EfficientNet-Lite0 at 224 px, 2 + 10
        epochs, 4 GPU workers, PFAGAN at 64 px with categories from the clusters; meant for a
        cluster (--ray-address or RAY_ADDRESS, or `ray job submit`)
Options given explicitly override the preset.

stages: """ + ", ".join(s.name for s in STAGES) + """
The last, report, writes WORK/report/report.md with the figures the reader looks at first
(fits, the metrics table, the library's score histogram, cluster sheets, heatmaps, a GAN grid),
each next to its baseline (the constant predictor, chance) and, on synthetic data, the ceiling;
WORK/report/headline.json holds the headline figures, which the run also prints at its end.

examples:
  python -m jobs.pipeline                                   # demo in ./work
  python -m jobs.pipeline --preset ava --ava-dir s3://b/AVA_dataset --images s3://b/images \\
      --work s3://b/pipeline --ray-address auto
"""


def parse_settings(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = _cli.parser("Run every stage, from photos to a report: prepare the data, fit score "
                    "distributions, compute the teacher's softmax, distil and fine-tune the APM, "
                    "evaluate, score the library, cluster it, explain a sample, train PFAGAN, "
                    "generate samples, and write a report.", EPILOG)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--work", default="work", metavar="DIR|s3://...",
                   help="work folder for every stage's outputs (default ./work)")
    p.add_argument("--ava-dir", metavar="DIR|s3://...", help="ava: the AVA package")
    p.add_argument("--images", metavar="DIR|s3://...", help="ava: the photos")
    p.add_argument("--n", type=int, help="demo: synthetic photos (default 2000)")
    p.add_argument("--size", type=int, help="demo: synthetic photo long side (default 128)")
    p.add_argument("--test-fraction", type=float,
                   help="demo: share of the photos in the test split (default 0.25)")
    p.add_argument("--seed", type=int, help="the synthetic data's, the shuffles' and samples' seed")
    p.add_argument("--fit-method", choices=list(METHODS),
                   help=f"how score distributions are fitted (default {DEFAULT_METHOD})")
    p.add_argument("--backbone", help="student backbone (default efficientnet_lite0)")
    p.add_argument("--teacher-size", type=int,
                   help="the teacher's crop in pixels (demo 128; ava: its own 224)")
    p.add_argument("--init", help="the student's start before distillation: teacher (default: "
                                  "the ImageNet weights), random, imagenet:PATH")
    p.add_argument("--train-size", type=int, help="training crop in pixels (demo 96, ava 224)")
    p.add_argument("--distill-epochs", type=int, help="distillation epochs (demo 1, ava 2)")
    p.add_argument("--train-epochs", type=int, help="fine-tuning epochs (demo 3, ava 10)")
    p.add_argument("--train-lr", type=float,
                   help="peak learning rate of the one-cycle schedule (demo 0.002, ava 0.001)")
    p.add_argument("--train-workers", type=int, help="Ray Train workers (demo 2, ava 4)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where models run (demo cpu, ava cuda)")
    p.add_argument("--clusters", type=int, help="k of the semantic clusters (default 10)")
    p.add_argument("--explain-sample", type=int, help="photos to explain (demo 8, ava 32)")
    p.add_argument("--explain-budget", type=float,
                   help="L2 radius of the explanations' edits, pixels in [0, 1] (demo 1, ava 2.3)")
    p.add_argument("--gan-resolution", type=int, choices=[32, 64, 128], help="demo 32, ava 64")
    p.add_argument("--gan-epochs", type=int, help="PFAGAN epochs (demo 2, ava 50)")
    p.add_argument("--semantic-weight", type=float,
                   help="fine-tuning: weight of the distillation loss on the semantic head, "
                        "which keeps the features semantic (default 0.2; 0 freezes the head)")
    p.add_argument("--force", action="store_true", default=None,
                   help="redo stages whose outputs exist")
    p.add_argument("--until", choices=[s.name for s in STAGES], default=STAGES[-1].name,
                   help="last stage to run (default: all)")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    settings = replace(Settings(args.preset, storage.normalize(args.work)), **PRESETS[args.preset])
    given = {f.name: getattr(args, f.name) for f in fields(Settings)
             if f.name not in ("preset", "work") and getattr(args, f.name, None) is not None}
    settings = replace(settings, **given)
    if settings.preset == "ava" and not (settings.ava_dir and settings.images):
        p.error("--preset ava needs --ava-dir and --images")
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv)
    try:
        storage.check_output(settings.work)
        for uri in filter(None, (settings.ava_dir, settings.images)):
            storage.check_input(uri)
    except storage.StorageError as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    names = [s.name for s in STAGES if settings.preset in s.presets]
    if args.until not in names:
        _cli.fail(f"--until {args.until}: preset {settings.preset} has no such stage "
                  f"({', '.join(names)})")
    stages = [s for s in STAGES if s.name in names][:names.index(args.until) + 1]
    started = time.perf_counter()
    for stage in stages:
        outputs = [settings.uri(o) for o in stage.outputs]
        if not settings.force and all(storage.exists(o) for o in outputs):
            print(f"[{stage.name}] skipped: outputs exist ({', '.join(outputs)})")
            continue
        start = time.perf_counter()
        try:
            lines = stage.run(settings)
        except (ValueError, storage.StorageError) as err:  # e.g. a training run of other settings
            _cli.fail(f"[{stage.name}] {err}")
        except TrainingFailedError as err:  # a NaN loss, or crashes beyond --max-failures
            _cli.fail(f"[{stage.name}] {describe_failure(err)}")
        print(f"[{stage.name}] done in {time.perf_counter() - start:.1f} s")
        print("\n".join("    " + line for line in lines), flush=True)
    print(f"pipeline ({settings.preset}) finished in {time.perf_counter() - started:.0f} s")
    headline = settings.uri("report", HEADLINE_FILE)
    if storage.exists(headline):
        print("what each part reached (⚠: not better than its baseline):")
        for figure in json.loads(storage.read_text(headline)):
            print("  " + Figure.from_dict(figure).line())
    print("outputs:")
    for stage in stages:
        print(f"  {stage.name}: " + ", ".join(settings.uri(o) for o in stage.outputs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
