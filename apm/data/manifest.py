"""Building ``OUT/manifest.parquet`` from an AVA package, with an account of every input row."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from apm.core import storage
from apm.data.ava import read_ava_package
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.data.images import check_images

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.parquet"


@dataclass
class ManifestSummary:
    manifest_uri: str
    rows: int
    bad_rows: list[str]
    splits: dict[str, int]
    semantics_unknown: int
    image_status: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"manifest: {self.manifest_uri}",
               f"input rows: {self.rows + len(self.bad_rows)} = {self.rows} written "
               f"+ {len(self.bad_rows)} bad rows skipped",
               "splits: " + ", ".join(f"{k}={v}" for k, v in sorted(self.splits.items())),
               f"semantics unknown (-1): {self.semantics_unknown}"]
        if self.image_status:
            out.append("images: " + ", ".join(f"{k}={v}" for k, v in
                                               sorted(self.image_status.items())))
        out += [f"  skipped: {msg}" for msg in self.bad_rows[:20]]
        if len(self.bad_rows) > 20:
            out.append(f"  ... and {len(self.bad_rows) - 20} more skipped rows")
        return out


def _attach_image_status(table: pa.Table, images: str, limits: ImageLimits) -> pa.Table:
    status = check_images(table.column("uri").to_pylist(), images, limits)
    for name in ("image_status", "image_error", "width", "height"):
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name),
                                 status.column(name))
    return table


def build_manifest(ava_dir: str, out: str, images: str | None = None,
                   skip_bad_rows: bool = False, limits: ImageLimits = DEFAULT_LIMITS
                   ) -> ManifestSummary:
    """Read the AVA package at ``ava_dir``, check the photos under ``images`` (if given, within
    ``limits``) and write ``out/manifest.parquet``."""
    table, report = read_ava_package(ava_dir, images=images, skip_bad_rows=skip_bad_rows)
    if images:
        table = _attach_image_status(table, images, limits)
        for row in table.filter(pc.not_equal(table["image_status"], "ok")).select(
                ["image_id", "uri", "image_status", "image_error"]).to_pylist()[:20]:
            log.warning("image %(image_id)s %(image_status)s: %(uri)s (%(image_error)s)", row)
    manifest_uri = storage.join(out, MANIFEST_FILE)
    storage.write_table(table, manifest_uri)
    splits = Counter(s or "none" for s in table.column("split").to_pylist())
    return ManifestSummary(
        manifest_uri=manifest_uri,
        rows=table.num_rows,
        bad_rows=report.bad_rows,
        splits=dict(splits),
        semantics_unknown=table.num_rows - pc.sum(table["semantics_known"]).as_py()
        if table.num_rows else 0,
        image_status=dict(Counter(table.column("image_status").to_pylist())) if images else {},
    )
