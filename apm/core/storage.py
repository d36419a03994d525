"""One storage layer for local paths and ``s3://`` URIs.

Every job lists, reads and writes through this module, so local folders, AWS S3 and any
S3-compatible store (MinIO, Ceph, moto in tests) behave the same.

Configuration follows the AWS conventions: region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
and the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``. A job's ``--s3-endpoint``
option calls :func:`configure`, which sets ``AWS_ENDPOINT_URL`` so that the value is seen by
this process and, through :func:`ray_env_vars`, by every Ray worker. Credentials never travel:
every process (driver and Ray worker) resolves its own through AWS's standard chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` of its environment,
``AWS_PROFILE`` and the shared credentials file, a web identity token, instance metadata).
"""
from __future__ import annotations

import asyncio
import io
import os
import posixpath
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
import fsspec.asyn
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import s3fs

from apm.core import names

#: Credentials: each process reads its own; they never go into a runtime env or a task, where
#: Ray would write them into its logs and show them in the dashboard.
AWS_SECRET_VARS: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

#: Non-secret S3 settings that the driver hands to its Ray workers (names and paths only).
AWS_SETTING_VARS: tuple[str, ...] = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)

#: Reads one call of :func:`read_many` keeps in flight on S3 at most (and the size of the
#: S3 client's connection pool, so that none waits there): a batch of the CPU default (32
#: photos) is then one round trip instead of 32, and a task's share of a store's request rate
#: stays small (S3 serves thousands of GETs a second per prefix).
MAX_READS_IN_FLIGHT = 32

# A preflight must answer quickly: fail fast on a dead endpoint instead of retrying for minutes.
_PREFLIGHT_S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
# Bulk reads and writes ride out throttling, 5xx and short outages: botocore's adaptive mode
# (exponential backoff with jitter, client-side rate limiting on throttles), 10 attempts. A
# connection that stops answering is given up after 30 s without a byte (then retried):
# measured, a request caught by an outage otherwise waited out the whole read timeout.
_BULK_S3_CONFIG = {"connect_timeout": 10, "read_timeout": 30,
                   "retries": {"max_attempts": 10, "mode": "adaptive"},
                   "max_pool_connections": MAX_READS_IN_FLIGHT}

#: S3 error codes that say the store, not the object, failed: worth retrying.
_TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
    "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired",
})


class StorageError(RuntimeError):
    """A storage location cannot be used; the message names the URI and the reason."""


class TransientStorageError(OSError):
    """The store failed (throttling, 5xx, a dropped connection, expired credentials), not the
    object: worth retrying later. Raised by :func:`read_bytes` after botocore's retries."""


class ObjectTooLargeError(ValueError):
    """An object holds more bytes than a bounded read allows."""


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a fault of the infrastructure rather than of the
    object read: connection refused / reset / timed out, an S3 5xx or throttling answer,
    expired credentials. A missing object, a denied one or bad bytes are not."""
    import botocore.exceptions as boto

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, TransientStorageError):
            return True
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(err, (ConnectionError, TimeoutError, boto.ConnectionError,
                            boto.HTTPClientError, boto.ConnectTimeoutError,
                            boto.ReadTimeoutError, boto.NoCredentialsError,
                            boto.CredentialRetrievalError, boto.ResponseStreamingError)):
            return True
        if type(err).__module__.startswith("aiohttp") and "Client" in type(err).__name__:
            return True  # aiohttp's connection, payload and disconnect errors
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code", "")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return code in _TRANSIENT_S3_CODES or status >= 500 or status == 429
        err = err.__cause__ or err.__context__
    return False


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
    """The S3 settings of this process (:data:`AWS_SETTING_VARS`, never a credential), for
    ``runtime_env={'env_vars': ...}`` of a Ray job and the tasks' ``storage_env``."""
    return {name: os.environ[name] for name in AWS_SETTING_VARS if os.environ.get(name)}


def apply_env(env: dict[str, str]) -> None:
    """In a Ray task: adopt the driver's :func:`ray_env_vars`, even if Ray was started before
    the driver was configured (a runtime_env only reaches workers of a fresh job)."""
    secrets = sorted(set(env) & set(AWS_SECRET_VARS))
    if secrets:  # a bug, not a user error: the caller must not ship credentials
        raise ValueError(f"credentials must not travel to Ray workers: {', '.join(secrets)}")
    os.environ.update(env)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def normalize(uri: str) -> str:
    """The canonical form of a location: local paths absolute, no trailing slash, as
    :func:`apm.core.names.local_uri` writes them (so ``file:///...`` URLs are accepted too)."""
    if is_s3(uri):
        return uri.rstrip("/")
    return names.local_uri(_local_path(uri))


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return names.local_uri(str(Path(names.local_path(base)).joinpath(*parts)))


def uri_of(path: str, like: str) -> str:
    """The URI of ``path``, a path inside the filesystem that :func:`filesystem` gives for
    ``like``: the inverse of :func:`filesystem`."""
    return "s3://" + path if is_s3(like) else names.local_uri(path)


def _local_path(uri: str, follow_links: bool = True) -> str:
    """The absolute local path of ``uri``; with ``follow_links`` its real path."""
    path = os.path.expanduser(names.local_path(uri))
    return os.path.realpath(path) if follow_links else os.path.abspath(path)


class _S3FileSystem(s3fs.S3FileSystem):
    """s3fs where a key is only a key. s3fs reads ``?versionId=`` in a path as a version
    selector even with versions off, so the key ``a?versionId=b.jpg`` would read ``a``; this
    layer never asks for versions, so every listed key must read back as itself."""

    def split_path(self, path: str) -> tuple[str, str, str | None]:
        if self.version_aware:
            return super().split_path(path)
        trail = path[len(path.rstrip("/")):]  # as s3fs: a trailing slash names a folder marker
        path = self._strip_protocol(path).lstrip("/")
        if "/" not in path:
            return path, "", None
        bucket, key = self._find_bucket_key(path)
        return bucket, key + trail, None


def _s3_filesystem(preflight: bool = False) -> fsspec.AbstractFileSystem:
    endpoint = s3_endpoint()
    # No credentials among the arguments: a pickled filesystem (as Ray ships it to its workers)
    # carries its arguments, and each process resolves credentials from its own environment or
    # AWS's chain (botocore also reads AWS_CA_BUNDLE there). s3fs caches instances per
    # argument set, so this is cheap after the first call.
    return _S3FileSystem(
        endpoint_url=endpoint,
        config_kwargs=_PREFLIGHT_S3_CONFIG if preflight else _BULK_S3_CONFIG,
        # Stores other than AWS rarely support virtual-host addressing.
        client_kwargs={"region_name": os.environ.get("AWS_REGION")
                       or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"},
    )


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it."""
    if is_s3(uri):
        return _s3_filesystem(), uri[len("s3://"):].rstrip("/")
    return fsspec.filesystem("file"), _local_path(uri)


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for ``uri`` (for Ray Data and pyarrow datasets) and the path in it."""
    fs, path = filesystem(uri)
    if is_s3(uri):
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return pafs.LocalFileSystem(), path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


class _AtomicFile(io.BufferedWriter):
    """A local file written under a temporary name in its folder and renamed over its path on
    close: readers (and a resumed job) see the old content or the new, never a part. Leaving a
    ``with`` block on an exception discards it. No fsync: this guards against a killed
    process, not a power cut, and keeps many small writes cheap."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        # A dot name: Parquet dataset readers skip it. O_EXCL with 0o666: the umask applies,
        # as for a plain file, and no other writer shares it.
        self.tmp = os.path.join(folder, f".tmp-{os.urandom(8).hex()}")
        super().__init__(io.FileIO(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                           0o666), "wb"))

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop what was written; the file at ``path`` keeps its old content (or stays absent)."""
        try:
            super().close()
        finally:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def open_file(uri: str, mode: str = "rb") -> IO:
    """An open file; a local one opened for writing is replaced whole on close (see
    :class:`_AtomicFile`)."""
    fs, path = filesystem(uri)
    if is_s3(uri) or mode in ("rb", "r"):
        return fs.open(path, mode)
    if mode != "wb":
        raise ValueError(f"{uri}: a local file opens as 'rb', 'r' or 'wb', not {mode!r}")
    return _AtomicFile(path)


@dataclass(frozen=True)
class ReadRequest:
    """Bytes ``[start, end)`` of the object at ``uri`` (``end`` None: to its end), at most
    ``max_bytes`` of them (see :func:`read_bytes`)."""

    uri: str
    max_bytes: int | None = None
    start: int = 0
    end: int | None = None

    def stop(self) -> int | None:
        """Where the read itself stops: one byte past ``max_bytes`` tells a larger object."""
        if self.max_bytes is None:
            return self.end
        bound = self.start + self.max_bytes + 1
        return bound if self.end is None else min(self.end, bound)

    def ranged(self) -> bool:
        return self.start > 0 or self.stop() is not None


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """The object's bytes. With ``max_bytes`` the read itself is bounded (a ranged read of
    ``max_bytes + 1``): a larger object raises :class:`ObjectTooLargeError` without being held
    in memory. A fault of the store, after botocore's retries, raises
    :class:`TransientStorageError`; a missing object FileNotFoundError."""
    outcome = read_many([ReadRequest(uri, max_bytes)])[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def read_many(requests: list[ReadRequest],
              max_in_flight: int = MAX_READS_IN_FLIGHT) -> list[bytes | BaseException]:
    """What each request reads, in order: its bytes, or the error :func:`read_bytes` would
    raise for it (one failed read fails no other). S3 reads run concurrently, at most
    ``max_in_flight`` at a time, on s3fs's event loop; local files are read one by one (no
    round trip to hide). A range that starts past the object's end reads ``b""``."""
    outcomes: list[bytes | BaseException] = [b""] * len(requests)
    remote = [i for i, request in enumerate(requests) if is_s3(request.uri)]
    for i, request in enumerate(requests):
        if not is_s3(request.uri):
            outcomes[i] = _read_local(request)
    if remote:
        fs = _s3_filesystem()
        read = fsspec.asyn.sync(fs.loop, _read_s3_all, fs, [requests[i] for i in remote],
                                max_in_flight)
        for i, outcome in zip(remote, read):
            outcomes[i] = outcome
    return outcomes


def _read_local(request: ReadRequest) -> bytes | BaseException:
    fs, path = filesystem(request.uri)
    try:
        data = fs.cat_file(path, start=request.start, end=request.stop())
    except Exception as err:  # noqa: BLE001 - returned: the caller decides per request
        return _failed(request, err)
    return _bounded(request, data)


async def _read_s3_all(fs: fsspec.AbstractFileSystem, requests: list[ReadRequest],
                       max_in_flight: int) -> list[bytes | BaseException]:
    slots = asyncio.Semaphore(max_in_flight)

    async def read(request: ReadRequest) -> bytes | BaseException:
        path = request.uri[len("s3://"):]
        try:
            async with slots:
                # start None, not 0: no Range header where the read is not bounded.
                data = await fs._cat_file(path, start=request.start or None, end=request.stop())
        except Exception as err:  # noqa: BLE001 - returned: the caller decides per request
            return _failed(request, err)
        return _bounded(request, data)

    return await asyncio.gather(*(read(request) for request in requests))


def _failed(request: ReadRequest, err: Exception) -> bytes | BaseException:
    """What a read that raised ``err`` comes to: a store fault becomes
    :class:`TransientStorageError`, S3's 416 to a ranged read (an empty object) ``b""``."""
    if is_transient(err):
        transient = TransientStorageError(f"{type(err).__name__}: {err}")
        transient.__cause__ = err
        return transient
    if request.ranged() and _unsatisfiable_range(err):
        return b""
    return err


def _bounded(request: ReadRequest, data: bytes) -> bytes | BaseException:
    if request.max_bytes is not None and len(data) > request.max_bytes:
        return ObjectTooLargeError(f"more than {request.max_bytes} bytes")
    return data


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the object (one ranged GET); fewer where it ends sooner. Store
    faults raise :class:`TransientStorageError`, as in :func:`read_bytes`."""
    outcome = read_many([ReadRequest(uri, start=start, end=end)])[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def raise_if_transient(err: BaseException) -> None:
    """Raise :class:`TransientStorageError` from ``err`` if it is a fault of the store."""
    if is_transient(err):
        raise TransientStorageError(f"{type(err).__name__}: {err}") from err


def _unsatisfiable_range(err: BaseException) -> bool:
    cause = err.__cause__
    response = getattr(cause, "response", None) or {}
    return response.get("Error", {}).get("Code") == "InvalidRange"


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
        os.makedirs(_local_path(uri), exist_ok=True)


def remove(uri: str, recursive: bool = False) -> None:
    """Remove exactly ``uri`` (nothing if absent); with ``recursive`` also all below it.

    Never a glob pattern (fsspec's ``rm`` expands ``[``, ``*``, ``?`` in a path): a photo
    named ``[ab].jpg`` must not take ``a.jpg`` with it. A local link is removed, not its target.
    """
    if is_s3(uri):
        _remove_s3(uri, recursive)
        return
    path = _local_path(uri, follow_links=False)
    if os.path.isdir(path) and not os.path.islink(path):
        if not recursive:
            raise IsADirectoryError(f"{uri}: is a folder; remove it with recursive=True")
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _remove_s3(uri: str, recursive: bool) -> None:
    fs, path = filesystem(uri)
    bucket, key, _ = fs.split_path(path)
    fs.invalidate_cache(path)  # another process may have written below it since we listed
    keys = [key] if key and fs.isfile(path) else []
    if recursive:
        # find lists the prefix ``key/`` literally (no globbing); a bucket root lists all.
        keys += [fs.split_path(p)[1] for p in fs.find(path) if p != path]
    for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        answer = fs.call_s3("delete_objects", Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise OSError(f"{uri}: cannot remove s3://{bucket}/{first.get('Key')} "
                          f"({first.get('Code')}: {first.get('Message')})")
    fs.invalidate_cache()  # all of it: s3fs caches the listing of each sub-prefix on its own


def list_files(prefix: str, suffixes: tuple[str, ...] | None = None) -> Iterator[FileInfo]:
    """Every file below ``prefix`` (recursively), in sorted order, optionally by suffix."""
    prefix = normalize(prefix)
    fs, path = filesystem(prefix)
    for name, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        if suffixes and not name.lower().endswith(suffixes):
            continue
        yield FileInfo(uri=uri_of(name, prefix), size=int(info.get("size") or 0))


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or a folder of Parquet files (a dataset), as one table."""
    fs, path = arrow_filesystem(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def write_table(table: pa.Table, uri: str, row_group_size: int | None = None) -> None:
    """Write one Parquet file, whole or not at all (:func:`open_file`); its parent folder is
    created where the store has folders."""
    options = {"compression": "zstd", "row_group_size": row_group_size}
    if is_s3(uri):
        fs, path = arrow_filesystem(uri)
        pq.write_table(table, path, filesystem=fs, **options)
        return
    with open_file(uri, "wb") as f:
        pq.write_table(table, f, **options)


# --- preflight ------------------------------------------------------------------------------

def _bucket(uri: str) -> str:
    return uri[len("s3://"):].split("/", 1)[0]


def explain_s3_error(uri: str, err: BaseException) -> StorageError:
    """One StorageError naming ``uri`` and why an S3 call on it failed (endpoint unreachable,
    credentials rejected, no such bucket, else the error itself)."""
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
    fs = _s3_filesystem(preflight=True)
    bucket = _bucket(uri)
    try:
        # A HEAD on the bucket tells missing buckets, bad credentials and dead endpoints apart.
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError as err:
        raise StorageError(f"{uri}: bucket '{bucket}' does not exist at "
                           f"{s3_endpoint() or 'AWS S3'}") from err
    except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
        raise explain_s3_error(uri, err) from err


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
            raise explain_s3_error(uri, err) from err
        if not found:
            raise StorageError(f"{uri}: no such object or prefix")
    elif not os.path.exists(_local_path(uri)):
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
            raise explain_s3_error(uri, err) from err
        return
    path = Path(_local_path(uri))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"{uri}: cannot create the output folder ({err})") from err
    if not os.access(path, os.W_OK):
        raise StorageError(f"{uri}: the output folder is not writable")
