"""The images an explanation leaves behind: the heatmap PNG and the three-part panel.

Both are in crop pixels. The modified image is the float result rounded to 8 bits for display;
the scores are the model's on the float images.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from apm.explain.heatmap import Box
from apm.votes.fit_report import png_bytes

#: Heatmap opacity over the original in the panel's third image.
OVERLAY_ALPHA = 0.6


def heatmap_png(heat: np.ndarray) -> bytes:
    """An (H, W) heatmap in [0, 1] as an 8-bit grayscale PNG (255 = the peak)."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").save(
        buffer, format="PNG")
    return buffer.getvalue()


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8, rounded."""
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def panel_png(original: np.ndarray, modified: np.ndarray, heat: np.ndarray, bbox: Box | None,
              direction: str, before: float, after: float) -> bytes:
    """original | modified | heatmap over the original (peak region boxed), scores in the titles.

    ``original`` and ``modified`` are (H, W, 3) uint8 crops, ``heat`` the (H, W) heatmap.
    """
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 3)
    axes[0].imshow(original, interpolation="nearest")
    axes[0].set_title(f"original: {before:.2f}", fontsize=10)
    axes[1].imshow(modified, interpolation="nearest")
    what = "lowered" if direction == "lower" else "raised"
    axes[1].set_title(f"{what}: {after:.2f} ({after - before:+.2f})", fontsize=10)
    axes[2].imshow(original, interpolation="nearest")
    shown = axes[2].imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=OVERLAY_ALPHA,
                           interpolation="bilinear")
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        axes[2].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                    edgecolor="cyan", linewidth=1.5))
    axes[2].set_title("where it changed", fontsize=10)
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_axis_off()
    return png_bytes(fig)
