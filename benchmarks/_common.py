"""What the benchmarks share: the machine line, where the real AVA labels are, test photos, and
running ``python -m jobs.score`` with its memory measured (the job's driver process alone, and its
whole process tree)."""
from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

#: The project's root (what a job started by :func:`run_score_job` imports ``jobs`` from).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The real AVA labels beside the project (``../shared/data/ava``), when present.
REAL_AVA = PROJECT_ROOT.parent / "shared" / "data" / "ava" / "AVA_dataset"

AVA_SIZE = (500, 375)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: Path | None = None, extra_env: dict[str, str] | None = None,
               ) -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server on 127.0.0.1 (its output into ``log``, else dropped), once it
    answers: the object store of the test suite and of the benchmarks."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError as err:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {proc.returncode}") from err
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start within 60 s")


def write_doc(doc: str, lines: list[str]) -> None:
    """Write a benchmark's report to ``doc`` (docs/...) and print it."""
    Path(doc).parent.mkdir(parents=True, exist_ok=True)
    Path(doc).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.platform()}"


# --- photos ---------------------------------------------------------------------------------

def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 500x375 JPEGs: random crops, scales and flips of real photos."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(a) for a in load_sample_images().images]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        scale = rng.uniform(0.6, 1.0)
        w, h = int(src.width * scale), int(src.width * scale * 0.75)
        h = min(h, src.height)
        left, top = rng.integers(0, src.width - w + 1), rng.integers(0, src.height - h + 1)
        photo = src.crop((left, top, left + w, top + h)).resize(AVA_SIZE, Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i:06d}.jpg"
        photo.save(path, quality=int(rng.integers(80, 96)))
        paths.append(path)
    return paths


# --- memory ---------------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_pss(root: int) -> int:
    """Bytes of proportional set size of ``root`` and all its descendants (shared pages split)."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


#: Seconds between memory samples; a sample costs ~0.1 s of CPU on this machine.
MEMORY_SAMPLE_S = 2.0


# --- running the scoring job ----------------------------------------------------------------

#: ``python -c`` of the job's driver: ``jobs.score.main``, then the driver's own peak resident
#: set, printed before Ray shuts down: VmHWM of /proc/self/status, this process alone (Ray's
#: processes are its children and not counted). Not ``ru_maxrss``: Linux carries the peak of the
#: process that forked it across ``exec``, so a child of a large parent reports the parent's.
_DRIVER = ("import sys\n"
           f"sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
           "from jobs.score import main\n"
           "rc = main(sys.argv[1:])\n"
           "hwm = next(line.split()[1] for line in open('/proc/self/status')\n"
           "           if line.startswith('VmHWM:'))\n"
           "print(f'driver peak RSS: {hwm} KiB', flush=True)\n"
           "sys.exit(rc)\n")


class ProcessRun(NamedTuple):
    """One measured process: exit status, wall seconds, peak PSS of its process tree (bytes; 0
    when not sampled), its output (stdout and stderr), and its own resident set over time
    ``(time.time(), bytes)``, every :data:`MEMORY_SAMPLE_S`."""

    returncode: int
    wall: float
    tree_peak: int
    output: str
    rss: list[tuple[float, int]]


def _rss(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def run_process(command: list[str], sample_memory: bool = False,
                echo: Callable[[str], None] | None = None, **popen) -> ProcessRun:
    """Run ``command``; its own resident set every :data:`MEMORY_SAMPLE_S` (cheap), and with
    ``sample_memory`` its process tree's PSS too (that costs CPU: leave it off for timings);
    ``echo`` is called with each line of its output as it comes (progress)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)
    peak, rss = [0], []

    def sample() -> None:
        while proc.poll() is None:
            now = _rss(proc.pid)
            if now is not None:
                rss.append((time.time(), now))
            if sample_memory:
                peak[0] = max(peak[0], tree_pss(proc.pid))
            time.sleep(MEMORY_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if echo is not None:
            echo(line.rstrip("\n"))
    proc.wait()
    sampler.join()
    return ProcessRun(proc.returncode, time.perf_counter() - start, peak[0], "".join(lines), rss)


class JobRun(NamedTuple):
    """One ``jobs.score`` process: wall seconds, peak PSS of its process tree (0 when not
    sampled), the driver's own peak RSS (bytes), its output, the driver's resident set over
    time (see :class:`ProcessRun`)."""

    wall: float
    tree_peak: int
    driver_peak: int
    output: str
    driver_rss: list[tuple[float, int]]


def run_score_job(argv: list[str], sample_memory: bool = False,
                  echo: Callable[[str], None] | None = None) -> JobRun:
    """Run ``jobs.score ARGV`` in a fresh Python process (see :func:`run_process`); the
    driver's peak RSS is its own, without Ray's processes."""
    run = run_process([sys.executable, "-c", _DRIVER, *argv], sample_memory, echo)
    if run.returncode:
        raise RuntimeError(f"jobs.score failed ({run.returncode}):\n{run.output[-3000:]}")
    match = re.search(r"^driver peak RSS: (\d+) KiB$", run.output, re.M)
    return JobRun(run.wall, run.tree_peak, int(match.group(1)) * 1024 if match else 0, run.output,
                  run.rss)


def run_job(argv: list[str], sample_memory: bool = False) -> tuple[float, int, str]:
    """Run ``python -m jobs.score ARGV``; wall seconds, peak tree PSS (bytes, 0 when not
    sampled), its output."""
    run = run_score_job(argv, sample_memory)
    return run.wall, run.tree_peak, run.output


def job_summary(output: str) -> dict:
    """Figures of a ``jobs.score`` summary: rows, ok, errors, seconds, rate, listing."""
    scored = re.search(r"^scored now: (\d+) = (\d+) ok \+ (\d+) error in ([\d.]+) s "
                       r"\(([\d.]+) images/s\)", output, re.M)
    listed = re.search(r"^listing: (\d+) objects in (\d+) parts \((reused|listed in ([\d.]+) s)\)",
                       output, re.M)
    kept = re.search(r"^kept from an earlier run: (\d+) files, (\d+) rows", output, re.M)
    plan = re.search(r"INFO (\d+) shards of up to \d+ rows: (\d+) complete", output)
    if not scored or not listed:
        raise RuntimeError(f"no summary in the job's output:\n{output[-3000:]}")
    return {"rows": int(scored.group(1)), "ok": int(scored.group(2)),
            "errors": int(scored.group(3)), "seconds": float(scored.group(4)),
            "rate": float(scored.group(5)), "listed": int(listed.group(1)),
            "listing_s": float(listed.group(4)) if listed.group(4) else None,
            "files_kept": int(kept.group(1)) if kept else 0,
            "shards": int(plan.group(1)) if plan else None}


def job_rate(output: str) -> float:
    """images/s from the job's summary line (listing, actor start-up and writing included)."""
    match = re.search(r"scored now: .* \(([\d.]+) images/s\)", output)
    if not match:
        raise RuntimeError(f"no summary in the job's output:\n{output[-2000:]}")
    return float(match.group(1))
