"""python -m jobs.prepare_ava: an AVA package -> OUT/manifest.parquet."""
from __future__ import annotations

from apm.core import storage
from apm.core.runtime import init_ray
from apm.data.ava import AvaFormatError
from apm.data.manifest import build_manifest
from jobs import _cli

EPILOG = """\
The AVA package layout: AVA.txt, tags.txt, challenges.txt, aesthetics_image_lists/*.jpgl,
style_image_lists/. Output: OUT/manifest.parquet, one row per image (schema in README.md):
votes, n_votes, mean, std, tags, challenge, official splits, style labels, and with --images
the photo's uri and whether it exists and decodes (image_status ok | missing | unreadable).

example:
  python -m jobs.prepare_ava --ava-dir ../shared/data/ava/AVA_dataset --out work/ava
  python -m jobs.prepare_ava --ava-dir s3://bucket/ava --images s3://bucket/ava/images \\
      --out s3://bucket/prepared --s3-endpoint http://minio:9000
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Read the official AVA package layout into a Parquet manifest.", EPILOG)
    p.add_argument("--ava-dir", required=True, metavar="DIR|s3://...",
                   help="folder or prefix holding AVA.txt and the other package files")
    p.add_argument("--images", metavar="DIR|s3://...",
                   help="folder or prefix of the photos, named ID.jpg; each is checked to decode")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip and count malformed lines instead of stopping at the first one")
    _cli.add_image_limit_args(p)
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        limits = _cli.image_limits(args)
        storage.check_input(storage.join(args.ava_dir, "AVA.txt"))
        if args.images:
            storage.check_input(args.images)
        storage.check_output(args.out)
        if args.images:
            init_ray(args.ray_address)
        summary = build_manifest(args.ava_dir, args.out, images=args.images,
                                 skip_bad_rows=args.skip_bad_rows, limits=limits)
    except (storage.StorageError, AvaFormatError) as err:
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
