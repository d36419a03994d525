"""python -m jobs.finetune: train APM to predict score distributions (or the mean score)."""
from __future__ import annotations

from jobs import _train

EPILOG = """\
Starts from --init: random, imagenet:PATH (torchvision-format weights), teacher (the
EfficientNet-Lite0 ImageNet weights) or checkpoint:URI (e.g. a distilled model.pt). Losses: kl,
cdloss, euclidean on the 10-bin distribution, or mse_mean for the mean-regression baseline.
Checkpoints, resuming (--name, --force) and the stop on a NaN loss as for jobs.distill.

example:
  python -m jobs.finetune --manifest work/ava/manifest.parquet --storage work/runs \\
      --name ft-cdloss --loss cdloss --init checkpoint:work/runs/distill-lite0/.../model.pt
"""


def main(argv: list[str] | None = None) -> int:
    p = _train.parser("Fine-tune APM for score distributions on Ray Train.", EPILOG)
    _train.add_finetune_args(p)
    return _train.run(p.parse_args(argv), "finetune")


if __name__ == "__main__":
    raise SystemExit(main())
