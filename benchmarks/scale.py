"""python -m benchmarks.scale: listing, the scoring job's own machinery and its memory from
10^5 to 10^6 objects, and what they project to at 10^7 and 10^8.

1. Listing (``apm.data.listing.build_listing``, as the job lists, default listing tasks), each in a
   fresh process that starts its own local Ray: its rate (objects/s) and the driver's peak
   resident set, for (a) a flat prefix of ``--s3-objects`` empty objects on a local S3
   endpoint (moto's server; uploaded by ``--upload-threads`` threads, one boto3 client each),
   with the key ranges and probes from the listing's log, beside the single-process listing
   the old code did (s3fs ``fs.find(path, detail=True)``); (b) ``--flat-files`` empty files in
   one local folder; (c) a local tree of ``--tree-folders`` folders of one file each.
2. The job's own machinery: ``python -m jobs.score`` over flat folders of empty ``.jpg`` files
   (``--empty-sizes``, default 100k and 1M): every file is an error row ("empty"), so no pixel
   is decoded and what is measured is listing, shards, Ray Data and writing. The driver's own
   peak RSS (``ru_maxrss`` of the jobs.score process, not of Ray's processes), wall time and
   the job's summary; then a rerun of the largest into the same output (resume: every shard is
   complete and only checked).
3. Real photos scored end to end (``--photo-sizes``, default 10k and 100k small JPEGs, 96x72
   crops of scikit-learn's sample photos, distinct per index) with the cheaper of the models
   in ``--models`` (picked on a few hundred photos, single-threaded decode + forward), at
   ``--image-size`` and without embeddings: images/s, wall, the driver's peak RSS and the whole
   process tree's peak PSS (sampled every 2 s). Then ``--embedding-photos`` photos scored with
   and without embeddings, for the output's bytes per row.
4. Ray Data's own checkpointing restores by loading every id: ``--ids`` string ids of a
   typical URI's length as an Arrow array, as the object-dtype NumPy array each filter actor
   holds, and as a Python set, in a fresh process (resident set before and after).

The report (``--doc``) adds a projection to 10 M and 100 M objects from these figures. Another
process on the machine perturbs timings: the load average is recorded beside each figure, and
the comparisons that matter (100k against 1M, 10k against 100k photos) are run back to back.
Everything is created under ``--work`` and removed at the end unless ``--keep``; the raw
figures stay in ``WORK/results.json`` with ``--keep`` (``--from-results`` writes the report
from such a file again, with that run's command and date).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._common import PROJECT_ROOT, job_summary, machine, run_process, run_score_job, start_moto
from jobs import _cli

#: Defaults, and what ``--quick`` scales them down to (a smoke run of a minute or two).
FULL = {"s3_objects": 100_000, "flat_files": 1_000_000, "tree_folders": 100_000,
        "empty_sizes": "100000,1000000", "photo_sizes": "10000,100000", "embedding_photos": 5000,
        "ids": 10_000_000, "rows_per_file": 50_000, "pick_photos": 320}
QUICK = {"s3_objects": 2_500, "flat_files": 20_000, "tree_folders": 2_000,
         "empty_sizes": "2000,20000", "photo_sizes": "300,1000", "embedding_photos": 200,
         "ids": 200_000, "rows_per_file": 5_000, "pick_photos": 64}
PARTS = ("s3", "flat", "tree", "machinery", "photos", "ids")
BUCKET = "bench-scale"
PHOTO_SIZE = (96, 72)
#: The projection's library sizes.
PROJECT_TO = (10_000_000, 100_000_000)
#: What the projection assumes of AWS S3 (not measured here): seconds per ListObjectsV2 request
#: (a page of 1,000 keys, or a one-key probe), and the listing tasks of a 64-CPU cluster.
AWS_LIST_S = 0.2
CLUSTER_TASKS = 256
#: The job's --progress-every in these runs: its progress lines give the steady rate.
PROGRESS_S = 20

_T0 = time.perf_counter()


def say(message: str) -> None:
    """A progress line."""
    minutes, seconds = divmod(time.perf_counter() - _T0, 60)
    print(f"[scale {int(minutes):02d}:{seconds:04.1f}] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 1)


def _echo(prefix: str):
    keep = re.compile(r"INFO (scored \d|listing|\d+ shards|listing .*key ranges)|WARNING|ERROR|"
                      r"Traceback|^scored now|^listing:")

    def echo(line: str) -> None:
        if keep.search(line):
            say(f"  {prefix}: {line[-160:]}")
    return echo


# --- measuring processes (--measure) ----------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """The resident set now (KiB); Linux's peak (VmHWM) restarts from it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def measure_listing(source: str, folder: str) -> dict:
    """List ``source`` as the job does (default tasks) in this process, the driver."""
    from apm.core.runtime import init_ray
    from apm.data.listing import ListingConfig, build_listing

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("apm.data.listing").addHandler(Keep())
    init_ray()
    before = _status_kib("VmHWM")
    base = _reset_peak()
    listing = build_listing(ListingConfig(source, folder))
    stems = {Path(p).name.split("-")[1] for p in listing.parts}
    during = _status_kib("VmHWM")
    return {"rows": listing.rows, "parts": len(listing.parts), "seconds": listing.seconds,
            "stems": len(stems - {"00000"}), "base_kib": base, "rise_kib": during - base,
            "peak_kib": max(before, during), "log": "\n".join(messages)}


def measure_find(uri: str) -> dict:
    """The old code's listing: s3fs ``find(path, detail=True)``, every object in this process."""
    from apm.core import storage

    fs, path = storage.filesystem(uri)
    before = _status_kib("VmHWM")
    base = _reset_peak()
    start = time.perf_counter()
    found = fs.find(path, detail=True)
    seconds = time.perf_counter() - start
    during = _status_kib("VmHWM")
    return {"rows": len(found), "seconds": seconds, "base_kib": base, "rise_kib": during - base,
            "peak_kib": max(before, during)}


def typical_id(i: int) -> str:
    """A URI of typical shape and length (the id a job would checkpoint by)."""
    return f"s3://photos/library/{i // 1000:05d}/IMG_{i:08d}.jpg"


def measure_ids(n: int) -> dict:
    """Bytes per id of ``n`` string ids as Ray Data's checkpoint restore holds them."""
    import pickle

    import numpy as np
    import pyarrow as pa
    from ray.data.checkpoint.checkpoint_filter import _numpy_size

    gc.collect()
    rss0 = _status_kib("VmRSS")
    chunks = [pa.array([typical_id(i) for i in range(lo, min(n, lo + 1_000_000))], pa.string())
              for lo in range(0, n, 1_000_000)]
    arrow = pa.chunked_array(chunks)
    gc.collect()
    rss1 = _status_kib("VmRSS")
    start = time.perf_counter()
    ids = arrow.to_numpy(zero_copy_only=False)  # what the restore task converts to
    to_numpy_s = time.perf_counter() - start
    gc.collect()
    rss2 = _status_kib("VmRSS")
    start = time.perf_counter()
    ordered = np.sort(ids)  # the restore sorts them (strings shared, a new pointer array)
    sort_s = time.perf_counter() - start
    del ids
    start = time.perf_counter()
    pickled = len(pickle.dumps(ordered, protocol=5))  # an object array travels pickled
    pickle_s = time.perf_counter() - start
    gc.collect()
    rss3 = _status_kib("VmRSS")
    as_set = set(ordered.tolist())
    gc.collect()
    rss4 = _status_kib("VmRSS")
    lengths = [len(typical_id(i)) for i in range(0, n, max(1, n // 1000))]
    return {"n": n, "length": statistics.mean(lengths),
            "example": typical_id(n - 1), "arrow_nbytes": arrow.nbytes,
            "arrow_rss": (rss1 - rss0) * 1024, "numpy_rss": (rss2 - rss1) * 1024,
            "ray_estimate": _numpy_size(ordered), "pickled": pickled,
            "set_rss": (rss4 - rss3) * 1024, "len_set": len(as_set),
            "to_numpy_s": to_numpy_s, "sort_s": sort_s, "pickle_s": pickle_s}


def _measured(kind: str, *args: str, sample_memory: bool = False, echo=None) -> tuple[dict, int]:
    """Run ``--measure KIND ARGS`` in a fresh process; its result and its tree's peak PSS."""
    run = run_process([sys.executable, "-m", "benchmarks.scale", "--measure", kind, *args],
                      sample_memory, echo, cwd=PROJECT_ROOT)
    match = re.search(r"^RESULT (.*)$", run.output, re.M)
    if run.returncode or not match:
        raise RuntimeError(f"--measure {kind} failed ({run.returncode}):\n{run.output[-3000:]}")
    return json.loads(match.group(1)), run.tree_peak


# --- the S3 endpoint ------------------------------------------------------------------------

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_REGION": "us-east-1"}


def s3_key(i: int) -> str:
    return f"library/IMG_{i:07d}.jpg"


def upload(n: int, threads: int) -> float:
    """``n`` empty objects under ``library/``, ``threads`` threads with a boto3 client each."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    local = threading.local()
    done = [0]
    lock = threading.Lock()

    def put(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = boto3.client("s3")
        client.put_object(Bucket=BUCKET, Key=s3_key(i), Body=b"")
        with lock:
            done[0] += 1
            if done[0] % max(1, n // 10) == 0:
                say(f"  uploaded {done[0]}/{n} ({done[0] / (time.perf_counter() - start):.0f}/s)")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(n)))
    return time.perf_counter() - start


def request_seconds(keys: int) -> dict:
    """Median seconds of one ListObjectsV2 request on the endpoint: a page, and a probe."""
    import boto3

    client = boto3.client("s3")
    out = {}
    for name, max_keys, after in (("page", 1000, None), ("probe", 1, s3_key(keys // 2))):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            client.list_objects_v2(Bucket=BUCKET, Prefix="library/", MaxKeys=max_keys,
                                   **({"StartAfter": after} if after else {}))
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


# --- files ----------------------------------------------------------------------------------

def empty_files(folder: Path, n: int) -> float:
    """``n`` empty ``.jpg`` files in one folder; seconds taken."""
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY
    for i in range(n):
        os.close(os.open(folder / f"IMG_{i:07d}.jpg", flags, 0o644))
        if (i + 1) % max(1, n // 5) == 0:
            say(f"  {folder.name}: {i + 1}/{n} files")
    return time.perf_counter() - start


def tree_files(root: Path, folders: int) -> tuple[float, int]:
    """``folders`` leaf folders of one small file each, in ``ceil(sqrt)`` top folders."""
    start = time.perf_counter()
    top = max(1, round(math.sqrt(folders) / 3))  # e.g. 105 x ~950 for 100k
    per_top = math.ceil(folders / top)
    made = 0
    for t in range(top):
        for f in range(min(per_top, folders - made)):
            leaf = root / f"{t:04d}" / f"{f:05d}"
            leaf.mkdir(parents=True)
            (leaf / f"IMG_{made:07d}.jpg").write_bytes(b"\xff\xd8")
            made += 1
        if (t + 1) % max(1, top // 5) == 0:
            say(f"  tree: {made}/{folders} folders")
    return time.perf_counter() - start, top


def small_photos(folder: Path, n: int, seed: int = 0) -> float:
    """``n`` distinct 96x72 JPEGs: crops at distinct offsets (and flips) of the real photos."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(a) for a in load_sample_images().images]
    w, h = PHOTO_SIZE
    spans = [((s.width - w + 1), (s.height - h + 1)) for s in sources]
    per_source = [a * b for a, b in spans]
    total = 2 * sum(per_source)  # every offset of every photo, flipped or not
    picks = rng.choice(total, size=n, replace=n > total)
    folder.mkdir(parents=True, exist_ok=True)
    for i, pick in enumerate(picks):
        flip, pick = divmod(int(pick), sum(per_source))
        k = 0 if pick < per_source[0] else 1
        pick -= 0 if k == 0 else per_source[0]
        top, left = divmod(pick, spans[k][0])
        photo = sources[k].crop((left, top, left + w, top + h))
        if flip:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        photo.save(folder / f"{i:06d}.jpg", quality=int(rng.integers(80, 96)))
        if (i + 1) % max(1, n // 5) == 0:
            say(f"  photos: {i + 1}/{n}")
    return time.perf_counter() - start


def subset(photos: Path, folder: Path, n: int) -> Path:
    """A folder of links to the first ``n`` photos."""
    if not folder.exists():
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i:06d}.jpg").symlink_to(photos / f"{i:06d}.jpg")
    return folder


def remove(path: Path) -> None:
    if path.exists():
        start = time.perf_counter()
        shutil.rmtree(path)
        say(f"  removed {path} ({time.perf_counter() - start:.0f} s)")


def parquet_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("part-*.parquet"))


def _variety(folder: Path) -> dict:
    """How varied the scores are: distinct means, and the share of zeros in the embeddings
    (a random model's outputs compress better when they do not vary)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        return {"distinct_means": 0, "embedding_zeros": None}
    means = pq.read_table(files[0], columns=["mean"]).column("mean")
    embedding = pq.read_table(files[0], columns=["embedding"]).column("embedding")
    values = pc.list_flatten(embedding).to_numpy(zero_copy_only=False) if embedding.null_count \
        < len(embedding) else np.zeros(0)
    return {"distinct_means": pc.count_distinct(means).as_py(),
            "embedding_zeros": float((values == 0).mean()) if len(values) else None}


# --- the job --------------------------------------------------------------------------------

def _progress(output: str) -> dict:
    """From the job's log: seconds from the plan (its shards line) to the first rows back, and
    the steady rate between the first and the last progress line (start-up excluded)."""
    def when(stamp: str) -> float:
        return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO "
    plan = re.search(stamp + r"\d+ shards of up to (\d+) rows", output, re.M)
    lines = [(when(m.group(1)), int(m.group(2)), int(m.group(3))) for m in
             re.finditer(stamp + r"scored (\d+)/\d+ .*, (\d+) files written", output, re.M)
             if int(m.group(2)) > 0]
    points = [(t, n) for t, n, _ in lines]
    first = points[0] if points else None
    steady = None
    if len(points) >= 2 and points[-1][0] - first[0] >= 5:
        steady = (points[-1][1] - first[1]) / (points[-1][0] - first[0])
    # Rows scored but not yet written: every file written before the end holds a whole shard.
    pending = max((n - files * int(plan.group(2)) for _, n, files in lines[:-1]), default=0) \
        if plan else None
    return {"first_row_s": first[0] - when(plan.group(1)) if first and plan else None,
            "steady": steady, "plan_at": when(plan.group(1)) if plan else None,
            "first_at": first[0] if first else None, "last_at": points[-1][0] if points else None,
            "pending": pending}


def score(input_: Path, out: Path, model: str, image_size: int, rows_per_file: int, *,
          embedding: bool = False, overwrite: bool = True, sample_memory: bool = False,
          label: str = "") -> dict:
    argv = ["--input", str(input_), "--output", str(out), "--model", model,
            "--image-size", str(image_size), "--rows-per-file", str(rows_per_file),
            "--progress-every", str(PROGRESS_S)]
    argv += [] if embedding else ["--no-embedding"]
    argv += ["--overwrite"] if overwrite else []
    say(f"{label}: python -m jobs.score {shlex.join(argv)}")
    run = run_score_job(argv, sample_memory, _echo(label))
    logs = out.parent / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"{label.replace(' ', '_').replace(',', '')}.log").write_text(run.output)
    step = max(1, len(run.driver_rss) // 400)
    result = {"wall": run.wall, "driver_peak": run.driver_peak, "tree_peak": run.tree_peak,
              "load": load(), "bytes": parquet_bytes(out / "scores"), **job_summary(run.output),
              **_progress(run.output), **_variety(out / "scores"),
              "driver_rss": run.driver_rss[::step]}
    say(f"{label}: {result['rows']} rows in {run.wall:.0f} s wall ({result['seconds']:.1f} s "
        f"in the job), driver peak {run.driver_peak / 2**20:.0f} MiB"
        + (f", tree peak {run.tree_peak / 2**20:.0f} MiB" if sample_memory else ""))
    return result


def pick_model(photos: list[Path], archs: list[str], image_size: int, batch: int) -> dict:
    """Single-threaded seconds per photo to decode and to score, per architecture."""
    import numpy as np
    import torch

    from apm.models import ModelSpec, optimize_for_inference
    from apm.models.transforms import image_transform

    torch.set_num_threads(1)
    data = [p.read_bytes() for p in photos]
    out = {}
    for arch in archs:
        model = optimize_for_inference(ModelSpec.resolve(f"random:{arch}").load(), image_size,
                                       torch.device("cpu"))
        transform = image_transform(model.config.backbone, image_size)
        start = time.perf_counter()
        crops = np.stack([transform.crop_bytes(d) for d in data])
        decode = (time.perf_counter() - start) / len(data)
        batches = [torch.from_numpy(crops[i:i + batch]) for i in range(0, len(crops), batch)]
        with torch.inference_mode():
            model(transform.normalize(batches[0]))  # warm-up
            start = time.perf_counter()
            for b in batches:
                model(transform.normalize(b))
        out[arch] = {"decode": decode, "forward": (time.perf_counter() - start) / len(crops)}
        say(f"  {arch} at {image_size} px: decode {decode * 1e3:.2f} ms + forward "
            f"{out[arch]['forward'] * 1e3:.2f} ms per photo (1 thread)")
    return out


# --- the parts ------------------------------------------------------------------------------

def part_s3(args, work: Path, r: dict) -> None:
    log = work / "moto.log"
    proc, url = start_moto(log)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": url})
    try:
        say(f"(a) uploading {args.s3_objects} empty objects to s3://{BUCKET}/library/ "
            f"({args.upload_threads} threads)")
        upload_s = upload(args.s3_objects, args.upload_threads)
        requests = request_seconds(args.s3_objects)
        say(f"  upload {upload_s:.0f} s; one request: page {requests['page']:.2f} s, "
            f"probe {requests['probe']:.2f} s")
        uri = f"s3://{BUCKET}/library/"
        say("(a) listing the prefix as the job does")
        listing, tree = _measured("listing", uri, str(work / "listings" / "s3"),
                                  sample_memory=True)
        cut = re.search(r"(\d+) key ranges after the first page \((\d+) probes, ([\d.]+) s\)",
                        listing["log"])
        listing.update(tree_peak=tree, load=load(), ranges=int(cut.group(1)) if cut else 1,
                       probes=int(cut.group(2)) if cut else 0,
                       probe_s=float(cut.group(3)) if cut else 0.0)
        say(f"  {listing['rows']} objects in {listing['seconds']:.1f} s, "
            f"{listing['ranges']} key ranges ({listing['probes']} probes)")
        say("(a) baseline: s3fs find(detail=True) in one process")
        find, _ = _measured("find", uri)
        find["load"] = load()
        say(f"  {find['rows']} objects in {find['seconds']:.1f} s")
    except Exception:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if " 200 " not in line][-30:]
        say(f"moto server {'exited with ' + str(proc.poll()) if proc.poll() is not None else 'alive'}"
            "; its log, less the 200 answers:\n" + "\n".join(lines))
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    r["s3"] = {"objects": args.s3_objects, "threads": args.upload_threads, "upload_s": upload_s,
               "requests": requests, "listing": listing, "find": find}


def _local_listing(name: str, folder: Path, work: Path) -> dict:
    listing, tree = _measured("listing", str(folder), str(work / "listings" / name),
                              sample_memory=True)
    listing.update(tree_peak=tree, load=load())
    say(f"  {listing['rows']} objects in {listing['seconds']:.1f} s "
        f"({listing['rows'] / listing['seconds']:.0f}/s), driver rise "
        f"{listing['rise_kib'] / 1024:.0f} MiB, tree peak {tree / 2**20:.0f} MiB")
    return listing


def part_flat(args, work: Path, r: dict) -> None:
    folder = work / f"flat{args.flat_files}"
    say(f"(b) {args.flat_files} empty files in {folder}")
    made = empty_files(folder, args.flat_files) if not folder.exists() else 0.0
    say("(b) listing them")
    r["flat"] = {"files": args.flat_files, "create_s": made,
                 "listing": _local_listing("flat", folder, work)}


def part_tree(args, work: Path, r: dict) -> None:
    root = work / "tree"
    say(f"(c) a tree of {args.tree_folders} folders, one file each")
    made, top = tree_files(root, args.tree_folders)
    say("(c) listing it")
    r["tree"] = {"folders": args.tree_folders, "top": top, "create_s": made,
                 "listing": _local_listing("tree", root, work)}
    remove(root)


def part_machinery(args, work: Path, r: dict) -> None:
    sizes = sorted(int(s) for s in args.empty_sizes.split(","))
    runs = {}
    for n in sizes:
        folder = work / f"flat{n}"
        if not folder.exists():
            say(f"2. {n} empty files")
            empty_files(folder, n)
    model = "random:resnet18"
    for n in sizes:
        runs[n] = score(work / f"flat{n}", work / f"out_empty{n}", model, 32, args.rows_per_file,
                        label=f"empty {n}")
    big = sizes[-1]
    rerun = score(work / f"flat{big}", work / f"out_empty{big}", model, 32, args.rows_per_file,
                  overwrite=False, label=f"resume {big}")
    r["machinery"] = {"model": model, "rows_per_file": args.rows_per_file,
                      "runs": {str(n): v for n, v in runs.items()}, "rerun": rerun}
    for n in sizes:
        remove(work / f"out_empty{n}")
        remove(work / f"flat{n}")


def part_photos(args, work: Path, r: dict) -> None:
    sizes = sorted(int(s) for s in args.photo_sizes.split(","))
    photos = work / "photos"
    say(f"3. {max(sizes)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}")
    made = small_photos(photos, max(sizes))
    sample = sorted(photos.glob("*.jpg"))[:args.pick_photos]
    mean_bytes = statistics.mean(p.stat().st_size for p in sample)
    say(f"3. picking the model on {len(sample)} photos")
    archs = args.models.split(",")
    pick = pick_model(sample, archs, args.image_size, 32)
    arch = min(archs, key=lambda a: pick[a]["decode"] + pick[a]["forward"])
    model = f"random:{arch}"
    say(f"  picked {model}")
    runs, asked = {}, {}
    for wanted in sizes:
        n = wanted
        if runs:  # the largest N that fits the budget: the first run's start-up + N / its rate
            first = runs[min(runs)]
            rate = first["steady"] or first["rows"] / first["wall"]
            fixed = max(first["wall"] - first["rows"] / rate, 0.0)
            if fixed + wanted / rate > args.photo_budget:
                n = max(sizes[0], int((args.photo_budget - fixed) * rate) // sizes[0] * sizes[0])
                say(f"  {wanted} photos would take ~{fixed + wanted / rate:.0f} s ({fixed:.0f} s "
                    f"+ {rate:.0f}/s), over --photo-budget {args.photo_budget:.0f} s: scoring {n}")
        asked[str(n)] = wanted
        runs[n] = score(subset(photos, work / f"set{n}", n), work / f"out_photos{n}", model,
                        args.image_size, args.rows_per_file, sample_memory=True,
                        label=f"photos {n}")
        remove(work / f"out_photos{n}")
    e = args.embedding_photos
    output = {}
    for embedding in (False, True):
        out = work / f"out_embedding{int(embedding)}"
        output[str(embedding)] = score(subset(photos, work / f"set{e}", e), out,
                                       args.output_model, args.image_size, args.rows_per_file,
                                       embedding=embedding, label=f"output {e}, embedding "
                                       f"{'on' if embedding else 'off'}")
        remove(out)
    r["photos"] = {"photos": max(sizes), "create_s": made, "mean_bytes": mean_bytes,
                   "pick": pick, "model": model, "image_size": args.image_size,
                   "runs": {str(n): v for n, v in runs.items()},
                   "asked": asked,
                   "output": output, "embedding_photos": e, "output_model": args.output_model}
    remove(photos)
    for n in [*runs, e]:
        remove(work / f"set{n}")


def part_ids(args, work: Path, r: dict) -> None:
    say(f"4. {args.ids} string ids in memory")
    r["ids"], _ = _measured("ids", str(args.ids))
    say(f"  {r['ids']['numpy_rss'] / args.ids:.0f} bytes per id as a NumPy object array")


# --- the report -----------------------------------------------------------------------------

def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def _size(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b:.0f} B"


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 120:
        return f"{s / 60:,.0f} min"
    return f"{s:,.1f} s"


def _opt(value, fmt: str, f=lambda v: v) -> str:
    return "—" if value is None else fmt.format(f(value))


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def report(r: dict) -> list[str]:
    lines = [
        "# Scale: listing, the job's own machinery and memory, 10^5 to 10^6 objects, projected to 10^8",
        "",
        f"- command: `python -m benchmarks.scale {r['command']}`",
        f"- machine: {r['machine']}",
        f"- date: {r['date']}; torch {r['torch']}, ray {r['ray']}, pyarrow {r['pyarrow']}, "
        f"s3fs {r['s3fs']}, moto {r['moto']}",
        f"- the whole run took {_duration(r['total_s'])}; load average (1 min) at its start "
        f"{r['load_start']}, at its end {r['load_end']}",
        "- another engineer's test suite ran on the same 2 cores during (part of) this run, so "
        "absolute times are perturbed (the load average is given beside each figure); the comparisons "
        "that matter (100k against 1M objects, 10k against 100k photos) were measured back to "
        "back in this run",
        "",
    ]
    if "s3" in r or "flat" in r or "tree" in r:
        lines += _report_listing(r)
    if "machinery" in r:
        lines += _report_machinery(r)
    if "photos" in r:
        lines += _report_photos(r)
    if "ids" in r:
        lines += _report_ids(r)
    lines += _report_projection(r)
    lines += _report_summary(r)
    return lines


def _report_listing(r: dict) -> list[str]:
    lines = ["## 1. Listing", "",
             "`apm.data.listing.build_listing` as `jobs.score` calls it (default listing tasks: 4 per "
             "CPU = 8 here), each in a fresh process that starts a local Ray: that process is "
             "the driver. Seconds: the listing's own (`Listing.seconds`), which includes starting "
             "the listing tasks' worker processes. Driver peak: its peak resident set (VmHWM) "
             "over its life (Python, Ray, the listing); rise: its peak during the listing above "
             "its resident set before (Linux's peak reset through `/proc/self/clear_refs`). "
             "Process tree: peak PSS of the driver and every Ray process (the listing tasks "
             "included), sampled every 2 s.", "",
             "| source | objects | listing tasks | seconds | objects/s | driver peak | driver "
             "rise while listing | process tree peak | load |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, m: dict, tasks: str, tree: bool = True) -> str:
        return (f"| {name} | {m['rows']:,} | {tasks} | {m['seconds']:.1f} | "
                f"**{m['rows'] / m['seconds']:,.0f}** | {_mib(m['peak_kib'] * 1024)} | "
                f"{_mib(m['rise_kib'] * 1024)} | {_mib(m['tree_peak']) if tree else '—'} | "
                f"{m['load']} |")
    if "s3" in r:
        s, m, f = r["s3"], r["s3"]["listing"], r["s3"]["find"]
        lines.append(row("(a) S3 flat prefix (moto), the job's listing", m,
                         f"{m['ranges']} key ranges"))
        lines.append(row("(a) same prefix, s3fs `find(detail=True)` in one process (the old "
                         "code)", f, "1 (the process itself)", tree=False))
    if "flat" in r:
        m = r["flat"]["listing"]
        lines.append(row("(b) local disk, one flat folder of empty files", m,
                         f"{m['stems']} (a flat folder is one task)"))
    if "tree" in r:
        t, m = r["tree"], r["tree"]["listing"]
        lines.append(row(f"(c) local tree: {t['top']} folders of ~{t['folders'] // t['top']:,} "
                         "folders, one file each", m, f"{m['stems']}"))
    lines.append("")
    if "s3" in r:
        s, m, f = r["s3"], r["s3"]["listing"], r["s3"]["find"]
        lines += [
            f"- (a) setup: the {s['objects']:,} empty objects were uploaded in "
            f"{_duration(s['upload_s'])} by {s['threads']} threads ({s['objects'] / s['upload_s']:,.0f} "
            "PUT/s; setup, not a figure)",
            f"- (a) the listing's log: **{m['ranges']} key ranges after the first page "
            f"({m['probes']} probes, {m['probe_s']:.1f} s)**",
            f"- (a) the endpoint: one `list_objects_v2` request for a page of 1,000 keys takes "
            f"**{s['requests']['page']:.2f} s** on this moto server with {s['objects']:,} keys, "
            f"a one-key probe {s['requests']['probe']:.2f} s (median of 3): moto builds and sorts "
            "the whole key list on every request (`list_objects` in moto/s3/models.py) and "
            "renders the page in Python, in one process "
            "on these 2 cores, so this listing is bound by the endpoint, not by the listing's "
            "tasks; the projection below uses an assumed AWS latency instead",
            "- (a) against the old single-process listing: "
            f"{m['rows'] / m['seconds'] / (f['rows'] / f['seconds']):.2f}x "
            f"its rate; driver rise {_mib(m['rise_kib'] * 1024)} against "
            f"{_mib(f['rise_kib'] * 1024)} for `find`, which holds every object's details in "
            f"the process (~{f['rise_kib'] * 1024 / max(f['rows'], 1):,.0f} bytes per object)",
        ]
    if "flat" in r:
        lines.append(f"- (b) setup: {r['flat']['files']:,} empty files created in "
                     f"{_duration(r['flat']['create_s'])}")
    if "tree" in r:
        lines.append(f"- (c) setup: the tree created in {_duration(r['tree']['create_s'])}")
    lines.append("")
    return lines


def _timeline(x: dict) -> dict | None:
    """The driver's resident set at the plan, at the first rows back, and at 25/50/75/100% of
    the time from then to its last progress line (Ray's shutdown after it is left out)."""
    samples = x.get("driver_rss") or []
    if not samples or not x.get("plan_at") or not x.get("first_at") or not x.get("last_at"):
        return None

    def at(t: float) -> int:
        before = [b for when, b in samples if when <= t]
        return before[-1] if before else samples[0][1]
    first, end = x["first_at"], x["last_at"]
    return {"plan": at(x["plan_at"]), "first": at(first),
            **{q: at(first + q / 100 * (end - first)) for q in (25, 50, 75)}, "end": at(end)}


def _machinery_figures(r: dict) -> dict:
    m = r["machinery"]
    sizes = sorted(int(n) for n in m["runs"])
    small, big = m["runs"][str(sizes[0])], m["runs"][str(sizes[-1])]
    return {"sizes": sizes, "small": small, "big": big,
            "ratio": big["driver_peak"] / small["driver_peak"],
            "per_object": (big["driver_peak"] - small["driver_peak"]) / (sizes[-1] - sizes[0]),
            "marginal": (big["wall"] - small["wall"]) / (sizes[-1] - sizes[0]),
            "ms_small": small["wall"] / sizes[0] * 1e3, "ms_big": big["wall"] / sizes[-1] * 1e3}


def _report_machinery(r: dict) -> list[str]:
    m, g = r["machinery"], _machinery_figures(r)
    sizes, rerun = g["sizes"], m["rerun"]
    lines = ["## 2. The job's own machinery: empty files", "",
             "`python -m jobs.score --input FOLDER --output OUT --model "
             f"{m['model']} --image-size 32 --no-embedding --rows-per-file "
             f"{m['rows_per_file']}` over one flat folder of empty `.jpg` files: every file is an "
             "error row (\"empty\") without a photo decoded, so the time is the job's own "
             "machinery (listing, shards, Ray Data's blocks, the driver collecting results, "
             "writing Parquet). Wall: the whole process (Python, imports, Ray start and stop); "
             "job: the job's own summary (from Ray up to the last file). Driver peak: the peak "
             "resident set (VmHWM) of the jobs.score process alone, read as it ends (Ray's "
             "processes are its children and not counted; not `ru_maxrss`, which a process "
             "started by a larger one inherits from it across `exec`).", "",
             "| objects | wall | job (summary) | of which listing | first rows back | ms per "
             "object, wall | ms per object, job | ms per object, steady | driver peak RSS | "
             "output | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        x = m["runs"][str(n)]
        lines.append(f"| {n:,} | {x['wall']:.1f} s | {x['seconds']:.1f} s | "
                     f"{x['listing_s']:.1f} s | {_opt(x.get('first_row_s'), '{:.0f} s')} | "
                     f"**{x['wall'] / n * 1e3:.3f}** | {x['seconds'] / n * 1e3:.3f} | "
                     f"{_opt(x.get('steady'), '{:.3f}', lambda v: 1e3 / v)} | "
                     f"**{_mib(x['driver_peak'])}** | {x['bytes'] / n:.1f} bytes/row | "
                     f"{x['load']} |")
    lines += ["", "First rows back: from the job's plan (its shards line) to its first progress "
              "line with rows: Ray Data's pipeline, its worker processes and the actors starting "
              f"(the job logs progress at most every {PROGRESS_S} s, so a start under "
              f"{PROGRESS_S} s reads as about {PROGRESS_S} s). Steady: rows between its first and "
              "last progress lines over the time between them, start-up excluded."]
    lines += [
        "",
        f"- driver peak RSS, {sizes[-1]:,} / {sizes[0]:,} objects: **{g['ratio']:.2f}x** "
        f"(target ≤ 1.5x: {_met(g['ratio'] <= 1.5)}); at {sizes[-1]:,}: "
        f"{_mib(g['big']['driver_peak'])} (target < 2 GiB: {_met(g['big']['driver_peak'] < 2 * 2**30)})",
        f"- growth between them: {g['per_object']:.0f} bytes of driver peak per object "
        f"({_mib(g['big']['driver_peak'] - g['small']['driver_peak'])} for "
        f"{sizes[-1] - sizes[0]:,} objects)",
        f"- machinery cost, wall time / objects (target ≤ 1 ms): **{g['ms_small']:.3f} ms** at "
        f"{sizes[0]:,} ({_met(g['ms_small'] <= 1.0)}), **{g['ms_big']:.3f} ms** at "
        f"{sizes[-1]:,} ({_met(g['ms_big'] <= 1.0)}); marginal, (wall at {sizes[-1]:,} − "
        f"wall at {sizes[0]:,}) / {sizes[-1] - sizes[0]:,}: {g['marginal'] * 1e3:.3f} ms per "
        "object (fixed start-up cancels)",
        "",
        *_report_timelines(m["runs"], sizes),
        "### Resume",
        "",
        f"The same command again into the same `--output` (no `--overwrite`): the listing is "
        f"reused and all {rerun['shards']} shards are complete, so the run only checks them.",
        "",
        "| objects | shards kept | wall | job (summary) | per shard | driver peak RSS | load |",
        "|---|---|---|---|---|---|---|",
        f"| {rerun['listed']:,} | {rerun['files_kept']} of {rerun['shards']} | "
        f"{rerun['wall']:.1f} s | {rerun['seconds']:.1f} s | "
        f"**{rerun['seconds'] / max(rerun['files_kept'], 1) * 1e3:.0f} ms** (job time / shards, "
        f"an upper bound) | {_mib(rerun['driver_peak'])} | {rerun['load']} |",
        "",
    ]
    return lines


def _report_timelines(runs: dict, sizes: list[int]) -> list[str]:
    rows = []
    for n in sizes:
        x, t = runs[str(n)], _timeline(runs[str(n)])
        if t is None:
            continue
        pending = f"{x['pending']:,}" if x.get("pending") is not None else "—"
        rows.append(f"| {n:,} | {_mib(t['plan'])} | {_mib(t['first'])} | {_mib(t[25])} | "
                    f"{_mib(t[50])} | {_mib(t[75])} | {_mib(t['end'])} | {_mib(x['driver_peak'])} "
                    f"| {pending} |")
    if not rows:
        return []
    return ["The driver's resident set over each run (VmRSS every 2 s): at the plan (listing "
            "done, shards opened), when the first rows came back, then at 25/50/75% of the time "
            "from there to its last progress line; peak: VmHWM. Rows in unfinished shards: the most rows "
            "scored but not yet written, at the job's progress lines (the driver holds each "
            "shard's results until all its rows are in).", "",
            "| objects | at the plan | first rows back | 25% | 50% | 75% | end | peak | rows in "
            "unfinished shards, most |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def _photo_figures(r: dict) -> dict:
    p = r["photos"]
    sizes = sorted(int(n) for n in p["runs"])
    small, big = p["runs"][str(sizes[0])], p["runs"][str(sizes[-1])]
    off, on = p["output"]["False"], p["output"]["True"]
    return {"sizes": sizes, "small": small, "big": big, "on": on,
            "tree_ratio": big["tree_peak"] / small["tree_peak"],
            "driver_ratio": big["driver_peak"] / small["driver_peak"],
            "rate_ratio": big["rate"] / small["rate"],
            "row_on": on["bytes"] / p["embedding_photos"],
            "row_off": off["bytes"] / p["embedding_photos"], "row_big": big["bytes"] / sizes[-1]}


def _report_photos(r: dict) -> list[str]:
    p, g = r["photos"], _photo_figures(r)
    sizes = g["sizes"]
    lines = ["## 3. Real photos, end to end", "",
             f"{p['photos']:,} JPEGs of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} (mean "
             f"{p['mean_bytes'] / 1024:.1f} KiB), crops at distinct offsets (and mirror images) "
             "of scikit-learn's two sample photos. The model: the cheaper of these on "
             f"{r['pick_photos']} photos, one thread, the job's optimised model at "
             f"{p['image_size']} px, batch 32:", "",
             "| model | decode | forward | per photo |", "|---|---|---|---|"]
    for arch, t in p["pick"].items():
        picked = " (picked)" if f"random:{arch}" == p["model"] else ""
        lines.append(f"| random:{arch}{picked} | {t['decode'] * 1e3:.2f} ms | "
                     f"{t['forward'] * 1e3:.2f} ms | {(t['decode'] + t['forward']) * 1e3:.2f} ms |")
    lines += ["",
              f"`python -m jobs.score --input FOLDER --output OUT --model {p['model']} "
              f"--image-size {p['image_size']} --no-embedding` (its defaults otherwise: local Ray, "
              "one actor per core, batch 32). images/s: the job's summary; process tree: peak PSS "
              "of the driver, Ray's services and the actors, sampled every 2 s (the sampling "
              "costs some CPU).", "",
              "| photos | images/s (job) | images/s, steady | first rows back | wall | driver peak "
              "RSS | process tree peak | load |",
              "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        x = p["runs"][str(n)]
        lines.append(f"| {n:,} | **{x['rate']:.1f}** | {_opt(x.get('steady'), '{:.0f}')} | "
                     f"{_opt(x.get('first_row_s'), '{:.0f} s')} | {_duration(x['wall'])} | "
                     f"{_mib(x['driver_peak'])} | {_mib(x['tree_peak'])} | {x['load']} |")
    asked = {int(k): v for k, v in p.get("asked", {}).items() if int(k) != v}
    lines += ["", "(steady and first rows back as in section 2)", ""]
    for n, wanted in asked.items():
        lines.append(f"- {wanted:,} photos would have taken longer than --photo-budget "
                     f"({r.get('photo_budget', 0):.0f} s) at the first run's start-up and rate, so "
                     f"{n:,} were scored: the largest multiple of {sizes[0]:,} that fits")
    lines += [
        f"- {sizes[-1]:,} / {sizes[0]:,} photos: process tree peak **{g['tree_ratio']:.2f}x**, "
        f"driver peak {g['driver_ratio']:.2f}x, images/s {g['rate_ratio']:.2f}x",
        f"- the scores of {p['model']}: {g['big']['distinct_means']:,} distinct "
        f"mean{'' if g['big']['distinct_means'] == 1 else 's'} in the "
        f"first output file of the {sizes[-1]:,}-photo run" + (
            " (a randomly initialised EfficientNet-Lite0's features vanish, ~1e-10, so every "
            "photo gets the same score: the work per photo is the same, its output compresses "
            "to almost nothing, hence the output-size runs below use another model)"
            if g["big"]["distinct_means"] <= 1 else ""),
        f"- output bytes per row: {p['embedding_photos']:,} photos scored twice with "
        f"`{p['output_model']}` into one file each: **{g['row_off']:.0f} without embeddings, "
        f"{g['row_on']:.0f} with** its float16 embeddings ({g['on']['distinct_means']:,} "
        f"distinct means; {g['on']['embedding_zeros']:.0%} of the embedding values zero, after "
        "its ReLU); the "
        f"{sizes[-1]:,}-photo run above wrote {g['row_big']:.0f} bytes per row",
        "",
    ]
    return lines


def _report_ids(r: dict) -> list[str]:
    i = r["ids"]
    n = i["n"]
    return [
        "## 4. Ray Data's checkpointing, for comparison", "",
        "Ray 2.60's `ray.data.checkpoint.CheckpointConfig(id_column, checkpoint_path)` "
        "(`ray/data/checkpoint/interfaces.py`) writes, per block written, a Parquet file of its "
        "ids. On restore (`IdColumnCheckpointManager.load_checkpoint` in "
        "`ray/data/checkpoint/checkpoint_filter.py`) the driver reads every checkpoint file "
        "with `read_parquet`, repartitions them into **one block** of every id, and a task "
        "converts it to a **sorted NumPy array** (`convert_and_sort_checkpointed_ids`: "
        "`to_numpy(zero_copy_only=False)`, an object array of Python strings for string ids) "
        "put in the object store. A pool of 1 to 10 `CheckpointFilter` actors "
        "(`ray/data/_internal/planner/checkpoint/plan_read_op.py`; each reserves max(1 GiB, "
        "1.5 x the array's estimated size) of memory) each `ray.get` the whole array "
        "(`NumpyArrayBasedCheckpointFilter`) and filter every input block by binary search. "
        "So every id restored is held in memory several times: the Arrow block, the pickled "
        "object array in the object store, and one Python copy per filter actor.", "",
        f"Measured: {n:,} ids of {i['length']:.0f} characters (e.g. `{i['example']}`), in a "
        "fresh process, resident set before and after each step:", "",
        "| form | bytes | per id |", "|---|---|---|",
        f"| Arrow string array (`nbytes`; the one block) | {_size(i['arrow_nbytes'])} | "
        f"{i['arrow_nbytes'] / n:.0f} |",
        f"| NumPy object array of Python str (what each filter actor holds; resident set "
        f"rise) | {_size(i['numpy_rss'])} | **{i['numpy_rss'] / n:.0f}** |",
        f"| the same, Ray's own estimate (`_numpy_size`, sets the actors' memory) | "
        f"{_size(i['ray_estimate'])} | {i['ray_estimate'] / n:.0f} |",
        f"| the array pickled (what the object store holds) | {_size(i['pickled'])} | "
        f"{i['pickled'] / n:.0f} |",
        f"| a Python set of them, on top of the strings | {_size(i['set_rss'])} | "
        f"{i['set_rss'] / n:.0f} |",
        "",
        f"- converting to NumPy took {i['to_numpy_s']:.1f} s and sorting {i['sort_s']:.1f} s for "
        f"{n:,} ids (one core); pickling {i['pickle_s']:.1f} s",
        "",
    ]


def _report_projection(r: dict) -> list[str]:
    rows = []
    n1, n2 = PROJECT_TO
    if "s3" in r:
        m = r["s3"]["listing"]
        rate = m["rows"] / m["seconds"]
        rows.append(("listing, S3, at the rate measured on moto (endpoint-bound)",
                     _duration(n1 / rate), _duration(n2 / rate),
                     f"{rate:,.0f} objects/s with {m['ranges']} key ranges on this machine"))
        probes_per_cut = m["probes"] / max(m["ranges"] - 1, 1)
        for tasks in (8, CLUSTER_TASKS):
            rounds = math.ceil(math.log2(tasks))
            probe_s = rounds * probes_per_cut * AWS_LIST_S
            per_task = 1000 / AWS_LIST_S
            rows.append((f"listing, AWS S3, {tasks} key ranges",
                         _duration(probe_s + n1 / (tasks * per_task)),
                         _duration(probe_s + n2 / (tasks * per_task)),
                         f"assumed {AWS_LIST_S} s per request (not measured), so "
                         f"{per_task:,.0f} objects/s per range; ranges listed in parallel; "
                         f"probing: {rounds} rounds x {probes_per_cut:.0f} probes per cut "
                         "(measured per cut)"))
    if "flat" in r:
        m = r["flat"]["listing"]
        rate = m["rows"] / m["seconds"]
        rows.append(("listing, local flat folder (one task)", _duration(n1 / rate),
                     _duration(n2 / rate), f"{rate:,.0f} objects/s measured; a flat folder is "
                     "one task at any cluster size"))
    if "tree" in r:
        m = r["tree"]["listing"]
        rate = m["rows"] / m["seconds"]
        rows.append(("listing, local tree", _duration(n1 / rate), _duration(n2 / rate),
                     f"{rate:,.0f} objects/s measured with {m['stems']} tasks on 2 cores; grows "
                     "with cores as long as the file system keeps up"))
    if "machinery" in r:
        g = _machinery_figures(r)
        base, slope = g["small"]["driver_peak"], max(g["per_object"], 0.0)
        small_n = g["sizes"][0]
        rows.append(("driver peak RSS of jobs.score", _size(base + slope * (n1 - small_n)),
                     _size(base + slope * (n2 - small_n)),
                     f"{_mib(base)} at {small_n:,} + {slope:.0f} bytes per object (measured "
                     f"between {small_n:,} and {g['sizes'][-1]:,}), linear; if the growth is "
                     "instead the rows held in unfinished shards (section 2), it follows how far "
                     "out of order blocks come back, not the library's size"))
        rows.append(("job machinery, one driver (empty objects)", _duration(g["marginal"] * n1),
                     _duration(g["marginal"] * n2),
                     f"{g['marginal'] * 1e3:.3f} ms per object (marginal, measured); "
                     "the driver collects every row, so more nodes do not shorten it"))
        rr = r["machinery"]["rerun"]
        per_shard = rr["seconds"] / max(rr["files_kept"], 1)
        rpf = r["machinery"]["rows_per_file"]
        fixed = rr["wall"] - rr["seconds"]
        rows.append((f"resume with every shard complete ({rpf:,} rows per file)",
                     _duration(fixed + per_shard * n1 / rpf),
                     _duration(fixed + per_shard * n2 / rpf),
                     f"{per_shard * 1e3:.0f} ms per shard measured ({n1 // rpf:,} and "
                     f"{n2 // rpf:,} shards) + {fixed:.0f} s of process and Ray start-up; "
                     "on S3 each check is a few requests more"))
    if "photos" in r:
        g = _photo_figures(r)
        rows.append(("scores output, no embeddings", _size(g["row_off"] * n1),
                     _size(g["row_off"] * n2), f"{g['row_off']:.0f} bytes per row measured"))
        rows.append((f"scores output, {r['photos']['output_model']} embeddings",
                     _size(g["row_on"] * n1),
                     _size(g["row_on"] * n2), f"{g['row_on']:.0f} bytes per row measured"))
    if "ids" in r:
        i = r["ids"]
        per_copy = i["numpy_rss"] / i["n"]
        rows.append(("Ray Data CheckpointConfig restore: ids in each filter actor",
                     _size(per_copy * n1), _size(per_copy * n2),
                     f"{per_copy:.0f} bytes per id measured; 1 to 10 actors hold a copy each"))
        total = (i["arrow_nbytes"] + i["pickled"] + i["numpy_rss"]) / i["n"]
        rows.append(("the same, Arrow block + object-store array + one actor",
                     _size(total * n1), _size(total * n2),
                     f"{total:.0f} bytes per id measured"))
    if not rows:
        return []
    lines = ["## Projection to 10 M and 100 M objects", "",
             "Arithmetic on the figures above; each row says what it assumes. Not measured at "
             "these sizes.", "",
             "| what | 10 M objects | 100 M objects | from |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append("")
    return lines


def _report_summary(r: dict) -> list[str]:
    said = []
    if "machinery" in r:
        g = _machinery_figures(r)
        grow = ("grew by " + f"{g['per_object']:.0f} bytes per object" if g["per_object"] > 50
                else "stayed nearly flat")
        said.append(
            f"The job's driver peak {grow} between {g['sizes'][0]:,} and {g['sizes'][-1]:,} "
            f"objects ({_mib(g['small']['driver_peak'])} to {_mib(g['big']['driver_peak'])}, "
            f"{g['ratio']:.2f}x: within both memory targets), and its own machinery costs "
            f"{g['marginal'] * 1e3:.3f} ms per object at the margin.")
        small = g["small"]
        if small.get("first_row_s") and small.get("steady"):
            said.append(
                f"At {g['sizes'][0]:,} objects the 1 ms per object target is "
                f"{'met' if g['ms_small'] <= 1 else 'not met'} ({g['ms_small']:.3f} ms): "
                f"{small['first_row_s']:.0f} s went from the plan to the first rows back (Ray "
                "Data's pipeline, its worker processes and the actors starting on 2 shared "
                f"cores), while the steady cost was {1e3 / small['steady']:.3f} ms per object; "
                "the fixed start-up, not the per-object cost, is what misses.")
        t = _timeline(g["big"])
        if t is not None:
            said.append(
                f"Over the {g['sizes'][-1]:,}-object run the driver held {_mib(t['plan'])} at "
                f"the plan, {_mib(t['first'])} when the first rows came back, then "
                f"{_mib(t[25])}, {_mib(t[50])} and {_mib(t[75])} at a quarter, half and three "
                f"quarters of the run and {_mib(t['end'])} at the end, with up to "
                f"{g['big'].get('pending') or 0:,} rows waiting in unfinished shards (against "
                f"{g['small'].get('pending') or 0:,} at {g['sizes'][0]:,}): it grew while rows "
                "streamed, and this run cannot tell whether that growth would level off, so the "
                "projection takes it as linear.")
    if "s3" in r:
        s, m, f = r["s3"], r["s3"]["listing"], r["s3"]["find"]
        said.append(
            f"On the S3 endpoint the key-range listing ran at "
            f"{m['rows'] / m['seconds']:,.0f} objects/s against {f['rows'] / f['seconds']:,.0f} "
            f"for the old single-process `find`: its {m['probes']} probes took "
            f"{m['probe_s']:.0f} s of its {m['seconds']:.0f} s, and both are bound by moto, "
            f"one Python process serving every request ({s['requests']['page']:.2f} s a page, "
            f"{s['requests']['probe']:.2f} s a one-key probe), so the ratio says little about "
            "AWS, where the ranges' pages are answered in parallel; the key-range listing's "
            f"driver rose {_mib(m['rise_kib'] * 1024)} against `find`'s "
            f"{_mib(f['rise_kib'] * 1024)}: `find` holds every object's details "
            f"(~{f['rise_kib'] * 1024 / max(f['rows'], 1):,.0f} bytes each), the key-range "
            "listing's driver only the first page, part names and counts.")
    if "flat" in r and "tree" in r:
        a, b = r["flat"]["listing"], r["tree"]["listing"]
        said.append(
            f"Locally, a flat folder lists at {a['rows'] / a['seconds']:,.0f} files/s in one "
            f"task and a tree at {b['rows'] / b['seconds']:,.0f} files/s in {b['stems']} tasks; "
            f"the driver rises {_mib(a['rise_kib'] * 1024)} and {_mib(b['rise_kib'] * 1024)} "
            "while listing, but the one task that lists a flat folder sorts all of its entries "
            "in memory (`_write_local_files` in apm/data/listing.py): the process tree peaked "
            f"{_mib(a['tree_peak'] - b['tree_peak'])} above the tree's listing for "
            f"{a['rows']:,} files.")
    if "photos" in r:
        g = _photo_figures(r)
        said.append(
            f"Real photos score at {g['big']['rate']:.0f} images/s end to end at "
            f"{g['sizes'][-1]:,} against {g['small']['rate']:.0f} at {g['sizes'][0]:,} (the same "
            "fixed start-up spread over more photos; steady "
            f"{_opt(g['big'].get('steady'), '{:.0f}')} and "
            f"{_opt(g['small'].get('steady'), '{:.0f}')} images/s), with the process tree's "
            f"peak {g['tree_ratio']:.2f}x and the driver's {g['driver_ratio']:.2f}x.")
    if "ids" in r:
        i = r["ids"]
        said.append(
            f"Ray Data's checkpoint restore would hold about {i['numpy_rss'] / i['n']:.0f} bytes "
            f"per id in every filter actor, {_size(i['numpy_rss'] / i['n'] * PROJECT_TO[1])} "
            "per actor at 100 M objects; the job's shard files are checked one by one and hold "
            "no per-object state on resume.")
    return ["## What the figures say", "", " ".join(said), ""] if said else []


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = _cli.parser(
        "Measure listing, the scoring job's own machinery and memory at 10^5-10^6 objects, and "
        "project them to 10^7-10^8 (see the module's docstring).",
        "Defaults run in about 40 minutes on 2 cores (a quarter of it uploading to moto, which takes "
        "~5 ms of CPU a PUT)\nand need ~1.2 M inodes and a few GB of disk under --work; --quick "
        "is a smoke run of a few minutes\n(seven job runs of ~30 s of start-up each). Writes --doc (default "
        "docs/benchmark_scale.md).")
    p.add_argument("--work", default="/tmp/bench_scale",
                   help="folder for every file made (default /tmp/bench_scale; removed at the "
                        "end unless --keep)")
    p.add_argument("--keep", action="store_true",
                   help="keep WORK/results.json and the listings made (the photos, files and "
                        "job outputs are removed as each part ends, to bound disk and inodes)")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down sizes for a smoke run: " + ", ".join(f"{k} {v}" for k, v in
                                                                         QUICK.items()))
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"parts to run, of {','.join(PARTS)} (default all)")
    p.add_argument("--s3-objects", type=int, help=f"(a) objects on S3 (default {FULL['s3_objects']})")
    p.add_argument("--upload-threads", type=int, default=32, help="(a) upload threads (default 32)")
    p.add_argument("--flat-files", type=int,
                   help=f"(b) files in the flat folder (default {FULL['flat_files']})")
    p.add_argument("--tree-folders", type=int,
                   help=f"(c) folders of the tree (default {FULL['tree_folders']})")
    p.add_argument("--empty-sizes", help=f"2. empty files per job run (default {FULL['empty_sizes']})")
    p.add_argument("--rows-per-file", type=int,
                   help=f"2., 3. the job's --rows-per-file (default {FULL['rows_per_file']})")
    p.add_argument("--photo-sizes", help=f"3. photos per job run (default {FULL['photo_sizes']})")
    p.add_argument("--photo-budget", type=float, default=900,
                   help="3. most seconds for the largest photo run, estimated at the smaller's "
                        "rate; above it the largest N that fits is scored (default 900)")
    p.add_argument("--models", default="resnet18,efficientnet_lite0",
                   help="3. architectures to pick the cheapest from (default "
                        "resnet18,efficientnet_lite0)")
    p.add_argument("--image-size", type=int, default=32, help="3. crop size (default 32)")
    p.add_argument("--output-model", default="random:resnet18",
                   help="3. the model of the runs with and without embeddings, for the output's "
                        "bytes per row: one whose random outputs vary from photo to photo "
                        "(default random:resnet18)")
    p.add_argument("--pick-photos", type=int, help="3. photos the model is picked on (default 320)")
    p.add_argument("--embedding-photos", type=int,
                   help=f"3. photos scored with and without embeddings (default {FULL['embedding_photos']})")
    p.add_argument("--ids", type=int, help=f"4. string ids held in memory (default {FULL['ids']})")
    p.add_argument("--doc", default="docs/benchmark_scale.md")
    p.add_argument("--from-results", metavar="JSON",
                   help="write --doc from an earlier run's results.json, measuring nothing")
    p.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement
    args = p.parse_args(argv)
    _cli.setup(args)
    if args.measure:
        kind, *rest = args.measure
        fn = {"listing": measure_listing, "find": measure_find,
              "ids": lambda n: measure_ids(int(n))}[kind]
        print("RESULT " + json.dumps(fn(*rest)), flush=True)
        return 0
    if args.from_results:
        r = json.loads(Path(args.from_results).read_text())
        return write_doc(r, args.doc)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = [x for x in args.only.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        _cli.fail(f"--only: unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(work)
    inodes = os.statvfs(work)
    say(f"work folder {work}: {disk.free / 2**30:.0f} GiB and {inodes.f_favail:,} inodes free")
    import moto
    import pyarrow
    import ray
    import s3fs
    import torch

    r = {"command": shlex.join(sys.argv[1:] if argv is None else argv), "machine": machine(),
         "date": dt.date.today().isoformat(), "torch": torch.__version__, "ray": ray.__version__,
         "pyarrow": pyarrow.__version__, "s3fs": s3fs.__version__, "moto": moto.__version__,
         "load_start": load(), "pick_photos": args.pick_photos,
         "photo_budget": args.photo_budget}
    runners = {"s3": part_s3, "flat": part_flat, "tree": part_tree, "machinery": part_machinery,
               "photos": part_photos, "ids": part_ids}
    try:
        for part in PARTS:
            if part in parts:
                runners[part](args, work, r)
                (work / "results.json").write_text(json.dumps(r, indent=1))
    finally:
        if not args.keep:
            remove(work)
    r["total_s"] = time.perf_counter() - _T0
    r["load_end"] = load()
    if args.keep:
        (work / "results.json").write_text(json.dumps(r, indent=1))
    return write_doc(r, args.doc)


def write_doc(r: dict, doc: str) -> int:
    lines = report(r)
    os.makedirs(os.path.dirname(doc) or ".", exist_ok=True)
    Path(doc).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
