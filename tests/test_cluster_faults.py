"""Cluster faults on a multi-node local cluster (``ray.cluster_utils.Cluster``, one raylet per
node, all on this machine): a node that joins mid-job and the elastic pool grows onto it, a
worker node lost mid-job, a driver killed with SIGKILL and run again.

The cluster lives in its own process (tests/cluster_scenario.py, driven over a pipe) and every
job's driver in another, so this process never joins that cluster: the session's ``ray_local``
is untouched, and a driver can be killed outright. One cluster serves the module; each test
starts from the head node (1 CPU) and the worker nodes it asks for (1 CPU each), every CPU free.

The driver-kill test comes last: Ray Data's ``_AutoscalingCoordinatorActor`` (detached, one per
cluster) keeps a killed driver's resource reservation until it expires (180 s,
RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S), and until then a new job's elastic pool is granted
no CPU beyond its first actor, so a pool could not grow in a test after it.
"""
from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from apm.core import storage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCENARIO = Path(__file__).resolve().parent / "cluster_scenario.py"
MODEL = "random:resnet18"
SIZE = 32


# --- photos and reports ---------------------------------------------------------------------

def _png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _photos(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{i:04d}.png").write_bytes(_png(i))
    return sorted(str(p) for p in folder.iterdir())


def _reports(folder: Path) -> list[dict]:
    """Every line the predictors logged (``t``, ``node``, ``pid``, ``actor``, ``rows``; with
    ``event`` 'start' when an actor built its predictor, 'begin' when it starts a batch; the
    other lines are batches scored)."""
    lines = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:  # a line being written
                pass
    return lines


def _batches(reports: list[dict], node: str | None = None) -> list[dict]:
    return [r for r in reports if "event" not in r and (node is None or r["node"] == node)]


def _wait(what: str, condition, timeout: float, every: float = 0.2, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (rc {proc.returncode}) before {what}:\n"
                                 + proc.log_tail())
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (
        f":\n{proc.log_tail()}\n--- py-spy dump of the driver ---\n{_py_spy(proc.pid)}"
        if proc is not None else ""))


# --- the cluster and the drivers ------------------------------------------------------------

class Driver:
    """A driver process; its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=f,
                                         stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.returncode = None

    def poll(self):
        self.returncode = self.proc.poll()
        return self.returncode

    def wait(self, timeout: float) -> int:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = _py_spy(self.pid)
            raise AssertionError(f"the driver did not end within {timeout:.0f} s\n"
                                 f"{self.log_tail()}\n--- py-spy dump ---\n{stacks}") from None
        return self.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.output()[-chars:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)  # reaped: a zombie would still look alive to the lease


def _py_spy(pid: int) -> str:
    try:
        return subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60).stdout[-8000:]
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(py-spy failed: {err})"


class LocalCluster:
    """The cluster process of tests/cluster_scenario.py and the drivers started on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Nothing of this process's Ray or S3 settings; Ray's files (and its
        # ray_current_cluster) under our own short folder, not /tmp/ray.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        env.update(RAY_TMPDIR=str(root), RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]),
                   # On a loaded machine a node's agents can take longer than the default to
                   # come up, and the raylet would give up on them.
                   RAY_agent_register_timeout_ms="120000")
        self.env = env
        self.drivers: list[Driver] = []
        self.workers: list[str] = []
        self.stderr = open(root / "cluster.log", "wb")
        self.proc = subprocess.Popen([sys.executable, str(SCENARIO), "cluster", "--head-cpus", "1"],
                                     cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def start(self) -> None:
        hello = self._answer(180)
        self.address, self.head = hello["address"], hello["head"]
        print(f"cluster up in {hello['seconds']} s at {self.address}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                self.answers.put(json.loads(line[3:]))
        self.answers.put(None)

    def _answer(self, timeout: float) -> dict:
        try:
            answer = self.answers.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None or "error" in answer:
            tail = (self.root / "cluster.log").read_text(errors="replace")[-4000:]
            raise AssertionError(f"cluster process: {answer or 'no answer'}\n{tail}")
        return answer

    def ask(self, cmd: str, timeout: float = 120, **args) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def add_node(self) -> str:
        node = self.ask("add_node", num_cpus=1)["node_id"]
        self.workers.append(node)
        return node

    def remove_node(self, node: str) -> float:
        self.workers.remove(node)
        return self.ask("remove_node", node_id=node)["seconds"]

    def use_workers(self, n: int) -> list[str]:
        """The head and ``n`` worker nodes (kept from an earlier test, or added), every CPU
        free (no driver or actor of an earlier job left)."""
        for driver in self.drivers:
            driver.kill()
        if len(self.workers) > n:
            self.ask("reset")
            self.workers = []
        while len(self.workers) < n:
            self.add_node()
        self.wait_idle()
        return list(self.workers)

    def wait_idle(self, timeout: float = 60) -> dict:
        """Wait until every CPU of the cluster is free; its resources."""
        def idle():
            resources = self.ask("resources")
            free = resources["available"].get("CPU", 0) == resources["total"].get("CPU")
            return resources if free else None

        return _wait("every CPU of the cluster to be free", idle, timeout, every=0.5)

    def driver(self, args: list[str], log: Path) -> Driver:
        driver = Driver([sys.executable, *args], self.env, log)
        self.drivers.append(driver)
        return driver

    def close(self) -> None:
        for driver in self.drivers:
            driver.kill()
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "shutdown"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(90)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:  # its nodes' reapers end their processes with it
                self.proc.kill()
                self.proc.wait(30)
            self.stderr.close()


@pytest.fixture(scope="module")
def cluster():
    # Short: Ray's socket paths live below it (107-byte limit).
    root = Path(tempfile.mkdtemp(prefix="rcf-", dir="/tmp")).resolve()
    local = None
    try:
        local = LocalCluster(root)
        local.start()
        yield local
    finally:
        if local is not None:
            local.close()
        shutil.rmtree(root, ignore_errors=True)


def _score_args(src: Path, out: Path, address: str, *extra: str) -> list[str]:
    return ["--input", str(src), "--output", str(out), "--model", MODEL,
            "--image-size", str(SIZE), "--batch-size", "4", "--rows-per-file", "4",
            "--no-embedding", "--ray-address", address, "--lease-timeout", "3",
            "--progress-every", "2", *extra]


def _shard_files(out: Path) -> list[Path]:
    folder = out / "scores"
    return sorted(folder.glob("part-*.parquet")) if folder.exists() else []


def _check_one_ok_row_per_photo(out: Path, photos: list[str]) -> None:
    frame = storage.read_table(storage.join(str(out), "scores")).to_pandas()
    assert len(frame) == len(photos) and frame["uri"].is_unique, (
        len(frame), frame["uri"][frame["uri"].duplicated()].tolist()[:10])
    assert sorted(frame["uri"]) == photos
    bad = frame[frame["status"] != "ok"]
    assert bad.empty, bad[["uri", "error", "error_kind"]].to_string()
    assert frame["mean"].between(1, 10).all()


# --- the tests ------------------------------------------------------------------------------

@pytest.mark.timeout(420)
def test_the_pool_grows_onto_a_node_that_joins_mid_job(cluster, tmp_path):
    """Head only (1 CPU, one actor); a node joins once the actor works: within 30 s an actor of
    the elastic pool is alive and scoring there, and every row comes back exactly once."""
    cluster.use_workers(0)
    n = 400  # 100 batches of 4, 0.5 s each: 50 s on one actor
    _photos(tmp_path / "photos", n)
    reports, results, fast = tmp_path / "reports", tmp_path / "results.parquet", tmp_path / "fast"
    reports.mkdir()
    driver = cluster.driver([str(SCENARIO), "predict", "--address", cluster.address,
                             "--photos", str(tmp_path / "photos"), "--results", str(results),
                             "--reports", str(reports), "--fast-file", str(fast),
                             "--sleep", "0.5"], tmp_path / "driver.log")
    began = time.monotonic()
    _wait("the first actor's first batch", lambda: _batches(_reports(reports), cluster.head),
          120, proc=driver)
    print(f"first batch {time.monotonic() - began:.1f} s after the driver started")

    def pool_actors() -> list[dict]:
        return [a for a in cluster.ask("actors")["actors"] if "_PoolActor" in a["class_name"]]

    before = {a["actor_id"] for a in pool_actors()}
    start = time.monotonic()
    node = cluster.add_node()
    joined = time.monotonic() - start
    seen = {}

    def pool_actor_there():
        actors = pool_actors()
        if "asked" not in seen and {a["actor_id"] for a in actors} - before:
            seen["asked"] = time.monotonic() - start  # Ray Data asked for one more actor
        pids = {r["pid"] for r in _reports(reports) if r["node"] == node}
        return [a for a in actors if a["state"] == "ALIVE" and a["node_id"] == node
                and a["pid"] in pids]

    actors = _wait("an actor of the pool alive on the new node", pool_actor_there, 45,
                   every=0.25, proc=driver)
    alive = time.monotonic() - start
    _wait("a batch scored on the new node", lambda: _batches(_reports(reports), node), 30,
          every=0.25, proc=driver)
    working = time.monotonic() - start
    print(f"after add_node: node registered {joined:.1f} s, pool asked for an actor "
          f"{seen.get('asked', float('nan')):.1f} s, actor {actors[0]['class_name']} (pid "
          f"{actors[0]['pid']}) alive on the new node {alive:.1f} s, its first batch "
          f"{working:.1f} s")
    assert alive <= 30, f"the pool took {alive:.1f} s to reach the new node"
    fast.touch()  # proven: let the rest of the job run at full speed
    assert driver.wait(120) == 0, driver.log_tail()
    print(f"driver done {time.monotonic() - start:.1f} s after add_node")

    table = pq.read_table(results).to_pandas()
    assert sorted(table["row"]) == list(range(n))  # every row exactly once
    assert (table["error"] == "").all(), table.loc[table["error"] != "", "error"].tolist()[:5]
    by_node = table["node"].value_counts()
    assert by_node.get(node, 0) > 0 and by_node.get(cluster.head, 0) > 0, by_node


@pytest.mark.timeout(420)
def test_a_worker_node_lost_mid_job_costs_no_row(cluster, tmp_path):
    """Head + one worker node (1 CPU each), the elastic pool (the CLI's default) grown onto
    both; the worker node is removed once a shard file is written and it is scoring a batch:
    the job ends with exactly one ok row per photo, the rows it held scored again on the head."""
    [worker] = cluster.use_workers(1)
    n = 160  # 40 batches, 0.4 s each: the pool's second actor starts well before the end
    photos = _photos(tmp_path / "photos", n)
    out, reports, fast = tmp_path / "out", tmp_path / "reports", tmp_path / "fast"
    reports.mkdir()
    driver = cluster.driver([str(SCENARIO), "score", "--reports", str(reports), "--sleep", "0.4",
                             "--fast-file", str(fast), "--",
                             *_score_args(tmp_path / "photos", out, cluster.address)],
                            tmp_path / "driver.log")

    def begun_there() -> set[int]:  # rows the worker node started and has not finished
        logged = _reports(reports)
        begun = {row for r in logged if r.get("event") == "begin" and r["node"] == worker
                 for row in r["rows"]}
        return begun - {row for r in _batches(logged, worker) for row in r["rows"]}

    _wait("a shard file, and a batch in progress on the worker node",
          lambda: _shard_files(out) and begun_there(), 150, every=0.05, proc=driver)
    written = len(_shard_files(out))
    # Where the job's own actors are: the pool's, and predict_rows's bookkeeping (_ActorRoll,
    # pinned to the driver's node, the head: lost with a worker node, it failed the job).
    placed = sorted((a["class_name"], "worker" if a["node_id"] == worker else "head")
                    for a in cluster.ask("actors")["actors"] if a["state"] == "ALIVE")
    assert ("_ActorRoll", "worker") not in placed, placed
    removed_at = time.time()
    took = cluster.remove_node(worker)
    fast.touch()  # the rest of the job at full speed
    print(f"worker node removed ({took} s) with {written} of {n // 4} shard files written; "
          f"actors then: {placed}")
    code = driver.wait(150)
    print(f"driver done (rc {code}) {time.time() - removed_at:.1f} s after the node was removed")
    lost = [name for name, where in placed if where == "worker"]
    assert code == 0, f"actors on the removed node: {lost}\n{driver.log_tail()}"
    _check_one_ok_row_per_photo(out, photos)

    # The rows that the worker node had begun and that had not reached the driver when it was
    # removed were scored again on the head, after the removal.
    # Shard k holds listing rows 4k .. 4k+3, in order: the files in order are the listing.
    listed = pa.concat_tables([pq.read_table(p) for p in _shard_files(out)])
    scored_at = [t.timestamp() for t in listed.column("scored_at").to_pylist()]
    logged = _reports(reports)
    begun = {row for r in logged if r.get("event") == "begin" and r["node"] == worker
             and r["t"] < removed_at for row in r["rows"]}
    held = {row for row in begun if scored_at[row] > removed_at}
    again = {row for r in _batches(logged, cluster.head) if r["t"] > removed_at
             for row in r["rows"]}
    moved = {r["actor"] for r in _batches(logged, cluster.head) if r["t"] > removed_at} & {
        r["actor"] for r in logged if r["node"] == worker}
    print(f"rows begun on the worker node: {len(begun)}, of them not delivered before its "
          f"removal: {len(held)}, all scored again on the head: {held <= again}; actors of the "
          f"lost node restarted on the head: {len(moved)}")
    assert held, "the worker node held no rows when it was removed"
    assert held <= again


@pytest.mark.timeout(480)
def test_a_driver_killed_mid_job_then_rerun_leaves_one_row_per_photo(cluster, tmp_path):
    """The driver (python -m jobs.score's main, in its own process) is killed with SIGKILL after
    shard files are written; the same command run again keeps those files, scores the rest and
    leaves exactly one ok row per photo."""
    cluster.use_workers(1)
    n = 120
    photos = _photos(tmp_path / "photos", n)
    out, reports = tmp_path / "out", tmp_path / "reports"
    reports.mkdir()
    args = _score_args(tmp_path / "photos", out, cluster.address)
    first = cluster.driver([str(SCENARIO), "score", "--reports", str(reports), "--sleep", "0.3",
                            "--", *args], tmp_path / "first.log")
    _wait("three shard files", lambda: len(_shard_files(out)) >= 3, 150, every=0.05, proc=first)
    os.kill(first.pid, signal.SIGKILL)
    first.kill()  # reaped
    assert first.proc.returncode == -signal.SIGKILL
    kept = {p.name: p.stat().st_mtime_ns for p in _shard_files(out)}
    assert 3 <= len(kept) < n // 4, kept  # killed mid-job
    for name in kept:  # whole files: each written at once, never torn
        assert pq.read_metadata(out / "scores" / name).num_rows == 4
    assert (out / "_lease.json").exists()  # the dead driver's lease is left behind

    # Ray ends a dead driver's actors: the cluster's CPUs come back.
    assert cluster.wait_idle()["total"]["CPU"] == 2

    rerun = cluster.driver(["-m", "jobs.score", *args], tmp_path / "rerun.log")
    # Generous: Ray Data may hold the killed driver's resource request for up to 180 s.
    assert rerun.wait(300) == 0, rerun.log_tail()
    output = rerun.output()
    assert "taking over" in output and "its process no longer exists" in output, output[-3000:]
    assert f"kept from an earlier run: {len(kept)} files, {4 * len(kept)} rows" in output, (
        output[-3000:])
    after = {p.name: p.stat().st_mtime_ns for p in _shard_files(out)}
    assert len(after) == n // 4
    assert {name: after[name] for name in kept} == kept  # the first run's files, untouched
    _check_one_ok_row_per_photo(out, photos)
    assert not (out / "_lease.json").exists()
