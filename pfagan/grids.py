"""Sample grids: rows are categories, columns are score conditions, a few samples per cell."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from apm.votes.fit_report import png_bytes

GAP = 2  # pixels between samples of a cell


def sample_grid(cells: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str],
                title: str) -> bytes:
    """PNG of ``cells[r][c]`` (uint8 (K, R, R, 3) samples side by side) with labelled axes."""
    rows, columns = len(cells), len(cells[0])
    per_cell = max(len(cell) for row in cells for cell in row)
    size = next(cell.shape[1] for row in cells for cell in row if len(cell))
    cell_w = per_cell * (size + GAP)
    canvas = np.full((rows * (size + 4 * GAP), columns * (cell_w + 4 * GAP), 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            top, left = r * (size + 4 * GAP), c * (cell_w + 4 * GAP)
            for k, image in enumerate(cell):
                x = left + k * (size + GAP)
                canvas[top:top + size, x:x + size] = image
    scale = max(1.0, 96 / size)  # small GANs' samples are drawn at least 96 px per sample
    fig = Figure(figsize=(canvas.shape[1] * scale / 100 + 1.4, canvas.shape[0] * scale / 100 + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([c * (cell_w + 4 * GAP) + cell_w / 2 for c in range(columns)], column_labels,
                  fontsize=8)
    ax.set_yticks([r * (size + 4 * GAP) + size / 2 for r in range(rows)], row_labels, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)
