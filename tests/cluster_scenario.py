"""Processes of the cluster fault tests (tests/test_cluster_faults.py), each run on its own.

``cluster``: a multi-node local Ray (``ray.cluster_utils.Cluster``: one raylet per node, all on
this machine) driven over stdin / stdout, one JSON command per line, one ``@@ {json}`` answer
each: add_node, remove_node, reset (remove every worker node), actors, resources, shutdown.
End of input shuts the cluster down too, so the cluster goes with the test that started it.

``predict``: a driver that runs :func:`apm.stages.inference.predict_rows` on the cluster with an
elastic pool of :class:`SlowPredictor` actors, and writes what came back.

``score``: ``python -m jobs.score`` with :class:`SlowScorePredictor` in place of
``ScorePredictor`` (the same scores, a pause per batch until ``--fast-file`` exists), so that a
fault lands mid-job.

Every predictor logs one line per batch it scored to ``REPORTS/<node id>-<pid>.log`` (the
node, process and Ray actor of the ``_PoolActor`` it runs in), plus a line with ``event``
'start' when a :class:`SlowPredictor` is built and 'begin' when a :class:`SlowScorePredictor`
starts a batch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402


def _say(**message) -> None:
    print("@@ " + json.dumps(message), flush=True)


# --- the cluster ----------------------------------------------------------------------------

def _actors(cluster) -> list[dict]:
    table = cluster.global_state.actor_table(None)
    return [{"actor_id": a["ActorID"], "class_name": a["ActorClassName"], "state": a["State"],
             "node_id": a["Address"]["NodeID"], "pid": a["Pid"],
             "restarts": a["NumRestarts"]} for a in table.values()]


def _resources(cluster) -> dict:
    state = cluster.global_state
    return {"total": state.cluster_resources(), "available": state.available_resources(),
            "nodes": [n["NodeID"] for n in state.node_table() if n["Alive"]]}


def serve_cluster(args: argparse.Namespace) -> None:
    from ray.cluster_utils import Cluster

    started = time.monotonic()
    # The agent's port picked at random: the default (52365) may be another Ray's on this host.
    head_args = {"num_cpus": args.head_cpus, "include_dashboard": False,
                 "dashboard_agent_listen_port": None, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    nodes = {}
    _say(address=cluster.address, head=cluster.head_node.node_id,
         seconds=round(time.monotonic() - started, 2))
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            name = command.pop("cmd")
            try:
                if name == "add_node":
                    start = time.monotonic()
                    node = cluster.add_node(num_cpus=command.get("num_cpus", 1),
                                            object_store_memory=100 * 1024 * 1024)
                    nodes[node.node_id] = node
                    _say(node_id=node.node_id, seconds=round(time.monotonic() - start, 2))
                elif name == "remove_node":
                    start = time.monotonic()
                    node = nodes.pop(command["node_id"])
                    cluster.remove_node(node, allow_graceful=command.get("graceful", True))
                    _say(removed=node.node_id, seconds=round(time.monotonic() - start, 2))
                elif name == "reset":
                    for node_id in list(nodes):
                        cluster.remove_node(nodes.pop(node_id))
                    _say(nodes=[cluster.head_node.node_id])
                elif name == "actors":
                    _say(actors=_actors(cluster))
                elif name == "resources":
                    _say(**_resources(cluster))
                elif name == "shutdown":
                    break
                else:
                    _say(error=f"unknown command {name!r}")
            except Exception as err:  # noqa: BLE001 - the test reads the reason
                _say(error=f"{type(err).__name__}: {err}")
    finally:
        cluster.shutdown()
        _say(shutdown=True)


# --- the predictors -------------------------------------------------------------------------

def _report(reports: str, rows: np.ndarray, **extra) -> str:
    import ray

    context = ray.get_runtime_context()
    node = context.get_node_id()
    line = json.dumps({"t": time.time(), "node": node, "pid": os.getpid(),
                       "actor": context.get_actor_id(), "rows": [int(r) for r in rows], **extra})
    with open(os.path.join(reports, f"{node}-{os.getpid()}.log"), "a") as f:
        f.write(line + "\n")
    return node


class SlowPredictor:
    """Sleeps ``sleep_s`` per batch (none once ``fast_file`` exists) and returns each row's
    node id; no model."""

    def __init__(self, reports: str, sleep_s: float, fast_file: str, device: str,
                 storage_env: dict) -> None:
        self.reports, self.sleep_s, self.fast_file = reports, sleep_s, fast_file
        self.node = _report(reports, np.zeros(0, np.int64), event="start")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not os.path.exists(self.fast_file):
            time.sleep(self.sleep_s)
        _report(self.reports, batch["row"])
        n = len(batch["row"])
        return {"row": batch["row"], "error": batch["error"],
                "node": np.array([self.node] * n, dtype=object)}


def run_predict(args: argparse.Namespace) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from apm.models.transforms import image_transform
    from apm.stages.inference import predict_rows

    ray.init(address=args.address, log_to_driver=False, configure_logging=False)
    uris = sorted(str(p) for p in Path(args.photos).iterdir())
    start = time.monotonic()
    rows, nodes, errors = [], [], []
    for batch in predict_rows(
            pa.table({"uri": uris}), np.arange(len(uris)), image_transform("resnet18", 32),
            SlowPredictor, {"reports": args.reports, "sleep_s": args.sleep,
                            "fast_file": args.fast_file},
            batch_size=args.batch_size, concurrency=(1, None), device="cpu"):
        rows += batch["row"].tolist()
        nodes += batch["node"].tolist()
        errors += batch["error"].tolist()
    pq.write_table(pa.table({"row": rows, "node": nodes, "error": errors}), args.results)
    _say(rows=len(rows), seconds=round(time.monotonic() - start, 2))


def run_score_job(args: argparse.Namespace, argv: list[str]) -> int:
    from apm.stages import scoring
    from jobs import score

    # Defined here, Ray ships it by value. It wraps the predictor rather than subclassing it: a
    # subclass would ship the patched-over base by value too, and the base's zero-argument
    # super() would then point at the worker's own (unpatched) class.
    class SlowScorePredictor:
        reports, sleep_s, fast_file = args.reports, args.sleep, args.fast_file

        def __init__(self, **kwargs) -> None:
            from apm.stages import scoring as unpatched  # in a worker: the module as shipped

            self.inner = unpatched.ScorePredictor(**kwargs)

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            _report(self.reports, batch["row"], event="begin")
            if not (self.fast_file and os.path.exists(self.fast_file)):
                time.sleep(self.sleep_s)
            out = self.inner(batch)
            _report(self.reports, batch["row"])
            return out

    scoring.ScorePredictor = SlowScorePredictor
    return score.main(argv)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cluster")
    c.add_argument("--head-cpus", type=int, default=1)
    d = sub.add_parser("predict")
    d.add_argument("--address", required=True)
    d.add_argument("--photos", required=True)
    d.add_argument("--results", required=True)
    d.add_argument("--reports", required=True)
    d.add_argument("--fast-file", required=True)
    d.add_argument("--sleep", type=float, default=0.5)
    d.add_argument("--batch-size", type=int, default=4)
    s = sub.add_parser("score", help="score --reports DIR --sleep S [--fast-file F] -- "
                                     "<jobs.score arguments>")
    s.add_argument("--reports", required=True)
    s.add_argument("--sleep", type=float, default=0.3)
    s.add_argument("--fast-file", help="no more sleeping once this file exists")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.mode == "cluster":
        serve_cluster(args)
        return 0
    if args.mode == "predict":
        run_predict(args)
        return 0
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return run_score_job(args, rest)


if __name__ == "__main__":
    raise SystemExit(main())
