"""python -m jobs.cluster: semantic clusters of scored photos (distributed k-means on Ray Data).

The clustering, tables, contact sheets and report are :mod:`apm.clustering`; this module is the
command line.
"""
from __future__ import annotations

from apm.clustering.features import FEATURES, FeatureSpec
from apm.clustering.kmeans import KMeansConfig
from apm.clustering.stage import ClusterConfig, run_clustering
from apm.core import storage
from apm.core.runtime import init_ray
from jobs import _cli

EPILOG = """\
--scores is the scoring job's output folder (its table OUT/scores/part-*.parquet), a folder of
Parquet files or one .parquet file (SCORES_SCHEMA). Only rows with status 'ok' are clustered;
error rows are counted in the summary. Features:
  embedding  the pooled backbone features the scoring job wrote (it must have run with
             embeddings; else use --features semantic)
  semantic   a 1000-d vector holding the top-5 ImageNet probabilities at their class ids
Each vector is L2-normalised unless --no-normalize.

k-means runs on Ray Data: the features stay in the object store, each pass assigns rows to
the nearest centroid in tasks, and the driver only adds up per-batch sums and counts. It is
seeded on a random sample of --init-sample photos (the rows with the smallest hash of --seed
and the photo): --restarts k-means++ seedings, each refined by Lloyd on the sample, the one of
least inertia kept; then Lloyd iterations over all photos until no centroid moves more than
--tol, or --max-iter. An empty cluster restarts at the photo farthest from its centroid.
The same inputs and --seed give the same clusters (the partial sums are added in float64, in
the order batches finish, so only exact ties could fall differently).

outputs under --out:
  clusters.parquet         cluster_id and distance to the centroid per photo (CLUSTERS_SCHEMA)
  cluster_summary.parquet  per cluster: size, centroid, commonest top-1 classes, mean predicted
                           score and its histogram (CLUSTER_SUMMARY_SCHEMA)
  sheets/cluster_NN.png    contact sheet of the --sheet-size photos nearest the centroid (a
                           photo that cannot be read or decoded is left out)
  report.md                the settings, a table of clusters; with --truth, the adjusted Rand
                           index and the cluster x category confusion table

example (a synthetic AVA, scored with embeddings into work/scores):
  python -m jobs.cluster --scores work/scores --k 10 --out work/clusters \\
      --truth work/synthetic/truth.parquet
"""


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Cluster scored photos by their features (k-means on Ray Data).", EPILOG)
    p.add_argument("--scores", required=True, metavar="OUT|DIR|FILE",
                   help="the scoring job's output folder, a folder of Parquet files or a .parquet file")
    p.add_argument("--k", type=int, default=10, help="number of clusters (default 10)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder or prefix")
    p.add_argument("--features", default="embedding", choices=FEATURES,
                   help="what to cluster (default embedding)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="cluster the raw vectors instead of L2-normalised ones")
    p.add_argument("--truth", metavar="PATH|s3://...",
                   help="synthetic truth.parquet (image_id, category): report the adjusted Rand "
                        "index and a cluster x category table")
    p.add_argument("--max-iter", type=int, default=100, help="most Lloyd iterations (default 100)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="stop when no centroid moves more than this (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--init-sample", type=int, default=10_000,
                   help="photos k-means++ seeds from (default 10000)")
    p.add_argument("--restarts", type=int, default=10,
                   help="k-means++ seedings tried on the sample, the best kept (default 10)")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per Ray Data batch (default 4096)")
    p.add_argument("--sheet-size", type=int, default=16,
                   help="photos per contact sheet, 0 for none (default 16)")
    p.add_argument("--thumb-size", type=int, default=96, help="thumbnail side in pixels (default 96)")
    _cli.add_image_limit_args(p)
    _cli.add_ray_args(p)
    args = p.parse_args(argv)
    _cli.setup(args)
    try:
        config = ClusterConfig(
            scores=args.scores, out=args.out, truth=args.truth,
            kmeans=KMeansConfig(k=args.k, max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                                init_sample=args.init_sample, restarts=args.restarts),
            features=FeatureSpec(kind=args.features, normalize=args.normalize),
            batch_size=args.batch_size, sheet_size=args.sheet_size, thumb_size=args.thumb_size,
            limits=_cli.image_limits(args))
        for uri in [args.scores, *([args.truth] if args.truth else [])]:
            storage.check_input(uri)
        storage.check_output(args.out)
    except (ValueError, storage.StorageError) as err:
        _cli.fail(str(err))
    init_ray(args.ray_address)
    try:
        summary = run_clustering(config)
    except (ValueError, storage.StorageError) as err:  # e.g. no embeddings, k too big
        _cli.fail(str(err))
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
