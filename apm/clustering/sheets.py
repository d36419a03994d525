"""Contact sheets: per cluster, one PNG of the photos nearest to its centroid, nearest first.

The photos are read (:func:`apm.core.storage.read_bytes`) and decoded into square thumbnails
(:func:`apm.data.decode.decode_image`, short side ``size``, centre crop) in Ray Data tasks. A photo
that cannot be read or decoded, or is over the limits, is left out of its sheet and reported,
never fatal.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from apm.core import storage
from apm.core.rows import NO_ERROR
from apm.data.decode import DEFAULT_LIMITS, ImageLimits, decode_image, read_image_bytes
from apm.votes.fit_report import png_bytes

log = logging.getLogger(__name__)

#: Pixels between thumbnails.
GAP = 2


def thumbnail_batch(batch: dict[str, np.ndarray], size: int, storage_env: dict[str, str],
                    limits: ImageLimits) -> dict[str, np.ndarray]:
    """Read and decode each ``uri`` into a (size, size, 3) thumbnail; a failure sets ``error``."""
    storage.apply_env(storage_env)
    thumbs = np.zeros((len(batch["uri"]), size, size, 3), np.uint8)
    errors = []
    for i, uri in enumerate(batch["uri"]):
        try:
            data = read_image_bytes(str(uri), limits)
            thumbs[i] = decode_image(data, size=size, limits=limits, crop=size).rgb
            errors.append(NO_ERROR)
        except Exception as err:  # noqa: BLE001 - a bad photo only leaves a gap in the sheet
            errors.append(f"{type(err).__name__}: {err}")
    return {"cluster": batch["cluster"], "rank": batch["rank"], "uri": batch["uri"],
            "thumb": thumbs, "error": np.array(errors, dtype=object)}


@dataclass
class Thumbnails:
    by_cluster: dict[int, list[np.ndarray]] = field(default_factory=dict)  # nearest first
    failed: list[tuple[str, str]] = field(default_factory=list)  # (uri, why)


def load_thumbnails(uris: dict[int, list[str]], size: int,
                    limits: ImageLimits = DEFAULT_LIMITS) -> Thumbnails:
    """Thumbnails of ``uris`` (cluster -> photos, nearest first); Ray must be up."""
    import ray

    items = [{"cluster": c, "rank": r, "uri": u} for c, us in uris.items() for r, u in enumerate(us)]
    found: dict[tuple[int, int], np.ndarray] = {}
    result = Thumbnails()
    if items:
        dataset = ray.data.from_items(items).map_batches(
            thumbnail_batch, batch_size=16, batch_format="numpy",
            fn_kwargs={"size": size, "storage_env": storage.ray_env_vars(), "limits": limits})
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for c, r, uri, thumb, error in zip(batch["cluster"], batch["rank"], batch["uri"],
                                               batch["thumb"], batch["error"]):
                if error == NO_ERROR:
                    found[int(c), int(r)] = thumb
                else:
                    log.warning("contact sheet of cluster %d: %s left out (%s)", c, uri, error)
                    result.failed.append((str(uri), str(error)))
    for cluster, position in sorted(found):
        result.by_cluster.setdefault(cluster, []).append(found[cluster, position])
    return result


def mosaic(thumbs: list[np.ndarray]) -> np.ndarray:
    """Square thumbnails in a near-square grid, row by row, on white with :data:`GAP` pixels
    between them."""
    size = thumbs[0].shape[0]
    columns = math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / columns)
    step = size + GAP
    sheet = np.full((rows * step - GAP, columns * step - GAP, 3), 255, np.uint8)
    for i, thumb in enumerate(thumbs):
        top, left = (i // columns) * step, (i % columns) * step
        sheet[top:top + size, left:left + size] = thumb
    return sheet


def contact_sheet(thumbs: list[np.ndarray], title: str) -> bytes:
    """PNG of :func:`mosaic` under ``title``."""
    sheet = mosaic(thumbs)
    fig = Figure(figsize=(max(3.0, sheet.shape[1] / 100), sheet.shape[0] / 100 + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(sheet, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return png_bytes(fig)
