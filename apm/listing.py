"""The input listing of a bulk job: every object to process, written once, in a fixed order.

A prefix with millions of keys is listed in parallel: the driver walks the top levels of the
tree (one delimiter listing per folder) until it has about ``fanout`` sub-folders, and one Ray
task per sub-folder lists it recursively and writes its own Parquet parts. The driver never
holds the keys of a sub-folder, and no task is launched per file. A flat prefix (all keys at
one level) is listed by the driver, in pages.

The listing lives in ``FOLDER/part-*.parquet`` (``LISTING_SCHEMA``) with ``FOLDER/_SUCCESS.json``
written last: a rerun that finds it reuses the listing, so row positions, and therefore output
shards, stay the same across resumed runs. Objects whose suffix is not asked for are counted
per suffix in the summary (never silently dropped).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from apm import storage
from apm.inference import IMAGE_SUFFIXES, known_errors
from apm.names import image_id_from_name
from apm.schemas import LISTING_SCHEMA

log = logging.getLogger(__name__)

DONE_FILE = "_SUCCESS.json"


@dataclass(frozen=True)
class ListingConfig:
    source: str  # manifest .parquet, or a folder / s3:// prefix
    folder: str  # where the parts go
    suffixes: tuple[str, ...] | None = IMAGE_SUFFIXES  # None: every object
    rows_per_part: int = 200_000
    fanout: int = 64  # sub-folders to list in parallel
    max_depth: int = 3  # how deep the driver walks to find them

    def __post_init__(self) -> None:
        if self.rows_per_part < 1 or self.fanout < 1 or self.max_depth < 0:
            raise ValueError("rows_per_part and fanout must be at least 1, max_depth at least 0")


@dataclass
class Listing:
    folder: str
    parts: list[str]  # in order
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)  # suffix -> objects not listed
    seconds: float = 0.0
    reused: bool = False

    def lines(self) -> list[str]:
        how = "reused" if self.reused else f"listed in {self.seconds:.1f} s"
        out = [f"listing: {self.rows} objects in {len(self.parts)} parts ({how}): {self.folder}"]
        if self.skipped:
            out.append("  not listed (other suffixes): " + ", ".join(
                f"{suffix or '(none)'} x{n}" for suffix, n in sorted(self.skipped.items())))
        return out

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole listing, in order."""
        tables = [storage.read_table(part, columns) for part in self.parts]
        return pa.concat_tables(tables) if tables else LISTING_SCHEMA.empty_table().select(
            columns or LISTING_SCHEMA.names)


# --- objects --------------------------------------------------------------------------------

def _suffix(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _mtime(info: dict) -> dt.datetime | None:
    value = info.get("LastModified") or info.get("mtime")
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


def _rows(infos: list[tuple[str, dict]], prefix: str, suffixes: tuple[str, ...] | None,
          skipped: Counter) -> list[dict]:
    """Listing rows of the files among ``infos`` (fsspec paths inside ``prefix``'s store)."""
    rows = []
    for name, info in infos:
        if info.get("type") == "directory":
            continue
        if suffixes and not name.lower().endswith(suffixes):
            skipped[_suffix(name)] += 1
            continue
        uri = storage.uri_of(name, prefix)
        etag = info.get("ETag")
        rows.append({"uri": uri, "image_id": image_id_from_name(uri), "size": info.get("size"),
                     "mtime": _mtime(info), "etag": etag.strip('"') if etag else None,
                     "error": None})
    return rows


def _write_parts(rows: list[dict], folder: str, stem: str, rows_per_part: int) -> list[str]:
    parts = []
    for i in range(0, max(len(rows), 1), rows_per_part):
        chunk = rows[i:i + rows_per_part]
        if not chunk:
            break
        uri = storage.join(folder, f"part-{stem}-{i // rows_per_part:05d}.parquet")
        storage.write_table(pa.Table.from_pylist(chunk, schema=LISTING_SCHEMA), uri)
        parts.append(uri)
    return parts


def _list_subtree(prefix: str, folder: str, stem: str, suffixes: tuple[str, ...] | None,
                  rows_per_part: int, storage_env: dict[str, str]) -> tuple[list[str], int, dict]:
    """A Ray task: list everything below ``prefix`` and write it as parts named by ``stem``."""
    storage.apply_env(storage_env)
    fs, path = storage.filesystem(prefix)
    skipped: Counter = Counter()
    rows = _rows(sorted(fs.find(path, detail=True).items()), prefix, suffixes, skipped)
    return _write_parts(rows, folder, stem, rows_per_part), len(rows), dict(skipped)


def _walk(prefix: str, config: ListingConfig) -> tuple[list[tuple[str, dict]], list[str]]:
    """Files of the top levels, and the sub-folders (URIs) left to list in parallel."""
    fs, path = storage.filesystem(prefix)
    files: list[tuple[str, dict]] = []
    whole: list[str] = []  # folders a task lists whole, without splitting them
    folders = [path]
    for _ in range(config.max_depth + 1):
        found: list[str] = []
        for folder in folders:
            infos = fs.ls(folder, detail=True)
            # An S3 key with an empty segment (``a//b.jpg``) shows as a sub-folder named like
            # its parent, which fsspec cannot list apart: list that folder as one subtree.
            if any(i.get("type") == "directory" and i["name"].rstrip("/") == folder.rstrip("/")
                   for i in infos):
                whole.append(folder)
                continue
            for info in infos:
                if info.get("type") == "directory":
                    found.append(info["name"])
                else:
                    files.append((info["name"], info))
        folders = sorted(found)
        if not folders or len(folders) + len(whole) >= config.fanout:
            break
    return sorted(files), [storage.uri_of(f, prefix) for f in sorted(whole + folders)]


def _list_prefix(config: ListingConfig, folder: str) -> tuple[list[str], int, Counter]:
    import ray

    prefix = storage.normalize(config.source)
    skipped: Counter = Counter()
    top, subfolders = _walk(prefix, config)
    top_rows = _rows(top, prefix, config.suffixes, skipped)
    parts = _write_parts(top_rows, folder, "00000", config.rows_per_part)
    rows = len(top_rows)
    task = ray.remote(num_cpus=0.25, max_retries=3)(_list_subtree)
    futures = [task.remote(sub, folder, f"{i + 1:05d}", config.suffixes, config.rows_per_part,
                           storage.ray_env_vars())
               for i, sub in enumerate(subfolders)]
    for sub_parts, n, sub_skipped in ray.get(futures):
        parts += sub_parts
        rows += n
        skipped.update(sub_skipped)
    return sorted(parts), rows, skipped


def _list_manifest(config: ListingConfig, folder: str) -> tuple[list[str], int, Counter]:
    table = storage.read_table(config.source)
    if "uri" not in table.column_names:
        raise storage.StorageError(f"{config.source}: has no 'uri' column; is it a manifest?")
    n = table.num_rows

    def column(name: str) -> list:
        return table.column(name).to_pylist() if name in table.column_names else [None] * n

    uris = column("uri")
    errors = known_errors(uris, column("image_status"), column("image_error"))
    rows = [{"uri": u, "image_id": i, "size": None, "mtime": None, "etag": None, "error": e}
            for u, i, e in zip(uris, column("image_id"), errors)]
    return _write_parts(rows, folder, "00000", config.rows_per_part), n, Counter()


def build_listing(config: ListingConfig) -> Listing:
    """List ``config.source`` into ``config.folder``, or reuse a complete listing found there.

    Ray must be up for a folder / prefix source. Raises StorageError when nothing is found.
    """
    folder = storage.normalize(config.folder)
    done = storage.join(folder, DONE_FILE)
    if storage.exists(done):
        meta = json.loads(storage.read_text(done))
        return Listing(folder, [storage.join(folder, p) for p in meta["parts"]], meta["rows"],
                       meta["skipped"], meta["seconds"], reused=True)
    if storage.exists(folder):
        storage.remove(folder, recursive=True)  # an interrupted listing: start it again
    start = time.perf_counter()
    is_manifest = config.source.lower().endswith(".parquet")
    parts, rows, skipped = (_list_manifest if is_manifest else _list_prefix)(config, folder)
    if rows == 0:
        kinds = ", ".join(config.suffixes) if config.suffixes else "objects"
        extra = f"; other suffixes: {dict(skipped)}" if skipped else ""
        raise storage.StorageError(f"{config.source}: nothing to process (no {kinds}{extra})")
    listing = Listing(folder, parts, rows, dict(skipped), time.perf_counter() - start)
    storage.write_text(done, json.dumps({
        "source": config.source, "parts": [posixpath.basename(p) for p in parts], "rows": rows,
        "skipped": listing.skipped, "seconds": listing.seconds}))
    log.info("\n".join(listing.lines()))
    return listing

