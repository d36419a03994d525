"""One run per output: a lease object ``OUT/_lease.json`` that the run holding OUT renews.

A run acquires the lease at its start, a daemon thread renews its heartbeat every
``heartbeat_s`` and the run deletes it at its end. A second run into the same OUT is refused
with :class:`LeaseHeldError` naming the holder; a lease whose heartbeat is older than
``stale_after_s`` (a run that was killed) is taken over, and so is one left on this machine by
a process that no longer exists. A run whose lease was taken over learns it from
:meth:`OutputLease.check` and stops.

Creating the lease is exclusive on local disk (``O_CREAT | O_EXCL``) and on stores that honour
``If-None-Match`` (AWS S3, MinIO). S3 has no general compare-and-swap, so a takeover and the
stores that ignore the header are best effort: the run re-reads the lease after a short delay
and keeps it only if it still names its run id; the renewing thread checks the same before
every heartbeat.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from apm.core import storage

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_HEARTBEAT_S = 30.0
# Long enough for a racing writer's object to be visible, short next to a job's start.
_CONFIRM_DELAY_S = 0.5


class LeaseHeldError(storage.StorageError):
    """Another live run holds the output; the message names it and the way out."""


class LeaseLostError(storage.StorageError):
    """This run's lease was taken over (or could not be renewed): it must stop writing."""


@dataclass(frozen=True)
class LeaseRecord:
    run_id: str
    host: str
    pid: int
    pid_namespace: str  # tells processes of this host's containers apart
    started: str  # UTC, ISO 8601
    heartbeat: str  # UTC, ISO 8601

    def age_s(self) -> float:
        return time.time() - datetime.datetime.fromisoformat(self.heartbeat).timestamp()

    def describe(self) -> str:
        return (f"run {self.run_id} on host {self.host}, pid {self.pid}, started {self.started}, "
                f"last heartbeat {self.heartbeat} ({self.age_s():.0f} s ago)")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # not Linux: the host name alone identifies the machine
        return ""


def _lease_uri(out_uri: str) -> str:
    return storage.join(storage.normalize(out_uri), LEASE_FILE)


def _read(uri: str) -> LeaseRecord | None:
    """The lease at ``uri``; None if there is none. A lease that cannot be parsed (a create
    caught half-written, a foreign file) counts as held since its modification time."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        return None
    try:
        return LeaseRecord(**json.loads(text))
    except (ValueError, TypeError):
        fs, path = storage.filesystem(uri)
        try:
            modified = fs.modified(path)
        except FileNotFoundError:
            return None
        if modified.tzinfo is None:
            modified = modified.astimezone(datetime.timezone.utc)
        stamp = modified.isoformat(timespec="seconds")
        return LeaseRecord(run_id="(unreadable lease)", host="?", pid=0, pid_namespace="",
                           started=stamp, heartbeat=stamp)


def _process_gone(record: LeaseRecord) -> bool:
    """Whether the holder was a process of this machine that has ended (a killed run)."""
    if record.host != socket.gethostname() or record.pid_namespace != _pid_namespace():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _is_live(record: LeaseRecord, stale_after_s: float) -> bool:
    return record.age_s() <= stale_after_s and not _process_gone(record)


def lease_holder(out_uri: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> dict | None:
    """The record of the live run holding ``out_uri`` (with ``age_s``), or None if no live
    run holds it (no lease, or one whose heartbeat is older than ``stale_after_s``)."""
    record = _read(_lease_uri(out_uri))
    if record is None or not _is_live(record, stale_after_s):
        return None
    return {**asdict(record), "age_s": record.age_s()}


def _create(uri: str, text: str) -> bool:
    """Write ``text`` to ``uri`` unless the object exists; False if it does."""
    fs, path = storage.filesystem(uri)
    if storage.is_s3(uri):
        try:
            fs.pipe_file(path, text.encode(), mode="create")  # If-None-Match: *
        except FileExistsError:
            return False
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


class OutputLease:
    """The lease of one run on ``out_uri``; use once, as a context manager around the run.

    ``heartbeat_s`` defaults to :data:`DEFAULT_HEARTBEAT_S`, or a third of ``stale_after_s``
    if that is shorter, so that a live run never looks stale.
    """

    def __init__(self, out_uri: str, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                 heartbeat_s: float | None = None) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"--lease-timeout must be positive, not {stale_after_s:g}")
        if heartbeat_s is None:
            heartbeat_s = min(DEFAULT_HEARTBEAT_S, stale_after_s / 3)
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"the lease heartbeat ({heartbeat_s:g} s) must be positive and "
                             f"shorter than --lease-timeout ({stale_after_s:g} s)")
        self.out_uri = storage.normalize(out_uri)
        self.uri = _lease_uri(out_uri)
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        started = _now()
        self.record = LeaseRecord(run_id=uuid.uuid4().hex, host=socket.gethostname(),
                                  pid=os.getpid(), pid_namespace=_pid_namespace(),
                                  started=started, heartbeat=started)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._renewed = time.monotonic()

    # --- acquiring and releasing -----------------------------------------------------------

    def acquire(self) -> OutputLease:
        """Take the lease, taking over a stale one; :class:`LeaseHeldError` if a live run
        holds it."""
        storage.makedirs(self.out_uri)
        took_over = False
        while True:
            if _create(self.uri, self._text()) and (
                    not (took_over or storage.is_s3(self.uri)) or self._confirmed()):
                break
            holder = _read(self.uri)
            if holder is None:  # released between our create and our read: try again
                continue
            if holder.run_id == self.record.run_id:
                break
            if _is_live(holder, self.stale_after_s):
                raise LeaseHeldError(self._held_message(holder))
            why = ("its process no longer exists" if _process_gone(holder) else
                   f"its heartbeat is older than --lease-timeout ({self.stale_after_s:g} s)")
            log.warning("taking over %s from %s: %s", self.uri, holder.describe(), why)
            if _read(self.uri) == holder:  # not renewed or taken by another run meanwhile
                storage.remove(self.uri)
            took_over = True
        log.info("holding %s (run %s)", self.uri, self.record.run_id)
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop renewing and delete the lease, if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = _read(self.uri)
        if holder is not None and holder.run_id == self.record.run_id:
            storage.remove(self.uri)

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another run took the lease over, or it could not
        be renewed for longer than the timeout; call it between units of work."""
        if self._lost:
            raise LeaseLostError(self._lost)

    # --- inside ----------------------------------------------------------------------------

    def _text(self) -> str:
        return json.dumps(asdict(self.record), indent=1)

    def _confirmed(self) -> bool:
        """After a write without compare-and-swap: whether the lease still names this run."""
        time.sleep(_CONFIRM_DELAY_S)
        holder = _read(self.uri)
        return holder is not None and holder.run_id == self.record.run_id

    def _held_message(self, holder: LeaseRecord) -> str:
        left = max(self.stale_after_s - holder.age_s(), 0.0)
        return (f"{self.out_uri}: another run is writing this output ({holder.describe()}; "
                f"lease {self.uri}); wait for it to end, or use another --output; a run that "
                f"died is taken over once its heartbeat is older than --lease-timeout "
                f"({self.stale_after_s:g} s, in {left:.0f} s)")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._renew()
            except Exception as err:  # noqa: BLE001 - a store hiccup: retry next heartbeat
                late = time.monotonic() - self._renewed
                log.warning("cannot renew %s (%s: %s); %.0f s since the last heartbeat",
                            self.uri, type(err).__name__, err, late)
                if late > self.stale_after_s:
                    self._lost = (f"{self.uri}: the lease could not be renewed for {late:.0f} s "
                                  f"(more than --lease-timeout); another run may be writing "
                                  f"{self.out_uri}, so this one stops")
            if self._lost:
                log.error("%s", self._lost)
                return

    def _renew(self) -> None:
        holder = _read(self.uri)
        if holder is None or holder.run_id != self.record.run_id:
            taker = holder.describe() if holder else "nobody: the lease was deleted"
            self._lost = (f"{self.uri}: this run's lease was taken over by {taker}; this run "
                          f"stops so that two runs never write {self.out_uri}")
            return
        self.record = LeaseRecord(**{**asdict(self.record), "heartbeat": _now()})
        storage.write_text(self.uri, self._text())
        self._renewed = time.monotonic()
