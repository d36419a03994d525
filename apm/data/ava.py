"""Reader for the official AVA package layout -> the manifest table (``MANIFEST_SCHEMA``).

Layout (Murray, Marchesotti & Perronnin, CVPR 2012)::

    AVA.txt                      index image_id v1..v10 tag1 tag2 challenge_id   (15 columns)
    tags.txt                     tag_id name...
    challenges.txt               challenge_id name
    aesthetics_image_lists/*.jpgl   one image id per line (generic_ls_train, generic_test, ...)
    style_image_lists/           styles.txt, train.jpgl + train.lab, test.jpgl + test.multilab

In the official file a missing tag or challenge is ``0``; the real label set shipped with this
project marks rows whose semantics are unknown with ``-1``. Both become null ids; ``-1`` also
sets ``semantics_known`` to False so the two cases stay distinguishable.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from apm.core import storage
from apm.core.schemas import MANIFEST_SCHEMA, NUM_BINS, VOTES_TYPE
from apm.votes.distributions import histogram_moments

log = logging.getLogger(__name__)

AVA_COLUMNS = 3 + NUM_BINS + 2  # index, image_id, 10 counts, tag1, tag2, challenge
UNKNOWN = -1
GENERIC_SPLITS = {"generic_ls_train": "train", "generic_test": "test"}


class AvaFormatError(ValueError):
    """A malformed line in an AVA file; the message names the file and the line."""


@dataclass
class ParseReport:
    """What reading the package found, so a job can account for every input line."""

    rows: int = 0
    bad_rows: list[str] = field(default_factory=list)  # one message per skipped line

    def bad(self, message: str, skip: bool) -> None:
        if not skip:
            raise AvaFormatError(message)
        self.bad_rows.append(message)


@dataclass
class AvaRows:
    """Parsed ``AVA.txt`` columns as numpy arrays, one element per good row."""

    image_id: np.ndarray  # int64
    votes: np.ndarray  # (n, 10) int32
    tags: np.ndarray  # (n, 2) int32, -1 unknown, 0 absent
    challenge: np.ndarray  # int32
    line: np.ndarray  # int32, 1-based


def _lines(text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def parse_ava_txt(text: str, source: str, report: ParseReport, skip_bad_rows: bool) -> AvaRows:
    ids, votes, tags, challenges, lines = [], [], [], [], []
    seen: dict[int, int] = {}
    for number, line in _lines(text):
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) != AVA_COLUMNS:
            report.bad(f"{where}: expected {AVA_COLUMNS} columns, got {len(parts)}", skip_bad_rows)
            continue
        try:
            values = [int(p) for p in parts]
        except ValueError:
            report.bad(f"{where}: non-integer value in {line.strip()!r}", skip_bad_rows)
            continue
        counts = values[2:2 + NUM_BINS]
        if min(counts) < 0:
            report.bad(f"{where}: negative vote count in {line.strip()!r}", skip_bad_rows)
            continue
        if sum(counts) == 0:
            report.bad(f"{where}: image {values[1]} has zero votes", skip_bad_rows)
            continue
        if values[1] in seen:
            report.bad(f"{where}: image {values[1]} already listed on line {seen[values[1]]}",
                       skip_bad_rows)
            continue
        seen[values[1]] = number
        ids.append(values[1])
        votes.append(counts)
        tags.append(values[12:14])
        challenges.append(values[14])
        lines.append(number)
    report.rows = len(ids)
    return AvaRows(
        image_id=np.asarray(ids, dtype=np.int64),
        votes=np.asarray(votes, dtype=np.int32).reshape(-1, NUM_BINS),
        tags=np.asarray(tags, dtype=np.int32).reshape(-1, 2),
        challenge=np.asarray(challenges, dtype=np.int32),
        line=np.asarray(lines, dtype=np.int32),
    )


def parse_id_names(text: str, source: str, report: ParseReport, skip: bool) -> dict[int, str]:
    """``tags.txt`` / ``challenges.txt`` / ``styles.txt``: ``id name with spaces``."""
    names: dict[int, str] = {}
    for number, line in _lines(text):
        key, _, name = line.strip().partition(" ")
        try:
            names[int(key)] = name.strip()
        except ValueError:
            report.bad(f"{source} line {number}: expected 'id name', got {line.strip()!r}", skip)
    return names


def parse_id_list(text: str, source: str, report: ParseReport, skip: bool) -> list[int]:
    """A ``.jpgl`` image list: one image id per line."""
    ids = []
    for number, line in _lines(text):
        try:
            ids.append(int(line.strip()))
        except ValueError:
            report.bad(f"{source} line {number}: expected an image id, got {line.strip()!r}", skip)
    return ids


def _optional_text(uri: str) -> str | None:
    if storage.exists(uri):
        return storage.read_text(uri)
    log.warning("%s not found; the columns it fills stay null", uri)
    return None


def _read_image_lists(ava_dir: str, report: ParseReport, skip: bool) -> dict[str, list[int]]:
    folder = storage.join(ava_dir, "aesthetics_image_lists")
    if not storage.exists(folder):
        log.warning("%s not found; split and image_lists stay empty", folder)
        return {}
    lists = {}
    for info in storage.list_files(folder, suffixes=(".jpgl",)):
        name = info.uri.rsplit("/", 1)[-1][: -len(".jpgl")]
        lists[name] = parse_id_list(storage.read_text(info.uri), info.uri, report, skip)
    return lists


def _read_styles(ava_dir: str, report: ParseReport, skip: bool) -> dict[int, tuple[list[int], str]]:
    """image_id -> (style ids, 'train' | 'test'). train.lab holds one label, test.multilab 14 flags."""
    folder = storage.join(ava_dir, "style_image_lists")
    names_text = _optional_text(storage.join(folder, "styles.txt"))
    if names_text is None:
        return {}
    styles: dict[int, tuple[list[int], str]] = {}
    for split, labels_file in (("train", "train.lab"), ("test", "test.multilab")):
        ids_uri, labels_uri = storage.join(folder, f"{split}.jpgl"), storage.join(folder, labels_file)
        ids_text, labels_text = _optional_text(ids_uri), _optional_text(labels_uri)
        if ids_text is None or labels_text is None:
            continue
        ids = parse_id_list(ids_text, ids_uri, report, skip)
        label_lines = [line for _, line in _lines(labels_text)]
        if len(label_lines) != len(ids):
            report.bad(f"{labels_uri}: {len(label_lines)} label lines for {len(ids)} ids in "
                       f"{ids_uri}", skip)
            continue
        for image_id, line in zip(ids, label_lines):
            values = [int(v) for v in line.split()]
            style_ids = values if split == "train" else [i + 1 for i, v in enumerate(values) if v]
            styles[image_id] = (style_ids, split)
    return styles


def read_ava_package(ava_dir: str, images: str | None = None,
                     skip_bad_rows: bool = False) -> tuple[pa.Table, ParseReport]:
    """Read an AVA package (local or ``s3://``) into a manifest table.

    ``images``: a folder or prefix holding ``{image_id}.jpg``; it fills ``uri`` (the files are
    not checked here, see :func:`apm.data.images.check_images`).
    """
    report = ParseReport()
    ava_uri = storage.join(ava_dir, "AVA.txt")
    rows = parse_ava_txt(storage.read_text(ava_uri), ava_uri, report, skip_bad_rows)
    tag_text = _optional_text(storage.join(ava_dir, "tags.txt"))
    challenge_text = _optional_text(storage.join(ava_dir, "challenges.txt"))
    tag_names = parse_id_names(tag_text or "", "tags.txt", report, skip_bad_rows)
    challenge_names = parse_id_names(challenge_text or "", "challenges.txt", report, skip_bad_rows)

    lists = _read_image_lists(ava_dir, report, skip_bad_rows)
    lists_of_image: dict[int, list[str]] = defaultdict(list)
    for name in sorted(lists):
        for image_id in lists[name]:
            lists_of_image[image_id].append(name)
    styles = _read_styles(ava_dir, report, skip_bad_rows)
    style_names = parse_id_names(
        _optional_text(storage.join(ava_dir, "style_image_lists", "styles.txt")) or "",
        "styles.txt", report, skip_bad_rows) if styles else {}

    return _to_table(rows, images, tag_names, challenge_names, lists_of_image, styles,
                     style_names), report


def _semantic_column(ids: np.ndarray, names: dict[int, str]) -> tuple[pa.Array, pa.Array]:
    """Ids with 0 (absent) and -1 (unknown) as nulls, and their names."""
    valid = ids > 0
    id_array = pa.array(ids, type=pa.int32(), mask=~valid)
    name_array = pa.array([names.get(int(i)) if ok else None for i, ok in zip(ids, valid)],
                          type=pa.string())
    return id_array, name_array


def _to_table(rows: AvaRows, images: str | None, tag_names, challenge_names,
              lists_of_image, styles, style_names) -> pa.Table:
    moments = histogram_moments(rows.votes)
    known = ~((rows.tags == UNKNOWN).any(axis=1) | (rows.challenge == UNKNOWN))

    tag1_id, tag1_name = _semantic_column(rows.tags[:, 0], tag_names)
    tag2_id, tag2_name = _semantic_column(rows.tags[:, 1], tag_names)
    challenge_id, challenge_name = _semantic_column(rows.challenge, challenge_names)

    ids = rows.image_id.tolist()
    image_lists = [lists_of_image.get(i, []) for i in ids]
    split = [next((GENERIC_SPLITS[n] for n in names if n in GENERIC_SPLITS), None)
             for names in image_lists]
    style = [styles.get(i) for i in ids]
    if images:
        images = storage.normalize(images)
        uris = [storage.join(images, f"{i}.jpg") for i in ids]
    else:
        uris = [None] * len(ids)
    n = len(ids)
    columns = {
        "image_id": pa.array(rows.image_id, type=pa.int64()),
        "uri": pa.array(uris, type=pa.string()),
        "votes": pa.FixedSizeListArray.from_arrays(
            pa.array(rows.votes.reshape(-1), type=pa.int32()), NUM_BINS).cast(VOTES_TYPE),
        "n_votes": pa.array(moments.n_votes.astype(np.int32)),
        "mean": pa.array(moments.mean),
        "std": pa.array(moments.std),
        "semantics_known": pa.array(known),
        "tag1_id": tag1_id, "tag1_name": tag1_name,
        "tag2_id": tag2_id, "tag2_name": tag2_name,
        "challenge_id": challenge_id, "challenge_name": challenge_name,
        "split": pa.array(split, type=pa.string()),
        "image_lists": pa.array(image_lists, type=pa.list_(pa.string())),
        "style_ids": pa.array([s[0] if s else None for s in style], type=pa.list_(pa.int32())),
        "style_names": pa.array([[style_names.get(k) for k in s[0]] if s else None for s in style],
                                type=pa.list_(pa.string())),
        "style_split": pa.array([s[1] if s else None for s in style], type=pa.string()),
        "image_status": pa.nulls(n, pa.string()),
        "image_error": pa.nulls(n, pa.string()),
        "width": pa.nulls(n, pa.int32()),
        "height": pa.nulls(n, pa.int32()),
        "source_line": pa.array(rows.line, type=pa.int32()),
    }
    return pa.table(columns, schema=MANIFEST_SCHEMA)
