"""python -m jobs.pipeline: the whole system end to end, from photos to a report.

Stages run in order; a stage whose outputs already exist is skipped (``--force`` redoes all).
``--preset demo`` renders a small synthetic AVA and runs everything on a local Ray; ``--preset
ava`` takes a real AVA copy (``--ava-dir``, ``--images``) and, usually, a cluster.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace

from ray.train import TrainingFailedError

from apm.core import storage
from apm.core.runtime import init_ray
from apm.pipeline import HEADLINE_FILE, PRESETS, STAGES, Settings
from apm.reporting.headline import Figure
from apm.training.trainer import describe_failure
from apm.votes.distributions import DEFAULT_METHOD, METHODS
from jobs import _cli

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
