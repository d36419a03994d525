"""The ``cluster`` stage: k-means over scored photos, its tables, contact sheets and report.

Writes under ``OUT``: ``clusters.parquet`` (``CLUSTERS_SCHEMA``, one row per clustered photo,
streamed from the assignment pass), ``cluster_summary.parquet`` (``CLUSTER_SUMMARY_SCHEMA``),
``sheets/cluster_NN.png`` (one contact sheet per non-empty cluster) and ``report.md``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from apm.clustering.features import FeatureSpec
from apm.clustering.kmeans import KMeansConfig, best_seeding
from apm.clustering.passes import assignments, census, draw_sample, lloyd, read_prepared
from apm.clustering.report import ClusterSummary
from apm.clustering.sheets import contact_sheet, load_thumbnails
from apm.clustering.source import check_columns, scores_files
from apm.clustering.summary import ClusterStats
from apm.clustering.truth import compare_with_truth, read_truth
from apm.core import storage
from apm.core.schemas import CLUSTERS_SCHEMA
from apm.data.decode import DEFAULT_LIMITS, ImageLimits

log = logging.getLogger(__name__)

SHEETS_FOLDER = "sheets"


@dataclass(frozen=True)
class ClusterConfig:
    """What ``cluster`` runs; invalid values raise ValueError naming the option."""

    scores: str  # the scoring job's output folder, a folder of Parquet files or a .parquet file
    out: str  # folder / prefix for the outputs
    kmeans: KMeansConfig
    features: FeatureSpec = field(default_factory=FeatureSpec)
    truth: str | None = None  # synthetic truth.parquet (image_id, category): ARI and confusion
    batch_size: int = 4096  # rows per Ray Data batch
    sheet_size: int = 16  # photos per contact sheet; 0: no sheets
    thumb_size: int = 96  # thumbnail side, pixels
    limits: ImageLimits = DEFAULT_LIMITS  # of the photos read for the sheets

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.sheet_size < 0:
            raise ValueError(f"--sheet-size must be 0 (no sheets) or more, got {self.sheet_size}")
        if self.thumb_size < 8:
            raise ValueError(f"--thumb-size must be at least 8 pixels, got {self.thumb_size}")

    def out_uri(self, *parts: str) -> str:
        return storage.join(storage.normalize(self.out), *parts)


def sheet_name(cluster: int, k: int) -> str:
    """``sheets/cluster_NN.png``, zero-padded so that the files sort by cluster."""
    return f"{SHEETS_FOLDER}/cluster_{cluster:0{len(str(k - 1))}d}.png"


def write_clusters(tables: Iterable[pa.Table], uri: str, stats: ClusterStats) -> None:
    """Stream assignment tables into ``clusters.parquet`` and count them into ``stats``."""
    try:
        with storage.open_file(uri, "wb") as sink, \
                pq.ParquetWriter(sink, CLUSTERS_SCHEMA, compression="zstd") as writer:
            for table in tables:
                stats.add(table)
                writer.write_table(table.select(CLUSTERS_SCHEMA.names).cast(CLUSTERS_SCHEMA))
    except BaseException:
        storage.remove(uri)  # a partial table must not pass for a result
        raise


def write_sheets(stats: ClusterStats, config: ClusterConfig
                 ) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """One contact sheet per cluster with a readable photo: the sheets written (cluster ->
    name under OUT) and the photos left out (uri, why)."""
    k = config.kmeans.k
    thumbs = load_thumbnails({c: stats.nearest_uris(c) for c in range(k)}, config.thumb_size,
                             config.limits)
    sheets = {}
    for cluster, images in sorted(thumbs.by_cluster.items()):
        top = ", ".join(f"{name} {share:.0%}" for name, share in stats.top_classes(cluster)[:3])
        title = f"cluster {cluster}: {stats.sizes[cluster]} photos; {top}"
        sheets[cluster] = sheet_name(cluster, k)
        storage.write_bytes(config.out_uri(sheets[cluster]), contact_sheet(images, title))
    return sheets, thumbs.failed


def run_clustering(config: ClusterConfig) -> ClusterSummary:
    """Cluster the ``ok`` rows of ``config.scores`` and write the outputs; Ray must be up."""
    start = time.perf_counter()
    spec, kmeans = config.features, config.kmeans
    files = scores_files(config.scores)
    check_columns(files, spec)
    truth = read_truth(config.truth) if config.truth else None
    log.info("%d Parquet file(s) of scores", len(files))
    prepared = read_prepared(files, spec, kmeans.seed, config.batch_size)
    counts = census(prepared, spec, config.batch_size)
    counts.check(spec, kmeans.k, config.scores)
    sample = draw_sample(prepared, spec, counts.dim, kmeans.init_sample, counts.usable,
                         config.batch_size)
    result = lloyd(prepared, best_seeding(sample, kmeans), spec, kmeans, config.batch_size)
    stats = ClusterStats(kmeans.k, config.sheet_size)
    outputs = {name: config.out_uri(name) for name in
               ("clusters.parquet", "cluster_summary.parquet", "report.md")}
    write_clusters(assignments(prepared, result.centroids, spec, config.batch_size),
                   outputs["clusters.parquet"], stats)
    storage.write_table(stats.table(result.centroids), outputs["cluster_summary.parquet"])
    comparison = None
    if truth is not None:
        clustered = storage.read_table(outputs["clusters.parquet"], columns=["image_id", "cluster_id"])
        comparison = compare_with_truth(clustered, truth, kmeans.k, config.truth)
    sheets, failed = write_sheets(stats, config) if config.sheet_size else ({}, [])
    if sheets:
        outputs["sheets"] = config.out_uri(SHEETS_FOLDER)
    summary = ClusterSummary(config.scores, spec, kmeans, counts, len(sample), result, stats,
                             sheets, failed, comparison, outputs)
    storage.write_text(outputs["report.md"], summary.markdown())
    summary.seconds = time.perf_counter() - start
    return summary
