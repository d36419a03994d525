"""python -m jobs.pipeline: the whole system end to end on a local Ray and a local work folder.

Stages run in order; a stage whose outputs already exist is skipped (``--force`` redoes all).
Later parts of the system add their stages to ``STAGES``.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from apm import storage
from apm.clustering.kmeans import KMeansConfig
from apm.clustering.stage import ClusterConfig, run_clustering
from apm.distributions import DEFAULT_METHOD, METHODS
from apm.evaluation import EvaluationConfig, run_evaluation
from apm.fit_report import run as fit_distributions
from apm.manifest import MANIFEST_FILE, build_manifest
from apm.runtime import init_ray
from apm.scoring import ScoreConfig, run_score
from apm.synthetic.dataset import SyntheticConfig, generate
from apm.teacher_inference import TeacherJobConfig, run_teacher
from apm.training.data import training_rows
from apm.training.loop import TrainConfig
from apm.training.trainer import final_state, fit, model_uri
from jobs import _cli


@dataclass(frozen=True)
class Stage:
    name: str
    outputs: tuple[str, ...]  # relative to the work folder; all present -> the stage is done
    run: Callable[[str, argparse.Namespace], list[str]]  # returns summary lines


def _synthetic(work: str, args) -> list[str]:
    config = SyntheticConfig(n=args.n, size=args.size, seed=args.seed)
    return generate(config, storage.join(work, "synthetic")).lines()


def _prepare(work: str, args) -> list[str]:
    synthetic = storage.join(work, "synthetic")
    return build_manifest(synthetic, storage.join(work, "ava"),
                          images=storage.join(synthetic, "images")).lines()


def _fit(work: str, args) -> list[str]:
    summary = fit_distributions(storage.join(work, "ava", MANIFEST_FILE),
                                storage.join(work, "fits"), method=args.fit_method)
    return [f"{key}: {value}" for key, value in summary.items()]


def _teacher(work: str, args) -> list[str]:
    config = TeacherJobConfig(input=storage.join(work, "ava", MANIFEST_FILE),
                              out=storage.join(work, "teacher"))
    return run_teacher(config).lines()


def _train(work: str, args, task: str, init: str, model_file: str) -> list[str]:
    """Train on the train split and keep the final model at a stable path, ``models/NAME``."""
    cfg = TrainConfig(task=task, backbone=args.backbone, init=init, loss="cdloss",
                      epochs=args.train_epochs, image_size=args.train_size,
                      batch_size=16, num_workers=2, cpus_per_worker=0.5)
    rows = training_rows(storage.join(work, "ava", MANIFEST_FILE), "train",
                         storage.join(work, "teacher", "teacher.parquet"))
    runs = storage.join(work, "runs")
    result = fit(cfg, rows, runs, task)
    if result.error:
        raise RuntimeError(f"{task} failed: {result.error}")
    target = storage.join(work, "models", model_file)
    storage.write_bytes(target, storage.read_bytes(model_uri(result, runs)))
    last = final_state(result)["history"][-1]
    return [f"{len(rows)} images, {cfg.epochs} epochs, last loss {last['loss']:.4f}",
            f"model: {target}"]


def _distill(work: str, args) -> list[str]:
    return _train(work, args, "distill", "random", "distilled.pt")


def _finetune(work: str, args) -> list[str]:
    distilled = storage.join(work, "models", "distilled.pt")
    return _train(work, args, "finetune", f"checkpoint:{distilled}", "finetuned.pt")


def _evaluate(work: str, args) -> list[str]:
    models = tuple(storage.join(work, "models", f) for f in ("distilled.pt", "finetuned.pt"))
    config = EvaluationConfig(manifest=storage.join(work, "ava", MANIFEST_FILE), models=models,
                              out=storage.join(work, "eval"), variants=("distilled", "finetuned"),
                              truth=storage.join(work, "synthetic", "truth.parquet"),
                              image_size=args.train_size)
    return run_evaluation(config).lines()


def _score(work: str, args) -> list[str]:
    config = ScoreConfig(input=storage.join(work, "synthetic", "images"),
                         out=storage.join(work, "scores"),
                         model=storage.join(work, "models", "finetuned.pt"),
                         image_size=args.train_size, overwrite=args.force)
    return run_score(config).lines()


def _cluster(work: str, args) -> list[str]:
    config = ClusterConfig(scores=storage.join(work, "scores"), out=storage.join(work, "clusters"),
                           kmeans=KMeansConfig(k=args.clusters),
                           truth=storage.join(work, "synthetic", "truth.parquet"))
    return run_clustering(config).lines()


STAGES: tuple[Stage, ...] = (
    Stage("synthetic", ("synthetic/AVA.txt", "synthetic/truth.parquet"), _synthetic),
    Stage("prepare", (f"ava/{MANIFEST_FILE}",), _prepare),
    Stage("fit_distributions", ("fits/per_image.parquet", "fits/bucket_rmse.parquet",
                                "fits/report.md"), _fit),
    Stage("teacher", ("teacher/teacher.parquet",), _teacher),
    Stage("distill", ("models/distilled.pt",), _distill),
    Stage("finetune", ("models/finetuned.pt",), _finetune),
    Stage("evaluate", ("eval/metrics.parquet", "eval/metrics.md"), _evaluate),
    Stage("score", ("scores/_job.json", "scores/_listing/_SUCCESS.json"), _score),
    Stage("cluster", ("clusters/clusters.parquet", "clusters/report.md"), _cluster),
)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Run every stage on a small synthetic AVA: make it, prepare the manifest, fit the "
        "score distributions, compute the ImageNet teacher's softmax, distil it into a student, "
        "fine-tune the student for score distributions, evaluate both, score every photo "
        "with the fine-tuned model and cluster the scores. Prints where each output is.",
        "stages: " + ", ".join(s.name for s in STAGES))
    p.add_argument("--work", default="work", metavar="DIR|s3://...",
                   help="work folder for every stage's outputs (default ./work)")
    p.add_argument("--n", type=int, default=500, help="synthetic images (default 500)")
    p.add_argument("--size", type=int, default=256, help="synthetic image long side (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help=f"how score distributions are fitted (default {DEFAULT_METHOD})")
    p.add_argument("--backbone", default="resnet18", help="student backbone (default resnet18)")
    p.add_argument("--train-size", type=int, default=128,
                   help="training crop size in pixels (default 128)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs per training stage")
    p.add_argument("--clusters", type=int, default=10,
                   help="k of the semantic clusters (default 10, the synthetic categories)")
    p.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    p.add_argument("--until", choices=[s.name for s in STAGES], default=STAGES[-1].name,
                   help="last stage to run (default: all)")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    args.work = storage.normalize(args.work)
    try:
        storage.check_output(args.work)
    except storage.StorageError as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    last = [s.name for s in STAGES].index(args.until)
    for stage in STAGES[:last + 1]:
        outputs = [storage.join(args.work, o) for o in stage.outputs]
        if not args.force and all(storage.exists(o) for o in outputs):
            print(f"[{stage.name}] skipped: outputs exist ({', '.join(outputs)})")
            continue
        start = time.perf_counter()
        lines = stage.run(args.work, args)
        print(f"[{stage.name}] done in {time.perf_counter() - start:.1f} s")
        print("\n".join("    " + line for line in lines))
    print("outputs:")
    for stage in STAGES[:last + 1]:
        print(f"  {stage.name}: " + ", ".join(storage.join(args.work, o) for o in stage.outputs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
