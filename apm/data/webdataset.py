"""WebDataset tar shards as scoring input: which shards, and one listing row per image member.

A shard (``00000.tar``, as img2dataset, NeMo Curator and LAION write them) holds samples as
consecutive members ``KEY.jpg``, ``KEY.json``, ``KEY.txt``; the key is the member's path up to
the first dot of its base name. Each image member is one listing row: ``uri = SHARD#MEMBER``,
``shard``, ``key``, ``offset`` (where its bytes start in the tar) and ``size``, so that a
scoring task reads just those bytes (a ranged read, :mod:`apm.data.row_bytes`); the sample's
``KEY.json`` travels as ``meta``. Members of other suffixes are counted as not listed.

Ray Data's ``read_webdataset`` is not used: it yields samples as a stream, so it can neither
give the fixed row listing that exactly-once resume is built on (row positions make output
shards), nor an error row per bad member, nor the readable part of a corrupt shard (it fails
the read). Here one Ray task streams each shard once (``tarfile`` in stream mode: one
sequential read); a shard that ends inside a member or holds a broken header gives the rows
before it and one error row ``SHARD#@OFFSET`` naming the byte offset where it breaks.
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field

from apm.core import storage
from apm.core.names import image_id_from_name
from apm.data.listing import ListingConfig, PartWriter, list_sources

TAR_SUFFIX = ".tar"
META_SUFFIX = ".json"
#: Bytes a well-formed tar may hold after its last member: the two zero blocks of its end
#: marker, padded with zeros to a record (tar's default: 20 blocks of 512 bytes).
MAX_TRAILER = 20 * 512 + 1024
_BRACE = re.compile(r"\{([^{}]*)\}")


def is_brace_pattern(source: str) -> bool:
    return _BRACE.search(source) is not None


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for, in order: ``{00000..00003}`` is a range (zero
    padded to its first bound's width), ``{a,b}`` a list; a pattern may hold several."""
    found = _BRACE.search(pattern)
    if found is None:
        return [pattern]
    body, head, tail = found.group(1), pattern[:found.start()], pattern[found.end():]
    bounds = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if bounds:
        low, high = bounds.groups()
        if int(low) > int(high):
            raise ValueError(f"{pattern}: the range {{{body}}} runs backwards")
        choices = [str(i).zfill(len(low)) for i in range(int(low), int(high) + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise ValueError(f"{pattern}: {{{body}}} is neither a range {{N..M}} nor a list {{a,b}}")
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def shard_uris(source: str) -> list[str]:
    """The shards of ``source``: a brace pattern, one ``.tar``, a manifest ``.parquet`` of
    shard URIs (its ``uri`` column), or a folder / prefix (its ``.tar`` objects, sorted)."""
    if is_brace_pattern(source):
        return expand_braces(source)
    if source.lower().endswith(TAR_SUFFIX):
        return [storage.normalize(source)]
    if source.lower().endswith(".parquet"):
        return [u for u in storage.read_table(source, ["uri"]).column("uri").to_pylist() if u]
    return [info.uri for info in storage.list_files(source, (TAR_SUFFIX,))]


def list_webdataset(config: ListingConfig, folder: str) -> tuple[list[dict], Counter]:
    """The listing parts of the image members of every shard of ``config.source``."""
    shards = shard_uris(config.source)
    if not shards:
        raise storage.StorageError(f"{config.source}: no {TAR_SUFFIX} shards found")
    return list_sources(config, folder, shards, list_shard)


def member_key(name: str) -> str:
    """A member's WebDataset key: its path up to the first dot of its base name."""
    folder, base = posixpath.split(name)
    return posixpath.join(folder, base.split(".", 1)[0])


@dataclass
class _Sample:
    """The members of one key seen so far: image rows wait for the sample's ``KEY.json``."""

    key: str | None = None
    rows: list[dict] = field(default_factory=list)
    meta: str | None = None

    def flush(self, writer: PartWriter) -> None:
        for row in self.rows:
            writer.add({**row, "meta": self.meta})


def _meta_text(data: bytes) -> str | None:
    """A ``KEY.json`` as compact JSON text; None when it is not JSON (the photo still scores)."""
    try:
        return json.dumps(json.loads(data), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return None


def _error_row(shard: str, offset: int, why: str) -> dict:
    return {"uri": f"{shard}#@{offset}", "shard": shard, "offset": offset,
            "error": f"shard {shard} unreadable from byte {offset}: {why}"}


def _trailer_problem(shard: str, end: int, size: int) -> str | None:
    """Why the bytes after the last member are not a tar's end marker (None: they are)."""
    if size - end > MAX_TRAILER:
        return f"{size - end} bytes after the last member that tar cannot read"
    if storage.read_range(shard, end, size).strip(b"\0"):
        return "a damaged member header"
    return None


def list_shard(writer: PartWriter, shard: str) -> None:
    """Rows of the image members of ``shard`` (in tar order), then one error row if the shard
    is truncated or corrupt. A store fault raises :class:`storage.TransientStorageError`, so
    that the listing task is retried."""
    sample, offset = _Sample(), 0
    try:
        fs, path = storage.filesystem(shard)
        size = fs.size(path)
        with storage.open_file(shard) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                offset = member.offset
                if not member.isfile():
                    continue
                if member.offset_data + member.size > size:
                    raise tarfile.ReadError(f"it ends inside {member.name}")
                key = member_key(member.name)
                if key != sample.key:
                    sample.flush(writer)
                    sample = _Sample(key)
                lowered = member.name.lower()
                if lowered.endswith(META_SUFFIX):
                    sample.meta = _meta_text(tar.extractfile(member).read())
                elif writer.suffixes and not lowered.endswith(writer.suffixes):
                    writer.skipped[posixpath.splitext(lowered)[1]] += 1
                else:
                    sample.rows.append({
                        "uri": f"{shard}#{member.name}", "image_id": image_id_from_name(key),
                        "size": member.size, "shard": shard, "key": key,
                        "offset": member.offset_data})
                offset = tar.offset  # the next header: where a failure to read it is
            offset = tar.offset  # where the end marker (or what stopped tarfile) starts
        sample.flush(writer)
        problem = _trailer_problem(shard, offset, size)
        if problem:
            writer.add(_error_row(shard, offset, problem))
    except FileNotFoundError:
        writer.add(_error_row(shard, 0, "not found"))
    except Exception as err:  # noqa: BLE001 - a bad shard is rows plus an error row, never a failed job
        if storage.is_transient(err):
            raise storage.TransientStorageError(f"{shard}: {type(err).__name__}: {err}") from err
        sample.flush(writer)
        writer.add(_error_row(shard, offset, f"{type(err).__name__}: {err}"))
