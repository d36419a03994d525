"""python -m jobs.teacher_softmax: an ImageNet teacher's softmax per photo -> OUT/teacher.parquet."""
from __future__ import annotations

from apm.core import storage
from apm.core.precision import DEVICES
from apm.core.rows import IMAGE_SUFFIXES
from apm.core.runtime import init_ray
from apm.models.teachers import DEFAULT_TEACHER, create_teacher, list_teachers
from apm.stages.teacher import TeacherJobConfig, run_teacher
from jobs import _cli

EPILOG = f"""\
Input: a manifest (a path ending in .parquet, e.g. prepare_ava's manifest.parquet; its uri and
image_id columns are used, rows whose image_status is not ok become error rows), or a folder /
prefix searched for these suffixes (image_id from numeric file names, as AVA's ID.jpg):
  {' '.join(IMAGE_SUFFIXES)}
It is listed afresh into OUT/_listing, as jobs.score lists its input.
Output: OUT/teacher.parquet, one Parquet file (schema in README.md), one row per photo: the
1000-way softmax, the top 5 classes, status ok | error and the reason of an error. A photo that
cannot be read or decoded never stops the job.

Teachers: {', '.join(list_teachers())}.
efficientnet_lite0 uses the ImageNet weights installed with the project; the ResNets need
--teacher-weights (torchvision's ImageNet state dict). Photos are decoded on Ray, the teacher
runs in --concurrency actors (one GPU each with --device cuda, the network in bfloat16 unless
--precision fp32; the probabilities always in float32).

example:
  python -m jobs.teacher_softmax --input work/ava/manifest.parquet --out work/teacher
  python -m jobs.teacher_softmax --input s3://bucket/photos --out s3://bucket/teacher \\
      --teacher resnet101 --teacher-weights s3://bucket/weights/resnet101-63fe2227.pth \\
      --device cuda --concurrency 4 --batch-size 256
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Compute an ImageNet teacher's softmax for every photo.", EPILOG)
    p.add_argument("--input", required=True, metavar="MANIFEST|DIR|s3://...",
                   help="a manifest .parquet, or a folder / prefix of photos")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output folder or prefix; the table is OUT/teacher.parquet")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, choices=list_teachers(),
                   help=f"teacher network (default {DEFAULT_TEACHER})")
    p.add_argument("--teacher-weights", metavar="PATH|s3://...",
                   help="the teacher's state dict (default: installed weights, if it has any)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the teacher runs")
    _cli.add_precision_arg(p)
    p.add_argument("--batch-size", type=int, help="photos per batch (default: 32 on cpu, 256 on cuda)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="crop side in pixels (default: the teacher's own, 224 of a 256 short "
                        "side); smaller is cheaper and suits small photos")
    p.add_argument("--concurrency", type=int,
                   help="inference actors, each loading the teacher once (default: one per GPU "
                        "with cuda, else one per CPU of the cluster)")
    _cli.add_image_limit_args(p)
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = TeacherJobConfig(input=args.input, out=args.out, teacher=args.teacher,
                                  weights=args.teacher_weights, device=args.device,
                                  precision=args.precision,
                                  batch_size=args.batch_size, concurrency=args.concurrency,
                                  limits=_cli.image_limits(args), image_size=args.image_size)
        storage.check_input(args.input)
        if args.teacher_weights:
            storage.check_input(args.teacher_weights)
        storage.check_output(args.out)
        # Build the teacher once here, so bad weights stop the job with one line, not in actors.
        create_teacher(config.teacher, config.weights)
    except (ValueError, storage.StorageError) as err:  # TeacherError is a ValueError
        _cli.fail(str(err))
    init_ray(args.ray_address)
    try:
        summary = run_teacher(config)
    except storage.StorageError as err:  # an input without photos
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
