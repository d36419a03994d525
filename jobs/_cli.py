"""Options and start-up shared by every job's command line."""
from __future__ import annotations

import argparse
import sys

from apm.core import progress, storage
from apm.core.precision import PRECISIONS
from apm.data.decode import DEFAULT_MAX_ASPECT, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageLimits


def parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="S3-compatible endpoint (MinIO, Ceph, ...); default: AWS_ENDPOINT_URL or "
                        "AWS S3. Credentials come from the standard AWS environment variables.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="this project's log lines from this level up (default INFO)")
    p.add_argument("--verbose", action="store_true",
                   help="also the INFO lines of Ray, Ray Data, Ray Train and other libraries "
                        "(--log-level applies to all), in the driver and the Ray workers, and "
                        "Ray Data's progress as Ray prints it; without it they print warnings "
                        "only, and Ray Data's progress bars only in a terminal")
    return p


def add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")


def add_ray_train_args(p: argparse.ArgumentParser) -> None:
    """How a Ray Train job spreads: workers, their CPUs and GPUs, and restarts."""
    p.add_argument("--num-workers", type=int, default=2, help="Ray Train workers (default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs each worker reserves; the rest decode photos (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: one GPU per worker, NCCL, bf16 autocast")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts from the last checkpoint (default 2)")
    add_ray_args(p)


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    """--precision for every job that runs a network (see :mod:`apm.core.precision`)."""
    p.add_argument("--precision", choices=list(PRECISIONS), default=None,
                   help="bf16: the backbone under bfloat16 autocast, heads, softmaxes, losses and "
                        "everything stored in float32; fp32: all float32 (default: bf16 on "
                        "cuda, fp32 on cpu)")


def add_image_limit_args(p: argparse.ArgumentParser) -> None:
    """What one photo may cost, for every job that reads photos (see :class:`ImageLimits`)."""
    g = p.add_argument_group("limits per photo", "a photo over a limit is refused before its "
                             "pixels are decoded; the reason names the option")
    g.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                   help="bytes of the encoded photo, checked on the listing's size before it is "
                        f"read; the read itself stops there (default {DEFAULT_MAX_BYTES}, "
                        "256 MiB)")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="width x height as stored, from the header; Pillow's own "
                        f"decompression-bomb limit follows it (default {DEFAULT_MAX_PIXELS})")
    g.add_argument("--max-aspect", type=float, default=DEFAULT_MAX_ASPECT, metavar="R",
                   help="long side / short side, at least 1: a strip of 400000 x 1 pixels would "
                        f"otherwise resize to millions of crops (default {DEFAULT_MAX_ASPECT:g})")


def image_limits(args: argparse.Namespace) -> ImageLimits:
    """The options of :func:`add_image_limit_args`; one line naming the option and exit status 2
    if one is out of range, as argparse does for a malformed one."""
    try:
        return ImageLimits(max_bytes=args.max_bytes, max_pixels=args.max_pixels,
                           max_aspect=args.max_aspect)
    except ValueError as err:
        fail(str(err))


def setup(args: argparse.Namespace) -> None:
    progress.configure(args.log_level, verbose=getattr(args, "verbose", False))
    storage.configure(args.s3_endpoint)


def fail(message: str) -> None:
    """Print one clear line and exit with status 2, as argparse does for bad options."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def train_or_fail(fit, *args, **kwargs):
    """``fit(*args, **kwargs)`` (APM's or PFAGAN's); a refused run or a failed training is one
    line and exit status 2."""
    from ray.train import TrainingFailedError

    from apm.training.trainer import describe_failure

    try:
        return fit(*args, **kwargs)
    except (ValueError, storage.StorageError) as err:  # RunMismatchError: --name ran otherwise
        fail(str(err))
    except TrainingFailedError as err:  # a NaN loss, or crashes beyond --max-failures
        fail(describe_failure(err))

