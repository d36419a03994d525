"""One run per output: the lease under OUT, on local disk and on a real S3 endpoint."""
from __future__ import annotations

import datetime
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import time
from dataclasses import asdict, replace

import pytest

from apm.core import storage
from apm.core.lease import (
    LEASE_FILE,
    LeaseHeldError,
    LeaseLostError,
    LeaseRecord,
    OutputLease,
    _pid_namespace,
    lease_holder,
)


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return storage.join(request.getfixturevalue("s3_bucket"), "out")


def _foreign(age_s: float, **fields) -> LeaseRecord:
    beat = (datetime.datetime.now(datetime.timezone.utc)
            - datetime.timedelta(seconds=age_s)).isoformat(timespec="seconds")
    record = LeaseRecord(run_id="0123456789abcdef", host="other-host", pid=4242,
                         pid_namespace="", started=beat, heartbeat=beat)
    return replace(record, **fields)


def _put(out: str, record: LeaseRecord) -> None:
    storage.write_text(storage.join(out, LEASE_FILE), json.dumps(asdict(record)))


def _read(out: str) -> dict:
    return json.loads(storage.read_text(storage.join(out, LEASE_FILE)))


def test_acquire_refuse_naming_the_holder_then_release(out):
    lease = OutputLease(out).acquire()
    try:
        on_store = _read(out)
        assert on_store["run_id"] == lease.record.run_id
        assert on_store["host"] == socket.gethostname() and on_store["pid"] == os.getpid()
        holder = lease_holder(out)
        assert holder["run_id"] == lease.record.run_id and holder["age_s"] < 60
        with pytest.raises(LeaseHeldError) as refused:
            OutputLease(out).acquire()
        message = str(refused.value)
        for part in (lease.record.run_id, socket.gethostname(), f"pid {os.getpid()}",
                     "last heartbeat", "s ago", "--lease-timeout", out):
            assert part in message, (part, message)
        assert "\n" not in message
        assert isinstance(refused.value, storage.StorageError)  # the jobs print it as one line
        lease.check()  # still ours
    finally:
        lease.release()
    assert not storage.exists(storage.join(out, LEASE_FILE))
    assert lease_holder(out) is None
    with OutputLease(out) as again:  # free once released
        assert lease_holder(out)["run_id"] == again.record.run_id
    assert lease_holder(out) is None


def test_released_by_a_run_that_fails(out):
    with pytest.raises(RuntimeError, match="the run broke"):
        with OutputLease(out):
            raise RuntimeError("the run broke")
    assert not storage.exists(storage.join(out, LEASE_FILE))


def test_stale_lease_is_taken_over(out, caplog):
    stale = _foreign(age_s=3600)
    _put(out, stale)
    assert lease_holder(out, stale_after_s=600) is None
    assert lease_holder(out, stale_after_s=7200)["run_id"] == stale.run_id
    with pytest.raises(LeaseHeldError, match="other-host, pid 4242"):
        OutputLease(out, stale_after_s=7200).acquire()
    with caplog.at_level(logging.WARNING, logger="apm.core.lease"):
        with OutputLease(out, stale_after_s=600) as lease:
            assert _read(out)["run_id"] == lease.record.run_id
    taken = [r for r in caplog.records if r.levelno == logging.WARNING and "taking over" in
             r.getMessage()]
    assert taken and stale.run_id in taken[0].getMessage()
    assert "older than --lease-timeout" in taken[0].getMessage()


def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    out = str(tmp_path / "out")
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid names no process any more
    _put(out, _foreign(age_s=0, host=socket.gethostname(), pid=ended.pid,
                       pid_namespace=_pid_namespace()))
    assert lease_holder(out) is None
    with OutputLease(out) as lease:
        assert _read(out)["run_id"] == lease.record.run_id


def test_live_lease_of_another_host_is_not_taken_for_a_dead_pid(tmp_path):
    out = str(tmp_path / "out")
    _put(out, _foreign(age_s=0, pid=2 ** 22 + 1))  # no such pid here, but another host's run
    with pytest.raises(LeaseHeldError, match="other-host"):
        OutputLease(out).acquire()


def test_heartbeat_renews_and_a_takeover_is_detected(out):
    lease = OutputLease(out, stale_after_s=30, heartbeat_s=0.3).acquire()
    try:
        first = _read(out)["heartbeat"]
        deadline = time.monotonic() + 10
        while _read(out)["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _read(out)["heartbeat"] > first, "the heartbeat was never renewed"
        lease.check()
        taker = _foreign(age_s=0, run_id="fedcba9876543210")
        _put(out, taker)  # another run took OUT over
        deadline = time.monotonic() + 10
        with pytest.raises(LeaseLostError, match="taken over by run fedcba9876543210"):
            while time.monotonic() < deadline:
                lease.check()
                time.sleep(0.1)
    finally:
        lease.release()
    assert _read(out)["run_id"] == taker.run_id  # release leaves the taker's lease alone


def test_bad_timeouts_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="--lease-timeout"):
        OutputLease(str(tmp_path), stale_after_s=0)
    with pytest.raises(ValueError, match="--lease-timeout"):
        OutputLease(str(tmp_path), stale_after_s=10, heartbeat_s=10)
    assert OutputLease(str(tmp_path), stale_after_s=6).heartbeat_s == 2


def _race(out: str, start, done, results) -> None:
    start.wait()
    try:
        lease = OutputLease(out).acquire()
    except LeaseHeldError:
        results.put("refused")
        done.wait()
        return
    results.put("won")
    done.wait()  # hold the lease until every racer has tried
    lease.release()


@pytest.mark.parametrize("stale_first", [False, True], ids=["fresh", "stale-lease"])
def test_racing_processes_exactly_one_wins(tmp_path, stale_first):
    out = str(tmp_path / "out")
    if stale_first:
        _put(out, _foreign(age_s=3600))
    ctx = multiprocessing.get_context("fork")
    n = 4
    start, done, results = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(out, start, done, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(outcomes) == ["refused"] * (n - 1) + ["won"]
    assert lease_holder(out) is None  # the winner released it
