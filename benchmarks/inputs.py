"""python -m benchmarks.inputs: the scoring job's throughput on S3 inputs, with and without
a far store's round-trip latency.

A local S3 endpoint (moto's server) holds ``--n`` photos (500 x 375 JPEGs, crops of
scikit-learn's sample photos) as each input kind of ``--kinds`` lays them out; ``python -m
jobs.score`` scores them twice, through a TCP proxy (:class:`benchmarks._tcp_proxy.TcpProxy`) that
adds nothing, then ``--latency-ms`` to each request's round trip (what object storage in
another building costs; the proxy also counts the requests, and the most in flight at once).
The job's rate is its own summary's (listing, actor start-up, reading, decoding, scoring and
writing; the output goes to a local folder, so that only inputs cross the proxy).

Writes ``--doc`` (docs/benchmark_inputs.md) with the command, the machine and the date.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from apm.core.storage import MAX_READS_IN_FLIGHT
from benchmarks._common import job_summary, machine, make_photos, run_score_job, start_moto, write_doc
from benchmarks._tcp_proxy import TcpProxy
from benchmarks.scale import S3_ENV
from jobs import _cli

BUCKET = "bench-inputs"


#: Files the shards and Parquet kinds split the photos into (the issue's "10 tar shards").
FILES = 10


def _put_all(endpoint: str, objects: list[tuple[str, bytes]]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)  # boto3 clients are thread-safe
    with ThreadPoolExecutor(8) as pool:  # puts wait on the endpoint, not on this process
        list(pool.map(lambda o: client.put_object(Bucket=BUCKET, Key=o[0], Body=o[1]), objects))


def _split(photos: list[Path]) -> list[list[Path]]:
    per_file = -(-len(photos) // FILES)
    return [photos[i:i + per_file] for i in range(0, len(photos), per_file)]


def put_loose(photos: list[Path], endpoint: str) -> tuple[str, list[str]]:
    """Each photo its own object under ``loose/``."""
    _put_all(endpoint, [(f"loose/{p.name}", p.read_bytes()) for p in photos])
    return f"s3://{BUCKET}/loose/", []


def put_shards(photos: list[Path], endpoint: str) -> tuple[str, list[str]]:
    """WebDataset shards ``shards/0000N.tar``: per photo ``KEY.jpg`` and ``KEY.json``."""
    import io
    import json
    import tarfile

    objects = []
    for n, group in enumerate(_split(photos)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for p in group:
                for name, data in ((f"{p.stem}.jpg", p.read_bytes()),
                                   (f"{p.stem}.json", json.dumps({"source": p.name}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        objects.append((f"shards/{n:05d}.tar", buffer.getvalue()))
    _put_all(endpoint, objects)
    return f"s3://{BUCKET}/shards/{{00000..{len(objects) - 1:05d}}}.tar", []


def put_parquet(photos: list[Path], endpoint: str) -> tuple[str, list[str]]:
    """A Parquet dataset ``parquet/part-N.parquet`` with ``id`` and the JPEG bytes ``image``."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    objects = []
    for n, group in enumerate(_split(photos)):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"id": [p.stem for p in group],
                                 "image": pa.array([p.read_bytes() for p in group], pa.binary())}),
                       buffer, row_group_size=256)
        objects.append((f"parquet/part-{n:05d}.parquet", buffer.getvalue()))
    _put_all(endpoint, objects)
    return f"s3://{BUCKET}/parquet/", ["--image-column", "image", "--id-column", "id"]


#: Input kind -> what puts the photos into the store that way and gives the job's ``--input``
#: and the options that go with it.
KINDS: dict[str, Callable[[list[Path], str], tuple[str, list[str]]]] = {
    "loose": put_loose, "shards": put_shards, "parquet": put_parquet}


class Run(NamedTuple):
    kind: str
    latency_ms: float
    rate: float  # images/s, the job's summary
    listing_s: float
    requests: int  # through the proxy
    connections: int
    max_in_flight: int
    wall: float
    load: float  # 1-min load average after the run: other work on the machine slows it


def score_through_proxy(kind: str, input_uri: str, input_args: list[str], endpoint: str,
                        latency_ms: float, args, out: Path) -> Run:
    """One ``jobs.score`` run reading ``input_uri`` through a proxy of ``latency_ms``."""
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    proxy = TcpProxy(host, int(port), latency_s=latency_ms / 1000)
    argv = ["--input", input_uri, *input_args, "--output", str(out), "--s3-endpoint", proxy.url,
            "--model", args.model, "--image-size", str(args.image_size), "--overwrite",
            "--log-level", "WARNING"]
    print(f"{kind}, +{latency_ms:g} ms: python -m jobs.score {shlex.join(argv)}", flush=True)
    try:
        run = run_score_job(argv)
    finally:
        proxy.close()
    figures = job_summary(run.output)
    if figures["errors"]:
        raise RuntimeError(f"{figures['errors']} error rows:\n{run.output[-3000:]}")
    return Run(kind, latency_ms, figures["rate"], figures["listing_s"], proxy.requests,
               proxy.connections, proxy.max_in_flight, run.wall, os.getloadavg()[0])


def report(runs: list[Run], args, mean_bytes: float) -> list[str]:
    rows, verdicts = [], []
    for run in runs:
        rows.append(f"| {run.kind} | {run.latency_ms:g} ms | **{run.rate:.1f}** | "
                    f"{run.requests:,} ({run.requests / args.n:.2f} per photo) | "
                    f"{run.max_in_flight} | {run.connections} | {run.listing_s:.1f} s | "
                    f"{run.wall:.0f} s | {run.load:.1f} |")
    for kind in dict.fromkeys(run.kind for run in runs):
        direct, far = (next(r for r in runs if r.kind == kind and r.latency_ms == ms)
                       for ms in (0, args.latency_ms))
        ratio = far.rate / direct.rate
        verdicts.append(f"- {kind}: +{args.latency_ms:g} ms / direct: **{ratio:.0%}** (target "
                        f"≥ 80%: {'met' if ratio >= 0.8 else 'NOT met'})")
    return [
        "# Scoring throughput by input kind, with a far store's latency",
        "",
        f"- command: `python -m benchmarks.inputs {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()} (`nproc`: {len(os.sched_getaffinity(0))})",
        f"- date: {dt.date.today().isoformat()}",
        f"- workload: {args.n} JPEGs of 500 x 375 (mean {mean_bytes / 1024:.0f} KiB; crops of "
        f"scikit-learn's sample photos) on moto's S3 server on this machine, model "
        f"`{args.model}` at {args.image_size} px, the job's other defaults (its own local Ray, "
        "one actor per core, batch 32, embeddings on); output to a local folder",
        "- each run reads through a TCP proxy (`benchmarks/_tcp_proxy.py`) that adds the latency to "
        "the start of each request (0 ms: the same proxy, so that both runs pay its cost and "
        "are counted)",
        "",
        "| input | added latency | images/s | S3 requests | most in flight at once | "
        "connections | listing | wall | load |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "- images/s: the job's own summary, from the moment Ray is up to the last Parquet file "
        "(listing, actor start-up, reading, decoding, scoring, writing); wall: the job's "
        "whole process",
        "- S3 requests: every request the job sent (preflight, listing, reads), counted by the "
        "proxy; in flight: requests awaiting their answer at one time, over all actors (each "
        f"actor's batch keeps at most {MAX_READS_IN_FLIGHT} in flight); connections: moto's "
        "server closes each connection after its answer, so each request opens one here (the "
        "added latency is per request; a far store would add a handshake per new connection)",
        "- load: the 1-minute load average after the run, on "
        f"{len(os.sched_getaffinity(0))} cores (above that, other work shared the machine)",
        *verdicts,
        *_against_loose(runs, args.latency_ms),
    ]


def _against_loose(runs: list[Run], latency_ms: float) -> list[str]:
    """Each kind's rate over the loose objects' at the same latency (target >= 1.3x)."""
    lines = []
    for run in runs:
        loose = next((r for r in runs if r.kind == "loose" and r.latency_ms == run.latency_ms), None)
        if loose is None or run.kind == "loose":
            continue
        ratio = run.rate / loose.rate
        lines.append(f"- {run.kind} / loose at +{run.latency_ms:g} ms: **{ratio:.2f}x** (target "
                     f"≥ 1.3x: {'met' if ratio >= 1.3 else 'NOT met'})")
    return lines


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            _cli.fail(f"--kinds {kind}: unknown (known: {', '.join(KINDS)})")
    return kinds


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Measure the scoring job's throughput on S3 inputs directly and through a proxy that "
        "adds a round-trip latency.",
        epilog=f"input kinds (--kinds): loose = one object per photo; shards = {FILES} "
               f"WebDataset tar shards (KEY.jpg + KEY.json); parquet = {FILES} Parquet files "
               "with an id and an image-bytes column")
    p.add_argument("--n", type=int, default=10_000, help="photos (default 10000)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated input kinds (default {','.join(KINDS)})")
    p.add_argument("--latency-ms", type=float, default=30.0,
                   help="round-trip latency the second run adds (default 30)")
    p.add_argument("--model", default="random:efficientnet_lite0",
                   help="model spec (default random:efficientnet_lite0, the cheapest backbone)")
    p.add_argument("--image-size", type=int, default=224, help="crop size (default 224)")
    p.add_argument("--work", help="folder for photos and outputs (default: a temporary one)")
    p.add_argument("--doc", default="docs/benchmark_inputs.md", help="report to write")
    args = p.parse_args(argv)
    _cli.setup(args)
    kinds = _kinds(args.kinds)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        photos = make_photos(work / "photos", args.n)
        mean_bytes = sum(p.stat().st_size for p in photos) / len(photos)
        proc, endpoint = start_moto(work / "moto.log")
        os.environ.update(S3_ENV)  # the job's processes inherit them
        try:
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            runs = []
            for kind in kinds:
                input_uri, input_args = KINDS[kind](photos, endpoint)
                runs += [score_through_proxy(kind, input_uri, input_args, endpoint, ms, args,
                                             work / "out")
                         for ms in (0, args.latency_ms)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = report(runs, args, mean_bytes)
    write_doc(args.doc, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
