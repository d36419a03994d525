"""The input listing of a bulk job: every object to process, written once, in a fixed order.

The listing streams: listing tasks write their objects into Parquet parts of at most
``rows_per_part`` rows as pages come in, so no process holds more than a part, and the driver
holds none (it only plans the tasks and gets back part names and counts).

* An S3 prefix is listed as key ranges, whatever its shape: a flat prefix (every key at one
  level, the layout an upload service leaves) and a deep tree alike. The driver reads a first
  page; if there is more, it cuts the key space after that page into at most ``tasks`` ranges
  by probing where keys are (``list_objects_v2`` with ``StartAfter`` and ``MaxKeys=1``, about
  twenty probes a cut), and one Ray task pages through each range.
* A local folder is walked by the driver for a few levels, only far enough to find about
  ``tasks`` sub-folders (it keeps folder names, never file names); the folders, and the files of
  the levels it walked, are grouped in order into at most ``tasks`` Ray tasks. A flat local
  folder is one task: a directory cannot be listed by ranges.
* A manifest ``.parquet`` is read in batches by the driver and written out in parts.
* WebDataset tar shards (:mod:`apm.data.webdataset`) and Parquet files of image bytes
  (:mod:`apm.data.parquet_images`) are listed by :func:`list_sources`: one Ray task per group of
  shards / files, one row per image member / table row, in shard order.

The listing lives in ``FOLDER/part-*.parquet`` (``LISTING_SCHEMA``) with ``FOLDER/_SUCCESS.json``
written last: each part's rows and a digest of its URIs. A rerun that finds it reuses the
listing, so row positions, and therefore output shards, stay the same across resumed runs.
Objects whose suffix is not asked for are counted per suffix in the summary (never silently
dropped). Bulk jobs read the listing as a Ray dataset (:meth:`Listing.dataset`): the workers
read the parts, the driver never loads them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm.core import storage
from apm.core.names import image_id_from_name
from apm.core.rows import IMAGE_SUFFIXES, known_errors, retrying_task_args
from apm.core.schemas import LISTING_SCHEMA

log = logging.getLogger(__name__)

#: The folder of a job's output where its input is listed.
LISTING_FOLDER = "_listing"
DONE_FILE = "_SUCCESS.json"
#: Version of the ``_SUCCESS.json`` layout; a listing of another version is listed again.
LISTING_FORMAT = 3
#: Rows per Parquet row group of a part: what a worker reads to get one block of rows.
ROW_GROUP_ROWS = 4096
#: Most tasks reading listing rows at once for a job (each reads a block in tens of ms).
READ_TASKS = 16
#: Keys per S3 listing page (the most S3 returns).
PAGE_KEYS = 1000
#: Listing tasks per cluster CPU when ``tasks`` is not set (they wait on the store, not CPUs).
TASKS_PER_CPU = 4
#: Seconds between progress lines of a long listing.
PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class ListingConfig:
    source: str  # manifest .parquet, a folder / s3:// prefix, tar shards, Parquet of images
    folder: str  # where the parts go
    suffixes: tuple[str, ...] | None = IMAGE_SUFFIXES  # None: every object (or tar member)
    rows_per_part: int = 200_000
    tasks: int | None = None  # listing tasks at most; None: TASKS_PER_CPU per cluster CPU
    max_depth: int = 3  # local trees: how deep the driver walks to find folders to spread
    page_keys: int = PAGE_KEYS  # keys per S3 listing request
    kind: str = "auto"  # one of apm.data.inputs.INPUT_KINDS
    image_column: str | None = None  # Parquet input: the column of image bytes
    id_column: str | None = None  # Parquet input: the rows' identity; None: row numbers
    keep_columns: tuple[str, ...] = ()  # Parquet input: columns carried to the output

    def __post_init__(self) -> None:
        if min(self.rows_per_part, self.page_keys, self.tasks or 1) < 1:
            raise ValueError("rows_per_part, page_keys and tasks must be at least 1")
        if self.max_depth < 0:
            raise ValueError("max_depth must be at least 0")


@dataclass
class Listing:
    folder: str
    parts: list[str]  # in order
    counts: list[int]  # rows of each part
    digest: str  # of every URI, in order (row positions make shards)
    skipped: dict[str, int] = field(default_factory=dict)  # suffix -> objects not listed
    seconds: float = 0.0
    reused: bool = False
    keep_columns: list[str] = field(default_factory=list)  # input columns after LISTING_SCHEMA's
    image_column: str | None = None  # Parquet input: where a row's image bytes are

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self._cached: tuple[int, pa.Table] | None = None

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def lines(self) -> list[str]:
        how = "reused" if self.reused else f"listed in {self.seconds:.1f} s"
        out = [f"listing: {self.rows} objects in {len(self.parts)} parts ({how}): {self.folder}"]
        if self.skipped:
            out.append("  not listed (other suffixes): " + ", ".join(
                f"{suffix or '(none)'} x{n}" for suffix, n in sorted(self.skipped.items())))
        return out

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole listing, in order (small listings; bulk jobs use :meth:`dataset`)."""
        return self.read_rows(0, self.rows, columns)

    def read_rows(self, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
        """Rows ``[start, stop)`` of the listing (default: every column, keep columns
        included); the last part read is kept for the next call."""
        columns = columns or LISTING_SCHEMA.names + self.keep_columns
        pieces = []
        part = max(int(np.searchsorted(self.offsets, start, side="right")) - 1, 0)
        while start < stop and part < len(self.parts):
            first = int(self.offsets[part])
            end = min(stop, int(self.offsets[part + 1]))
            if end > start:
                pieces.append(self._part(part).slice(start - first, end - start).select(columns))
            start, part = end, part + 1
        return (pa.concat_tables(pieces) if pieces
                else self._part(0).slice(0, 0).select(columns))

    def _part(self, part: int) -> pa.Table:
        if self._cached is None or self._cached[0] != part:
            self._cached = (part, storage.read_table(self.parts[part]))
        return self._cached[1]

    def blocks(self, rows: np.ndarray, per_block: int) -> list[dict]:
        """Read specs of ``rows`` (sorted listing positions): runs of consecutive rows of one
        part, at most ``per_block`` each."""
        specs: list[dict] = []
        if not len(rows):
            return specs
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        # A run breaks where the row is not the previous one plus one, or the part changes.
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(part_of) != 0)) + 1
        for run_start, run_stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            part = int(part_of[run_start])
            first = int(self.offsets[part])
            for lo in range(int(run_start), int(run_stop), per_block):
                hi = min(lo + per_block, int(run_stop))
                specs.append({"part": self.parts[part], "first_row": first,
                              "start": int(rows[lo]) - first, "stop": int(rows[hi - 1]) - first + 1})
        return specs

    def dataset(self, rows: np.ndarray, per_block: int):
        """A Ray dataset of ``rows`` (sorted positions) with ``row``, :data:`READ_COLUMNS` (and
        a Parquet input's ``image_column``), read from the parts by Ray tasks, one block per
        ``per_block`` rows."""
        import ray

        specs = self.blocks(np.asarray(rows, np.int64), per_block)
        # No CPU of their own: a fixed pool of actors may hold every CPU, and a read is a few
        # ranged GETs; capped, as 0-CPU tasks are not bounded by the cluster's CPUs.
        return ray.data.from_items(specs, override_num_blocks=len(specs)).map_batches(
            read_blocks, batch_size=None, batch_format="pyarrow",
            fn_kwargs={"storage_env": storage.ray_env_vars(), "image_column": self.image_column},
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=READ_TASKS), **retrying_task_args())


#: The listing columns that decoding needs (:mod:`apm.data.row_bytes`).
READ_COLUMNS = ["uri", "size", "error", "shard", "offset"]


def read_blocks(specs: pa.Table, storage_env: dict[str, str],
                image_column: str | None = None) -> pa.Table:
    """A Ray Data task: the listing rows of read specs (:meth:`Listing.blocks`), with ``row``
    and, for Parquet input, the ``image_column`` to read each row's bytes from."""
    storage.apply_env(storage_env)
    tables = []
    for spec in specs.to_pylist():
        with storage.open_file(spec["part"]) as f:
            parquet = pq.ParquetFile(f)
            # The row groups that hold [start, stop): every part has ROW_GROUP_ROWS per group.
            groups = range(spec["start"] // ROW_GROUP_ROWS, (spec["stop"] - 1) // ROW_GROUP_ROWS + 1)
            table = parquet.read_row_groups(list(groups), columns=READ_COLUMNS)
        offset = spec["start"] - groups[0] * ROW_GROUP_ROWS
        table = table.slice(offset, spec["stop"] - spec["start"])
        rows = np.arange(spec["start"], spec["stop"], dtype=np.int64) + spec["first_row"]
        tables.append(table.add_column(0, "row", pa.array(rows)))
    table = pa.concat_tables(tables)
    if image_column is not None:
        table = table.append_column("image_column", pa.array([image_column] * table.num_rows))
    return table


# --- writing parts --------------------------------------------------------------------------

def _suffix(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _mtime(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


def uri_digest(uris: list[str | None]) -> str:
    digest = hashlib.sha256()
    digest.update("\0".join("" if u is None else u for u in uris).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


class PartWriter:
    """Rows in, Parquet parts of ``rows_per_part`` rows out, named ``part-STEM-NNNNN``."""

    def __init__(self, folder: str, stem: str, rows_per_part: int,
                 suffixes: tuple[str, ...] | None, schema: pa.Schema = LISTING_SCHEMA) -> None:
        self.folder, self.stem, self.rows_per_part, self.suffixes = (folder, stem, rows_per_part,
                                                                     suffixes)
        self.schema = schema  # LISTING_SCHEMA, then any keep columns
        self.rows: list[dict] = []
        self.parts: list[dict] = []  # name, rows, digest
        self.skipped: Counter = Counter()

    def add_object(self, uri: str, size: int | None, mtime, etag: str | None) -> None:
        if self.suffixes and not uri.lower().endswith(self.suffixes):
            self.skipped[_suffix(uri)] += 1
            return
        self.add({"uri": uri, "image_id": image_id_from_name(uri), "size": size,
                  "mtime": _mtime(mtime), "etag": etag.strip('"') if etag else None,
                  "error": None})

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        name = f"part-{self.stem}-{len(self.parts):05d}.parquet"
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        storage.write_table(table, storage.join(self.folder, name), row_group_size=ROW_GROUP_ROWS)
        self.parts.append({"name": name, "rows": len(self.rows),
                           "digest": uri_digest([r["uri"] for r in self.rows])})
        self.rows = []

    def result(self) -> tuple[list[dict], dict[str, int]]:
        self.flush()
        return self.parts, dict(self.skipped)


# --- S3: key ranges -------------------------------------------------------------------------

_TOP = "\U0010ffff"  # above every character a key holds
_ASCII_TOP = 0x7E


def _char(code: int) -> str:
    # S3 echoes StartAfter in XML: no surrogates or U+FFFE/U+FFFF there.
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000
    elif code in (0xFFFE, 0xFFFF):
        code = 0x10000
    return chr(code)


class _KeyRanges:
    """Where to cut the keys of ``bucket``/``prefix`` after ``after`` into listing ranges."""

    def __init__(self, fs, bucket: str, prefix: str) -> None:
        self.fs, self.bucket, self.prefix = fs, bucket, prefix
        self.probes = 0

    def next_key(self, after: str) -> str | None:
        """The first key after ``after`` (None: there is none)."""
        self.probes += 1
        page = self.fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=self.prefix,
                               StartAfter=after, MaxKeys=1)
        contents = page.get("Contents") or []
        return contents[0]["Key"] if contents else None

    def cut(self, first: str, hi: str | None) -> tuple[str, str] | None:
        """A key that splits the range from key ``first`` to ``hi`` (inclusive; None: no end)
        in two, and the first key after it; None if the range will not split.

        Finds the prefix ``first[:p]`` that every key of the range shares, then the highest
        character any of them has at ``p``, and cuts half way between ``first[p]`` and it:
        about five probes for ``p`` and ten for the character."""
        def keys_after(key: str) -> bool:
            found = self.next_key(key)
            return found is not None and (hi is None or found <= hi)

        # keys_after(first[:j] + _TOP) grows with j: p is the largest j where it is False.
        low, high = len(self.prefix), len(first) + 1
        while high - low > 1:
            middle = (low + high) // 2
            if keys_after(first[:middle] + _TOP):
                high = middle
            else:
                low = middle
        p = low
        stem = first[:p]
        ours = ord(first[p]) if p < len(first) else 0x1F
        # The highest character at p: the smallest c with no key above stem + c.
        low, high = ours, 0x10FFFF
        if not keys_after(stem + _char(_ASCII_TOP) + _TOP):
            high = min(high, _ASCII_TOP)
        while high - low > 1:
            middle = (low + high) // 2
            if keys_after(stem + _char(middle) + _TOP):
                low = middle
            else:
                high = middle
        middle = (ours + high) // 2
        if middle < 0x20 or high <= ours:
            return None
        key = stem + _char(middle) + _TOP
        after = self.next_key(key)
        if after is None or after <= first or (hi is not None and after > hi):
            return None
        return key, after

    def split(self, after: str, tasks: int) -> list[tuple[str, str | None]]:
        """At most ``tasks`` ranges ``(after, upto]`` covering every key after ``after``."""
        first = self.next_key(after)
        if first is None:
            return []
        ranges = [(after, first, None, True)]  # (after, first key, upto, may split)
        with ThreadPoolExecutor(16) as pool:
            while len(ranges) < tasks:
                chosen = [i for i, r in enumerate(ranges) if r[3]][:tasks - len(ranges)]
                if not chosen:
                    break
                cuts = dict(zip(chosen, pool.map(lambda r: self.cut(r[1], r[2]),
                                                 [ranges[i] for i in chosen])))
                split = []
                for i, (lo, first_key, hi, may_split) in enumerate(ranges):
                    cut = cuts.get(i)
                    if cut is not None:
                        split += [(lo, first_key, cut[0], True), (cut[0], cut[1], hi, True)]
                    else:  # a range that would not split is left whole from now on
                        split.append((lo, first_key, hi, may_split and i not in cuts))
                ranges = split
        return [(lo, hi) for lo, _, hi, _ in ranges]


def _s3_pages(fs, bucket: str, prefix: str, after: str | None, upto: str | None,
              page_keys: int = PAGE_KEYS) -> Iterator[list[dict]]:
    """Pages of the objects after ``after`` up to ``upto`` (inclusive; None: to the end)."""
    while True:
        kwargs = {"StartAfter": after} if after is not None else {}
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=page_keys,
                          **kwargs)
        contents = page.get("Contents") or []
        inside = [c for c in contents if upto is None or c["Key"] <= upto]
        if inside:
            yield inside
        if not page.get("IsTruncated") or not contents or len(inside) < len(contents):
            return
        after = contents[-1]["Key"]


def _write_s3_objects(writer: PartWriter, contents: list[dict], bucket: str) -> None:
    for obj in contents:
        key = obj["Key"]
        if key.endswith("/"):  # a folder marker, not an object
            continue
        writer.add_object(f"s3://{bucket}/{key}", obj.get("Size"), obj.get("LastModified"),
                          obj.get("ETag"))


# --- local folders --------------------------------------------------------------------------

def _file_size(entry: os.DirEntry) -> tuple[int | None, float | None]:
    try:
        stat = entry.stat()
        return stat.st_size, stat.st_mtime
    except OSError:  # a dangling link: still a row, whose read says why
        return None, None


def _write_local_files(writer: PartWriter, folder: str) -> list[str]:
    """The files directly in ``folder``, sorted; returns its sub-folders, sorted."""
    with os.scandir(folder) as entries:
        found = sorted(entries, key=lambda e: e.name)
    subfolders = []
    for entry in found:
        if entry.is_dir(follow_symlinks=False):
            subfolders.append(entry.path)
            continue
        size, mtime = _file_size(entry)
        writer.add_object(storage.uri_of(entry.path, folder), size, mtime, None)
    return subfolders


def _write_local_tree(writer: PartWriter, folder: str) -> None:
    pending = [folder]
    while pending:  # depth first, in name order
        pending += reversed(_write_local_files(writer, pending.pop()))


def _local_units(root: str, tasks: int, max_depth: int) -> list[tuple[str, str]]:
    """What the listing tasks list, in order: ("files", folder) for the levels the driver
    walks, ("tree", folder) below them. Only folder names are kept."""
    units: list[tuple[str, str]] = []
    folders = [root]
    for depth in range(max_depth + 1):
        found = []
        for folder in folders:
            has_files = False
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        found.append(entry.path)
                    else:
                        has_files = True
            if has_files:
                units.append(("files", folder))
        folders = sorted(found)
        if not folders or len(folders) + len(units) >= tasks or depth == max_depth:
            break
    return units + [("tree", f) for f in folders]


# --- listing tasks --------------------------------------------------------------------------

def _list_units(units: list[tuple], folder: str, stem: str, suffixes: tuple[str, ...] | None,
                rows_per_part: int, storage_env: dict[str, str]) -> tuple[list[dict], dict]:
    """A Ray task: list ``units`` in order into parts named by ``stem``."""
    storage.apply_env(storage_env)
    writer = PartWriter(folder, stem, rows_per_part, suffixes)
    for unit in units:
        if unit[0] == "range":
            _, bucket, prefix, after, upto, page_keys = unit
            fs, _ = storage.filesystem(f"s3://{bucket}")
            for contents in _s3_pages(fs, bucket, prefix, after, upto, page_keys):
                _write_s3_objects(writer, contents, bucket)
        elif unit[0] == "files":
            _write_local_files(writer, unit[1])
        else:
            _write_local_tree(writer, unit[1])
    return writer.result()


def _default_tasks() -> int:
    import ray

    return TASKS_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))


def _plan_s3(prefix: str, tasks: int, page_keys: int, writer: PartWriter) -> list[list[tuple]]:
    fs, path = storage.filesystem(prefix)
    bucket, _, key = path.partition("/")
    key_prefix = key.rstrip("/") + "/" if key else ""
    page = next(_s3_pages(fs, bucket, key_prefix, None, None, page_keys), [])
    _write_s3_objects(writer, page, bucket)
    if len(page) < page_keys:
        return []
    ranges = _KeyRanges(fs, bucket, key_prefix)
    start = time.perf_counter()
    cuts = ranges.split(page[-1]["Key"], tasks)
    log.info("listing %s: %d key ranges after the first page (%d probes, %.1f s)", prefix,
             len(cuts), ranges.probes, time.perf_counter() - start)
    return [[("range", bucket, key_prefix, lo, hi, page_keys)] for lo, hi in cuts]


def _plan_local(prefix: str, tasks: int, max_depth: int) -> list[list[tuple]]:
    units = _local_units(storage.filesystem(prefix)[1], tasks, max_depth)
    groups = np.array_split(np.arange(len(units)), min(tasks, len(units))) if units else []
    return [[units[i] for i in group] for group in groups if len(group)]


def _list_prefix(config: ListingConfig, folder: str) -> tuple[list[dict], Counter]:
    prefix = storage.normalize(config.source)
    tasks = config.tasks or _default_tasks()
    driver = PartWriter(folder, "00000", config.rows_per_part, config.suffixes)
    groups = (_plan_s3(prefix, tasks, config.page_keys, driver) if storage.is_s3(prefix)
              else _plan_local(prefix, tasks, config.max_depth))
    parts, skipped = driver.result()
    skipped = Counter(skipped)
    task = _listing_task(_list_units)
    pending = [task.remote(units, folder, f"{i + 1:05d}", config.suffixes, config.rows_per_part,
                           storage.ray_env_vars())
               for i, units in enumerate(groups)]
    return _gather(pending, parts, skipped)


def _listing_task(function: Callable):
    import ray

    # A task that failed (a store fault past botocore's retries, a lost node) is run again; it
    # writes the same parts under the same names.
    return ray.remote(num_cpus=0.25, max_retries=3, retry_exceptions=True)(function)


def _gather(pending: list, parts: list[dict], skipped: Counter) -> tuple[list[dict], Counter]:
    """Wait for listing tasks, adding their parts and skipped suffixes to ``parts``, ``skipped``."""
    import ray

    total = len(pending)
    start = last = time.perf_counter()
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        for task_parts, task_skipped in ray.get(done):
            parts += task_parts
            skipped.update(task_skipped)
        if pending and time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            log.info("listing: %d of %d tasks done after %.0f s (%d objects in those)",
                     total - len(pending), total, last - start, sum(p["rows"] for p in parts))
    return parts, skipped


#: Lists one source (a tar shard, a Parquet file) into a writer, in order.
SourceLister = Callable[[PartWriter, str], None]


def _list_source_group(sources: list[str], list_one: SourceLister, folder: str, stem: str,
                       suffixes: tuple[str, ...] | None, rows_per_part: int, schema: pa.Schema,
                       storage_env: dict[str, str]) -> tuple[list[dict], dict]:
    """A Ray task: list ``sources`` in order into parts named by ``stem``."""
    storage.apply_env(storage_env)
    writer = PartWriter(folder, stem, rows_per_part, suffixes, schema)
    for source in sources:
        list_one(writer, source)
    return writer.result()


def list_sources(config: ListingConfig, folder: str, sources: list[str], list_one: SourceLister,
                 schema: pa.Schema = LISTING_SCHEMA) -> tuple[list[dict], Counter]:
    """List ``sources`` (in order) with ``list_one`` in at most ``config.tasks`` Ray tasks,
    each a run of consecutive sources, so that parts sort in source order."""
    tasks = min(config.tasks or _default_tasks(), len(sources))
    task = _listing_task(_list_source_group)
    groups = np.array_split(np.arange(len(sources)), tasks) if sources else []
    pending = [task.remote([sources[i] for i in group], list_one, folder, f"{n + 1:05d}",
                           config.suffixes, config.rows_per_part, schema, storage.ray_env_vars())
               for n, group in enumerate(groups)]
    return _gather(pending, [], Counter())


def _list_manifest(config: ListingConfig, folder: str) -> tuple[list[dict], Counter]:
    with storage.open_file(config.source) as f:
        manifest = pq.ParquetFile(f)
        names = manifest.schema_arrow.names
        if "uri" not in names:
            raise storage.StorageError(f"{config.source}: has no 'uri' column; is it a manifest?")
        wanted = [c for c in ("uri", "image_id", "image_status", "image_error") if c in names]
        writer = PartWriter(folder, "00000", config.rows_per_part, None)
        for batch in manifest.iter_batches(batch_size=65_536, columns=wanted):
            n = batch.num_rows

            def column(name: str, batch=batch, n=n) -> list:
                return batch.column(name).to_pylist() if name in wanted else [None] * n

            uris = column("uri")
            errors = known_errors(uris, column("image_status"), column("image_error"))
            for u, i, e in zip(uris, column("image_id"), errors):
                writer.add({"uri": u, "image_id": i, "size": None, "mtime": None, "etag": None,
                            "error": e})
    parts, _ = writer.result()
    return parts, Counter()


def _listing_digest(parts: list[dict]) -> str:
    return "sha256:" + hashlib.sha256("".join(p["digest"] for p in parts).encode()).hexdigest()[:16]


def _reuse(folder: str, done: str) -> Listing | None:
    meta = json.loads(storage.read_text(done))
    if meta.get("format") != LISTING_FORMAT:
        log.warning("%s was written by an earlier version: listing again", folder)
        return None
    parts = meta["parts"]
    return Listing(folder, [storage.join(folder, p["name"]) for p in parts],
                   [p["rows"] for p in parts], _listing_digest(parts), meta["skipped"],
                   meta["seconds"], reused=True, keep_columns=meta["keep_columns"],
                   image_column=meta["image_column"])


def _lister(kind: str) -> Callable[[ListingConfig, str], tuple[list[dict], Counter]]:
    # Imported here: those modules build on this one's writers and tasks.
    from apm.data import parquet_images, webdataset

    return {"files": _list_prefix, "manifest": _list_manifest,
            "webdataset": webdataset.list_webdataset, "parquet": parquet_images.list_parquet}[kind]


def build_listing(config: ListingConfig) -> Listing:
    """List ``config.source`` into ``config.folder``, or reuse a complete listing found there.

    Ray must be up for a folder / prefix, tar shards or Parquet of images. Raises StorageError
    when nothing is found.
    """
    folder = storage.normalize(config.folder)
    done = storage.join(folder, DONE_FILE)
    if storage.exists(done):
        listing = _reuse(folder, done)
        if listing is not None:
            return listing
    if storage.exists(folder):
        storage.remove(folder, recursive=True)  # an interrupted listing: start it again
    from apm.data.inputs import resolve_kind  # here: it builds on apm.data.webdataset, built on this module

    start = time.perf_counter()
    kind = resolve_kind(config.source, config.kind, config.image_column)
    parts, skipped = _lister(kind)(config, folder)
    parts.sort(key=lambda p: p["name"])
    rows = sum(p["rows"] for p in parts)
    if rows == 0:
        kinds = ", ".join(config.suffixes) if config.suffixes else "objects"
        extra = f"; other suffixes: {dict(skipped)}" if skipped else ""
        raise storage.StorageError(f"{config.source}: nothing to process (no {kinds}{extra})")
    seconds = time.perf_counter() - start
    keep = list(config.keep_columns) if kind == "parquet" else []
    image_column = config.image_column if kind == "parquet" else None
    listing = Listing(folder, [storage.join(folder, p["name"]) for p in parts],
                      [p["rows"] for p in parts], _listing_digest(parts), dict(skipped), seconds,
                      keep_columns=keep, image_column=image_column)
    storage.write_text(done, json.dumps({
        "format": LISTING_FORMAT, "source": config.source, "kind": kind, "parts": parts,
        "rows": rows, "skipped": listing.skipped, "seconds": seconds, "keep_columns": keep,
        "image_column": image_column}))
    log.info("\n".join(listing.lines()) + f" ({rows / max(seconds, 1e-9):.0f} objects/s)")
    return listing


def fresh_listing(config: ListingConfig) -> Listing:
    """A new listing of ``config.source``, replacing any left in ``config.folder`` (for jobs
    that do not resume, so that a rerun sees the input as it is now). Ray must be up."""
    if storage.exists(config.folder):
        storage.remove(config.folder, recursive=True)
    return build_listing(config)
