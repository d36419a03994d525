"""A run report: Markdown sections with the figures the stages wrote, gathered in one folder.

Each stage writes its own outputs (tables, ``report.md``, PNGs); a :class:`Report` collects
what a reader looks at first into ``OUT/report.md`` and copies the figures next to it
(``OUT/figures/``), so the folder can be opened, zipped or published on its own, locally or on
S3. Figures that a stage did not write are listed as missing rather than silently left out.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from apm.clustering.source import scores_files
from apm.core import storage
from apm.core.schemas import NUM_BINS
from apm.votes.fit_report import png_bytes

FIGURES = "figures"


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)  # Markdown
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, URI of a PNG)


@dataclass
class Report:
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def write(self, out: str) -> str:
        """Write ``out/report.md`` and ``out/figures/*.png``; returns the report's URI."""
        storage.makedirs(storage.join(out, FIGURES))
        lines = [f"# {self.title}", "", *self.intro, ""]
        for number, section in enumerate(self.sections, 1):
            lines += [f"## {number}. {section.title}", "", *section.lines, ""]
            for index, (caption, uri) in enumerate(section.figures, 1):
                if not storage.exists(uri):
                    lines += [f"*{caption}: not written ({uri} is missing)*", ""]
                    continue
                name = f"{number:02d}_{index:02d}_{posixpath.basename(uri)}"
                storage.write_bytes(storage.join(out, FIGURES, name), storage.read_bytes(uri))
                lines += [f"![{caption}]({FIGURES}/{name})", "", f"*{caption}*", ""]
        target = storage.join(out, "report.md")
        storage.write_bytes(target, "\n".join(lines).encode())
        return target


def first_markdown_table(uri: str) -> list[str]:
    """The lines of the first Markdown table of a report file (a stage's, e.g. metrics.md)."""
    lines = storage.read_text(uri).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def score_means(scores: str) -> np.ndarray:
    """The predicted mean of every photo scored ``ok`` in a ``jobs.score`` output."""
    table = pa.concat_tables(storage.read_table(uri, columns=["status", "mean"])
                             for uri in scores_files(scores))
    ok = table.filter(pc.equal(table["status"], "ok"))
    return ok["mean"].to_numpy(zero_copy_only=False).astype(np.float64)


def plot_score_histogram(means: np.ndarray, title: str = "Predicted mean score") -> bytes:
    """Histogram of predicted mean scores with the high / low threshold (mean >= 5)."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.hist(means, bins=np.linspace(1, NUM_BINS, 37), color="#4c72b0", edgecolor="white")
    ax.axvline(5.0, color="#c44e52", linestyle="--", label="high / low threshold (5)")
    high = float(np.mean(means >= 5.0)) if len(means) else float("nan")
    ax.set(xlabel="predicted mean score (1-10)", ylabel="photos",
           title=f"{title}: {len(means)} photos, {high:.0%} high")
    ax.legend(loc="upper left", fontsize=8)
    return png_bytes(fig)
