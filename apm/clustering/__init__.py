"""Semantic clusters of scored photos: distributed k-means over Ray Data.

``jobs.cluster`` runs :func:`apm.clustering.stage.run_clustering`. The modules, in the order
the stage uses them:

* :mod:`~apm.clustering.source`: the scores' Parquet files, their columns, the row census;
* :mod:`~apm.clustering.features`: feature vectors (embedding or semantic) per Arrow batch;
* :mod:`~apm.clustering.kmeans`: k-means++ and the Lloyd arithmetic, NumPy only;
* :mod:`~apm.clustering.passes`: the Ray Data passes; the driver reduces per-batch results;
* :mod:`~apm.clustering.summary`: per-cluster statistics and ``cluster_summary.parquet``;
* :mod:`~apm.clustering.sheets`: contact sheets of the photos nearest each centroid;
* :mod:`~apm.clustering.truth`: adjusted Rand index and confusion against known categories;
* :mod:`~apm.clustering.report`: the printed summary and ``report.md``;
* :mod:`~apm.clustering.stage`: the configuration and the stage itself.
"""
