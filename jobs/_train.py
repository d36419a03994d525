"""The command line shared by jobs.distill and jobs.finetune."""
from __future__ import annotations

import argparse
import time

from apm.core import storage
from apm.core.runtime import init_ray
from apm.models import list_backbones, list_inits
from apm.training.data import training_rows
from apm.training.loop import TrainConfig, initial_model
from apm.training.losses import LOSSES
from apm.training.trainer import final_state, fit, model_uri
from jobs import _cli


def parser(description: str, epilog: str) -> argparse.ArgumentParser:
    p = _cli.parser(description, epilog)
    p.add_argument("--manifest", required=True, metavar="PATH|s3://...",
                   help="manifest.parquet from jobs.prepare_ava (photos must have a uri)")
    p.add_argument("--split", default="train", help="manifest split to train on (default train)")
    p.add_argument("--teacher", metavar="PATH|s3://...",
                   help="teacher.parquet from jobs.teacher_softmax (soft ImageNet targets)")
    p.add_argument("--storage", required=True, metavar="DIR|s3://...",
                   help="where checkpoints and metrics go (RUN NAME below it)")
    p.add_argument("--name", required=True,
                   help="run name; rerunning the same name resumes (with more --epochs: trains on), "
                        "and is refused if other settings differ")
    p.add_argument("--force", action="store_true",
                   help="start the run over: remove the checkpoints of --name first")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=list_backbones())
    p.add_argument("--init", default="teacher",
                   help=f"initial weights: {', '.join(list_inits())} (default teacher)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="per worker (default 32)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    _cli.add_image_limit_args(p)
    _cli.add_ray_train_args(p)
    _cli.add_precision_arg(p)
    return p


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss", default="kl", choices=sorted(LOSSES),
                   help="kl, cdloss (r=2 CDF distance), euclidean; mse_mean trains the "
                        "mean-regression baseline (one output)")
    p.add_argument("--semantic-weight", type=float, default=0.0,
                   help="weight of KL(teacher || semantic head), keeps semantics (needs --teacher)")


def run(args: argparse.Namespace, task: str) -> int:
    _cli.setup(args)
    limits = _cli.image_limits(args)
    loss = getattr(args, "loss", "kl")
    try:
        cfg = TrainConfig(
            task=task, backbone=args.backbone, init=args.init, loss=loss,
            semantic_weight=getattr(args, "semantic_weight", 0.0), temperature=args.temperature,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            image_size=args.image_size, num_workers=args.num_workers,
            cpus_per_worker=args.cpus_per_worker,
            use_gpu=args.device == "cuda", precision=args.precision)
        storage.check_input(args.manifest)
        if args.teacher:
            storage.check_input(args.teacher)
        storage.check_output(args.storage)
        initial_model(cfg)  # a bad --init (missing, foreign, another architecture): one line here
        teacher = args.teacher if cfg.needs_teacher else None
        data = {"manifest": storage.normalize(args.manifest), "split": args.split,
                "teacher": teacher and storage.normalize(teacher)}
        init_ray(args.ray_address)
        rows = training_rows(args.manifest, args.split, teacher)
    except (ValueError, storage.StorageError) as err:
        _cli.fail(str(err))
    started = time.perf_counter()
    result = _cli.train_or_fail(fit, cfg, rows, args.storage, args.name,
                                max_failures=args.max_failures, limits=limits, data=data,
                                force=args.force)
    state = final_state(result)
    for metrics in state["history"]:
        print("epoch {epoch}: loss {loss:.4f}, {images} images, {images_per_s:.1f} images/s "
              "(rank 0)".format(**metrics))
    print(f"{task} done in {time.perf_counter() - started:.1f} s; {rows.num_rows} training images")
    print(f"model: {model_uri(result, args.storage)}")
    return 0
