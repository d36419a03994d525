"""One storage layer for local paths and ``s3://`` URIs.

Every job lists, reads and writes through this module, so local folders, AWS S3 and any
S3-compatible store (MinIO, Ceph, moto in tests) behave the same.

Configuration follows the AWS conventions: credentials from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``) or the usual credential chain, region from
``AWS_REGION`` / ``AWS_DEFAULT_REGION`` and the endpoint from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``. A job's ``--s3-endpoint`` option calls :func:`configure`, which sets
``AWS_ENDPOINT_URL`` so that the value is seen by this process and, through
:func:`ray_env_vars`, by every Ray worker.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

#: Environment variables that carry S3 configuration to Ray workers.
AWS_ENV_VARS: tuple[str, ...] = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)

# Fail fast on a dead endpoint instead of retrying for minutes: a preflight must answer quickly.
_S3_CONFIG_KWARGS = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}


class StorageError(RuntimeError):
    """A storage location cannot be used; the message names the URI and the reason."""


@dataclass(frozen=True)
class FileInfo:
    uri: str
    size: int


def configure(s3_endpoint: str | None = None) -> None:
    """Apply a job's ``--s3-endpoint`` option (None keeps what the environment says)."""
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def ray_env_vars() -> dict[str, str]:
    """The AWS variables of this process, for ``runtime_env={'env_vars': ...}`` of a Ray job."""
    return {name: os.environ[name] for name in AWS_ENV_VARS if os.environ.get(name)}


def apply_env(env: dict[str, str]) -> None:
    """In a Ray task: adopt the driver's :func:`ray_env_vars`, even if Ray was started before
    the driver was configured (a runtime_env only reaches workers of a fresh job)."""
    os.environ.update(env)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def normalize(uri: str) -> str:
    """The canonical form of a location: local paths absolute, no trailing slash."""
    if is_s3(uri):
        return uri.rstrip("/")
    return str(Path(uri).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return str(Path(base).joinpath(*parts))


def _s3_filesystem() -> fsspec.AbstractFileSystem:
    endpoint = s3_endpoint()
    # Credentials are passed explicitly (None falls back to boto's chain) so that a pickled
    # filesystem, as Ray ships to its controller and workers, carries them along.
    # s3fs caches instances per argument set, so this is cheap after the first call.
    return fsspec.filesystem(
        "s3",
        key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        token=os.environ.get("AWS_SESSION_TOKEN"),
        endpoint_url=endpoint,
        config_kwargs=_S3_CONFIG_KWARGS,
        # Stores other than AWS rarely support virtual-host addressing.
        client_kwargs={"region_name": os.environ.get("AWS_REGION")
                       or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"},
    )


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it."""
    if is_s3(uri):
        return _s3_filesystem(), uri[len("s3://"):].rstrip("/")
    return fsspec.filesystem("file"), str(Path(uri).expanduser().resolve())


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for ``uri`` (for Ray Data and pyarrow datasets) and the path in it."""
    fs, path = filesystem(uri)
    if is_s3(uri):
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return pafs.LocalFileSystem(), path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def open_file(uri: str, mode: str = "rb") -> IO:
    fs, path = filesystem(uri)
    if "w" in mode and not is_s3(uri):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, mode)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str, data: bytes) -> None:
    with open_file(uri, "wb") as f:
        f.write(data)


def write_text(uri: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def makedirs(uri: str) -> None:
    """Create a local folder; object stores have no folders, so this is a no-op there."""
    if not is_s3(uri):
        Path(uri).mkdir(parents=True, exist_ok=True)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def list_files(prefix: str, suffixes: tuple[str, ...] | None = None) -> Iterator[FileInfo]:
    """Every file below ``prefix`` (recursively), in sorted order, optionally by suffix."""
    prefix = normalize(prefix)
    fs, path = filesystem(prefix)
    scheme = "s3://" if is_s3(prefix) else ""
    for name, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        if suffixes and not name.lower().endswith(suffixes):
            continue
        yield FileInfo(uri=scheme + name, size=int(info.get("size") or 0))


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or a folder of Parquet files (a dataset), as one table."""
    fs, path = arrow_filesystem(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def write_table(table: pa.Table, uri: str) -> None:
    """Write one Parquet file; its parent folder is created where the store has folders."""
    fs, path = arrow_filesystem(uri)
    if not is_s3(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd")


# --- preflight ------------------------------------------------------------------------------

def _bucket(uri: str) -> str:
    return uri[len("s3://"):].split("/", 1)[0]


def _explain_s3_error(uri: str, err: BaseException) -> StorageError:
    text = f"{type(err).__name__}: {err}"
    endpoint = s3_endpoint() or "AWS S3"
    lowered = text.lower()
    if any(k in lowered for k in ("could not connect", "connect timeout", "endpointconnectionerror",
                                  "connection refused", "cannot connect", "name or service")):
        reason = f"cannot reach the S3 endpoint {endpoint} (is it running? is --s3-endpoint right?)"
    elif any(k in lowered for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied",
                                    "forbidden", "403", "permissionerror", "nocredentials",
                                    "unable to locate credentials")):
        reason = ("the credentials were rejected or are missing (check AWS_ACCESS_KEY_ID / "
                  "AWS_SECRET_ACCESS_KEY)")
    elif "nosuchbucket" in lowered or "bucket does not exist" in lowered:
        reason = f"bucket '{_bucket(uri)}' does not exist at {endpoint}"
    else:
        reason = text
    return StorageError(f"{uri}: {reason}")


def _check_bucket(uri: str) -> None:
    fs = _s3_filesystem()
    bucket = _bucket(uri)
    try:
        # A HEAD on the bucket tells missing buckets, bad credentials and dead endpoints apart.
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError as err:
        raise StorageError(f"{uri}: bucket '{bucket}' does not exist at "
                           f"{s3_endpoint() or 'AWS S3'}") from err
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
        raise _explain_s3_error(uri, err) from err


def check_input(uri: str) -> None:
    """Fail early, naming ``uri``, if it cannot be read: no bucket, no object, bad credentials."""
    if is_s3(uri):
        _check_bucket(uri)
        fs, path = filesystem(uri)
        try:
            found = fs.exists(path) or bool(fs.ls(path, detail=False))
        except FileNotFoundError:
            found = False
        except Exception as err:  # noqa: BLE001
            raise _explain_s3_error(uri, err) from err
        if not found:
            raise StorageError(f"{uri}: no such object or prefix")
    elif not Path(uri).expanduser().exists():
        raise StorageError(f"{uri}: no such file or directory")


def check_output(uri: str) -> None:
    """Fail early if ``uri`` cannot be written: the bucket must exist and accept writes."""
    if is_s3(uri):
        _check_bucket(uri)
        probe = join(uri, ".write_probe")
        try:
            write_bytes(probe, b"")
            remove(probe)
        except Exception as err:  # noqa: BLE001
            raise _explain_s3_error(uri, err) from err
        return
    path = Path(uri).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"{uri}: cannot create the output folder ({err})") from err
    if not os.access(path, os.W_OK):
        raise StorageError(f"{uri}: the output folder is not writable")
