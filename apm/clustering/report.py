"""The outcome of a clustering run: the summary printed at the end and ``report.md``."""
from __future__ import annotations

from dataclasses import dataclass

from apm.clustering.features import FeatureSpec
from apm.clustering.kmeans import KMeansConfig
from apm.clustering.passes import LloydResult
from apm.clustering.source import Census
from apm.clustering.summary import ClusterStats
from apm.clustering.truth import TruthComparison, confusion_markdown

#: Photos left out of contact sheets that report.md lists by name.
LISTED_FAILURES = 20


@dataclass
class ClusterSummary:
    source: str  # --scores
    spec: FeatureSpec
    kmeans: KMeansConfig
    census: Census
    sample_size: int  # rows k-means++ seeded from
    result: LloydResult
    stats: ClusterStats  # of the final assignment
    sheets: dict[int, str]  # cluster -> its contact sheet, relative to the output folder
    sheet_failures: list[tuple[str, str]]  # (uri, why) of photos left out of the sheets
    truth: TruthComparison | None
    outputs: dict[str, str]  # name -> URI
    seconds: float = 0.0

    def _input_line(self) -> str:
        return (f"clustered {self.census.usable} photos ({self.spec.describe()}); skipped "
                f"{self.census.errors} error rows (status not 'ok')")

    def _kmeans_line(self) -> str:
        r = self.result
        how = (f"converged after {r.iterations} iterations" if r.converged else
               f"stopped at --max-iter {r.iterations} (largest centroid move {r.shift:.3g} > "
               f"--tol {self.kmeans.tol:g})")
        return (f"k-means: {self.kmeans.k} clusters, {how}; inertia {self.stats.inertia:.6g}; "
                f"{r.reseeded} empty-cluster restart(s)")

    def _truth_line(self, truth: TruthComparison) -> str:
        return (f"adjusted Rand index vs the true categories: {truth.ari:.4f} over "
                f"{truth.matched} photos ({truth.unmatched} without a category in {truth.source})")

    def lines(self) -> list[str]:
        sizes = " ".join(f"{c}:{n}" for c, n in enumerate(self.stats.sizes))
        out = [self._input_line(), self._kmeans_line(), f"sizes (cluster:photos): {sizes}"]
        if self.truth:
            out.append(self._truth_line(self.truth))
        if self.sheets or self.sheet_failures:
            out.append(f"contact sheets: {len(self.sheets)}, {len(self.sheet_failures)} photo(s) "
                       f"left out (could not be read or decoded; listed in report.md)")
        out += [f"{name}: {uri}" for name, uri in self.outputs.items()]
        return [*out, f"time: {self.seconds:.1f} s"]

    def _cluster_rows(self) -> list[str]:
        total = max(1, int(self.stats.sizes.sum()))
        rows = ["| cluster | photos | share | commonest top-1 classes | mean score | contact sheet |",
                "|---|---|---|---|---|---|"]
        for c, size in enumerate(self.stats.sizes):
            classes = ", ".join(f"{name} {share:.0%}" for name, share in self.stats.top_classes(c))
            mean = self.stats.mean_score(c)
            sheet = f"[{self.sheets[c]}]({self.sheets[c]})" if c in self.sheets else "—"
            rows.append(f"| {c} | {size} | {size / total:.1%} | {classes or '—'} | "
                        f"{'—' if mean is None else f'{mean:.2f}'} | {sheet} |")
        return rows

    def markdown(self) -> str:
        lines = [f"# Clusters of {self.source}", "",
                 f"- {self._input_line()}",
                 f"- {self._kmeans_line()}",
                 f"- seeded by the best of {self.kmeans.restarts} k-means++ seedings (seed "
                 f"{self.kmeans.seed}), each refined by Lloyd on a random sample of "
                 f"{self.sample_size} photos; distances and centroids are in feature space",
                 "", *self._cluster_rows()]
        if self.truth:
            lines += ["", "## Against the true categories", "", self._truth_line(self.truth), "",
                      *confusion_markdown(self.truth)]
        if self.sheet_failures:
            lines += ["", "## Photos left out of the contact sheets", ""]
            lines += [f"- {uri}: {why}" for uri, why in self.sheet_failures[:LISTED_FAILURES]]
            if len(self.sheet_failures) > LISTED_FAILURES:
                lines.append(f"- ... and {len(self.sheet_failures) - LISTED_FAILURES} more")
        return "\n".join(lines) + "\n"
