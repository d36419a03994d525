"""python -m jobs.score: score a photo library -> OUT/scores/part-*.parquet (one row per object)."""
from __future__ import annotations

from dataclasses import replace

from apm.core import storage
from apm.core.lease import DEFAULT_STALE_AFTER_S
from apm.core.precision import DEVICES
from apm.core.rows import IMAGE_SUFFIXES
from apm.core.runtime import init_ray
from apm.data.inputs import INPUT_KINDS
from apm.data.webdataset import expand_braces
from apm.models import ModelSpec, list_backbones
from apm.stages.scoring import ScoreConfig, run_score
from jobs import _cli

EPILOG = f"""\
Input, one of three kinds (--input-kind; auto tells them apart):
* photos: a folder or s3:// prefix (listed recursively; objects with these suffixes,
  case-insensitive: {' '.join(IMAGE_SUFFIXES)}; --all-objects lists every object), or a manifest
  .parquet (its uri and image_id; rows whose image_status is not ok become error rows).
    --input s3://photos/library/
* WebDataset tar shards: a .tar, a brace pattern, a prefix of .tar files, or (with --input-kind
  webdataset) a manifest .parquet of shard URIs. One row per image member: uri SHARD#MEMBER,
  shard, key (the sample's name) and meta (its KEY.json); a truncated or corrupt shard gives
  the rows it can read and one error row naming the shard and the byte offset.
    --input 's3://laion/shards/{{00000..01023}}.tar'
* Parquet files of image bytes (--image-column: a binary column or a {{bytes, path}} struct): a
  .parquet or a prefix of them. One row per table row: shard (the file), key (--id-column as
  text, default the row number in the file); --keep-columns a,b copies input columns to the
  output, typed as in the input; a null image is an error row.
    --input s3://data/images/ --image-column image --id-column id --keep-columns caption
The output's uri, shard + key, or the id column join the scores back to the input. The
listing streams into OUT/_listing in parts of --rows-per-part rows, written once and reused by
reruns: an S3 prefix, flat or deep, is cut into up to --listing-tasks key ranges listed in
parallel; a local folder's sub-folders are grouped into that many tasks.

Model: an APM checkpoint from jobs.finetune / jobs.distill (path or s3:// URI), or random:ARCH
for a randomly initialised model (same weights in every actor; smoke tests and benchmarks).
Architectures: {', '.join(list_backbones())}.

Output: OUT/scores/part-NNNNNN.parquet (schema in README.md), --rows-per-file rows each, one
row per listed object: status ok | error and the reason, the 10-bin score distribution, mean,
std, is_high (mean >= 5), the semantic head's top 5 ImageNet classes, the pooled backbone
features as a float16 embedding (--no-embedding leaves them out), model_id and scored_at.
A missing, empty, truncated, non-image or oversized object is an error row (error_kind
'permanent'), never a failed job. Store faults (throttling, 5xx, refused connections, expired
credentials) are retried (botocore, then Ray, then photo by photo); a row that still fails is
an error row of kind 'transient', and --retry-errors on a rerun scores those rows again. A
worker that dies on a photo (a crashing decoder, out of memory) costs a bounded number of
retries, then that photo alone is an error row and the others are scored.

Rerunning with the same --output resumes: complete files whose row range, URIs and model match
the listing are kept, the rest is scored again, and the table still holds exactly one row per
object. --overwrite starts over. One run at a time per OUT (a lease, OUT/_lease.json). A log line
every --progress-every seconds reports rows done, images/s and errors; a summary ends the run.

On GPUs (--device cuda): one actor per GPU (channels-last, a bf16 backbone unless --precision
fp32), photos decoded by CPU tasks (--decode-concurrency caps them). On CPUs: one actor per
CPU, each decoding its own photos. The pool is elastic: it starts with one actor and grows,
while work is queued, onto every node the cluster has or the autoscaler adds, up to
--max-actors (--concurrency N: a fixed pool).

example:
  python -m jobs.score --input s3://photos/library/ --output s3://photos/scores \\
      --model s3://models/apm/model.pt --device cuda
  python -m jobs.score --input work/synthetic/images --output work/scores --model random:resnet18
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Score every photo of a library with an APM model.", EPILOG)
    p.add_argument("--input", required=True, metavar="DIR|s3://prefix|MANIFEST|SHARDS|PARQUET",
                   help="a folder / prefix of photos, a manifest .parquet, WebDataset tar shards "
                        "(a .tar, a brace pattern, a prefix of .tar files) or Parquet files of "
                        "image bytes (with --image-column)")
    p.add_argument("--input-kind", default="auto", choices=INPUT_KINDS,
                   help="what --input is (default auto: a brace pattern, a .tar or a prefix of "
                        ".tar files is webdataset; with --image-column parquet; a .parquet a "
                        "manifest; else files)")
    p.add_argument("--image-column", metavar="NAME",
                   help="Parquet input: the column of image bytes (binary or {bytes, path})")
    p.add_argument("--id-column", metavar="NAME",
                   help="Parquet input: the rows' identity, the output's key (default: the row "
                        "number in its file)")
    p.add_argument("--keep-columns", metavar="A,B", default="",
                   help="Parquet input: input columns copied to the output, typed as in the input")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--model", required=True, metavar="CKPT|random:ARCH",
                   help="APM checkpoint path / URI, or random:ARCH")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the model runs")
    _cli.add_precision_arg(p)
    p.add_argument("--image-size", type=int,
                   help="crop size (default: the one the checkpoint was trained at, else 224)")
    p.add_argument("--batch-size", type=int, help="photos per batch (default: 32 on cpu, 256 on cuda)")
    p.add_argument("--max-actors", type=int, metavar="N",
                   help="most inference actors (default: as many as the cluster holds, one per "
                        "GPU with cuda, else one per CPU; the pool grows onto nodes as the "
                        "autoscaler adds them)")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="a fixed pool of N inference actors instead of the elastic one")
    p.add_argument("--decode-concurrency", type=int,
                   help="with cuda: most decoding tasks at once (default: as CPUs allow)")
    p.add_argument("--rows-per-file", type=int, default=50_000,
                   help="rows per output Parquet file (default 50000)")
    p.add_argument("--rows-per-part", type=int, default=200_000, metavar="N",
                   help="rows per listing part (OUT/_listing; default 200000)")
    p.add_argument("--listing-tasks", type=int, metavar="N",
                   help="most Ray tasks listing the input at once (default: 4 per cluster CPU); "
                        "an S3 prefix is cut into this many key ranges")
    p.add_argument("--no-embedding", action="store_true", help="leave the embedding column null")
    p.add_argument("--all-objects", action="store_true",
                   help="list every object of the prefix, not only image suffixes")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--retry-errors", action="store_true",
                   help="resume, and score again the rows of an earlier run whose error_kind is "
                        "'transient' (store faults that outlasted every retry), in place")
    p.add_argument("--lease-timeout", type=float, default=DEFAULT_STALE_AFTER_S, metavar="SECONDS",
                   help="a run holds OUT's lease (OUT/_lease.json) and renews it; a second run "
                        "into OUT is refused unless the holder's heartbeat is older than this "
                        f"(default {DEFAULT_STALE_AFTER_S:g})")
    _cli.add_image_limit_args(p)
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines (default 30)")
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = ScoreConfig(
            input=args.input, out=args.output, model=args.model, device=args.device,
            precision=args.precision, image_size=args.image_size, batch_size=args.batch_size,
            concurrency=args.concurrency,
            max_actors=args.max_actors, decode_concurrency=args.decode_concurrency,
            rows_per_file=args.rows_per_file, rows_per_part=args.rows_per_part,
            listing_tasks=args.listing_tasks,
            embedding=not args.no_embedding, limits=_cli.image_limits(args),
            suffixes=None if args.all_objects else IMAGE_SUFFIXES, overwrite=args.overwrite,
            retry_errors=args.retry_errors, progress_every_s=args.progress_every,
            lease_timeout_s=args.lease_timeout, input_kind=args.input_kind,
            image_column=args.image_column, id_column=args.id_column,
            keep_columns=tuple(c.strip() for c in args.keep_columns.split(",") if c.strip()))
        # A brace pattern is no object: its first shard shows whether the store can be read.
        storage.check_input(expand_braces(args.input)[0])
        # Read once, here: a bad model stops the job with one line, before Ray.
        config = replace(config, model=ModelSpec.resolve(args.model))
        storage.check_output(args.output)
    except (ValueError, storage.StorageError) as err:  # CheckpointError is a ValueError
        _cli.fail(str(err))
    init_ray(args.ray_address)
    try:
        summary = run_score(config)
    except (ValueError, storage.StorageError) as err:  # other settings in OUT, nothing listed
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
