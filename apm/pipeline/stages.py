"""The pipeline's stages, from photos to a report: each a function of the settings that
returns its summary lines, and the outputs whose presence means it is done.

The one place of ``apm`` that uses :mod:`pfagan` (the GAN stages of the demo).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from apm.clustering.kmeans import KMeansConfig
from apm.clustering.stage import ClusterConfig, run_clustering
from apm.core import storage
from apm.data.manifest import MANIFEST_FILE, build_manifest
from apm.data.synthetic.dataset import SyntheticConfig, generate
from apm.explain import AttackConfig, ExplainConfig, Selection, run_explain
from apm.pipeline.settings import PRESETS, Settings
from apm.reporting.headline import condition_table, headline_figures
from apm.reporting.report import Report, Section, first_markdown_table, plot_score_histogram, score_means
from apm.stages.evaluation import EvaluationConfig, run_evaluation
from apm.stages.scoring import ScoreConfig, run_score
from apm.stages.teacher import TeacherJobConfig, run_teacher
from apm.training.data import training_rows
from apm.training.loop import TrainConfig
from apm.training.trainer import final_state, fit, model_uri
from apm.votes.fit_report import run as fit_distributions
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
