"""What a name means: the id a photo's name carries, and how any local name fits a ``uri``.

Names are data: none may stop a job. :func:`image_id_from_name` never raises, and
:func:`local_uri` turns every local path into a string that Parquet can hold and
:func:`local_path` turns back into the very same path.

Local names on POSIX are bytes; Python shows the bytes that are not UTF-8 as surrogate
escapes (PEP 383), which no UTF-8 column can store. Such a path is written as a ``file://``
URL whose path is the RFC 3986 percent-encoding of its raw bytes (``/data/caf\\xe9.jpg`` ->
``file:///data/caf%E9.jpg``). Every other path stays as it is: absolute paths start with
``/``, never with ``file://``, so the two forms cannot be confused.
"""
from __future__ import annotations

import os
import posixpath
import urllib.parse

#: AVA ids are int64 in every table.
_MAX_ID = 2**63 - 1
_DIGITS = frozenset("0123456789")

#: The prefix of a local path stored as a URL (RFC 8089, empty authority).
FILE_URL = "file://"


def image_id_from_name(uri: str) -> int | None:
    """AVA names its photos ID.jpg: an ASCII-digit stem that fits int64 is the id; any other
    name has none (``str.isdigit`` would take ``²³``, which ``int`` refuses)."""
    stem = posixpath.splitext(posixpath.basename(uri))[0]
    if not stem or not _DIGITS.issuperset(stem):
        return None
    value = int(stem)
    return value if value <= _MAX_ID else None


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes of bytes that are not UTF-8
        return False
    return True


def local_uri(path: str) -> str:
    """The ``uri`` of a local path: the path itself, or a ``file://`` URL of its raw bytes
    when it is not UTF-8."""
    if _is_utf8(path):
        return path
    return FILE_URL + urllib.parse.quote(os.fsencode(os.path.abspath(path)), safe="/")


def local_path(uri: str) -> str:
    """The local path that ``uri`` (a path or a ``file:///...`` URL) names, exactly."""
    if not uri.startswith(FILE_URL):
        return uri
    rest = uri[len(FILE_URL):]
    if not rest.startswith("/"):
        raise ValueError(f"{uri}: a file URL must name an absolute path (file:///...)")
    return os.fsdecode(urllib.parse.unquote_to_bytes(rest))
