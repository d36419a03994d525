"""python -m jobs.make_synthetic: render a synthetic AVA whose aesthetic truth is known."""
from __future__ import annotations

from apm.core import storage
from apm.core.runtime import init_ray
from apm.data.synthetic.dataset import SyntheticConfig, generate
from jobs import _cli

EPILOG = """\
Writes the official AVA package layout (AVA.txt, tags.txt, challenges.txt,
aesthetics_image_lists/*.jpgl with a train/test split) plus images/ID.jpg, masks/ID.png and
truth.parquet (category, every photographic attribute, the aesthetic latent, the rating pmf).
Every job reads it as it reads real AVA. Rendering runs on Ray (local, or --ray-address).
The same --seed gives the same dataset.

example:
  python -m jobs.make_synthetic --n 2000 --size 256 --seed 0 --out work/synthetic
  python -m jobs.make_synthetic --n 100000 --out s3://bucket/synthetic --s3-endpoint http://minio:9000
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Render a synthetic AVA (10 categories, known aesthetic truth).", EPILOG)
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--size", type=int, default=256, metavar="PX",
                   help="long side of each image in pixels; 4:3 or 3:4 (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of images in generic_test.jpgl (default 0.1)")
    p.add_argument("--out", required=True, metavar="DIR|s3://...", help="output folder or prefix")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = SyntheticConfig(n=args.n, size=args.size, seed=args.seed,
                                 test_fraction=args.test_fraction)
        storage.check_output(args.out)
    except (ValueError, storage.StorageError) as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    print("\n".join(generate(config, args.out).lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
