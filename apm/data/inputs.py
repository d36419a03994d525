"""What kind of input a scoring job's ``--input`` is: loose photos, a manifest, WebDataset tar
shards or Parquet files of image bytes."""
from __future__ import annotations

import os

from apm.core import storage
from apm.data.webdataset import TAR_SUFFIX, is_brace_pattern

#: ``--input-kind`` values; 'auto' decides from the input itself (:func:`resolve_kind`).
INPUT_KINDS = ("auto", "files", "manifest", "webdataset", "parquet")
PARQUET_SUFFIX = ".parquet"
#: Objects of a prefix looked at to tell a folder of tar shards from one of photos.
PEEK_OBJECTS = 100


def _first_objects(prefix: str) -> list[str]:
    """Names of up to :data:`PEEK_OBJECTS` objects directly below ``prefix`` (one request)."""
    fs, path = storage.filesystem(storage.normalize(prefix))
    if storage.is_s3(prefix):
        bucket, _, key = path.partition("/")
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/" if key
                          else "", Delimiter="/", MaxKeys=PEEK_OBJECTS)
        return [c["Key"] for c in page.get("Contents") or []]
    if not os.path.isdir(path):
        return []
    with os.scandir(path) as entries:
        return [e.name for e, _ in zip((e for e in entries if e.is_file()), range(PEEK_OBJECTS))]


def resolve_kind(source: str, kind: str, image_column: str | None) -> str:
    """The input kind of ``source``: ``kind`` itself unless 'auto'. Auto: a brace pattern, a
    ``.tar`` or a prefix whose first objects are all ``.tar`` -> 'webdataset'; an image column
    given -> 'parquet'; a ``.parquet`` -> 'manifest'; else 'files'."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    lowered = source.lower()
    if is_brace_pattern(source) or lowered.endswith(TAR_SUFFIX):
        return "webdataset"
    if image_column:
        return "parquet"
    if lowered.endswith(PARQUET_SUFFIX):
        return "manifest"
    names = _first_objects(source)
    if names and all(n.lower().endswith(TAR_SUFFIX) for n in names):
        return "webdataset"
    return "files"
