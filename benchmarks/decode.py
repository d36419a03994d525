"""python -m benchmarks.decode: one scoring actor's peak memory on the strip PNG.

A PNG of a few hundred bytes and 400000 x 1 pixels used to be resized whole, to 102,400,000 x
256 pixels at the default crop (224 of 256), and killed the actor. This measures what one
scoring actor's work costs now: the actor's model (:class:`apm.stages.scoring.ScorePredictor`,
``--model`` at ``--image-size``) is built, then one photo is decoded, cropped
(:meth:`apm.models.transforms.ImageTransform.crop_decoded`, as the job's actors do) and scored, for

* (a) a normal photo: a 500 x 375 JPEG (AVA's size) of scikit-learn's sample photos;
* (b) the 400000 x 1 strip PNG with ``--max-aspect`` raised to 1e6, so that it is decoded;
* (c) the same strip at the default limits, refused (an error row naming --max-aspect).

Each case runs in a fresh Python process (``--measure CASE``), so that their peaks do not
mix: the process's peak resident set over its life (imports and the model included, what the
actor costs the machine), and how far the decode-crop-score step alone rose above the loaded
actor (Linux's peak, reset through ``/proc/self/clear_refs`` once the model is loaded).

Writes docs/benchmark_decode.md with the command, the machine and the date.
"""
from __future__ import annotations

import datetime as dt
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from apm.data.decode import DecodeError, ImageLimits
from benchmarks._common import machine, write_doc
from benchmarks.score import make_photos
from jobs import _cli

#: case -> (what it is, the limits its actor decodes with)
CASES = {
    "normal": ("(a) normal photo, 500 x 375 JPEG", ImageLimits()),
    "strip-allowed": ("(b) 400000 x 1 strip PNG, --max-aspect 1e6", ImageLimits(max_aspect=1e6)),
    "strip-default": ("(c) 400000 x 1 strip PNG, default limits", ImageLimits()),
}
STRIP = (400_000, 1)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(case: str, photo: Path, model: str, image_size: int) -> dict:
    """Build the actor's predictor in this process, then decode, crop and score ``photo``."""
    from apm.stages.scoring import ScorePredictor  # torch and the model only in the measuring process

    predictor = ScorePredictor(model, image_size, True, "cpu", {})
    data = photo.read_bytes()
    loaded = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the loaded actor
    start = time.perf_counter()
    try:
        crop, width, height = predictor.transform.crop_decoded(data, CASES[case][1])
        error, kind = "", ""
    except DecodeError as err:  # what the job's actors turn into an error row
        crop, width, height = np.zeros((image_size, image_size, 3), np.uint8), 0, 0
        error, kind = str(err), "permanent"
    out = predictor({"row": np.zeros(1, np.int64), "error": np.array([error], object),
                     "error_kind": np.array([kind], object), "crop": crop[None],
                     "width": np.array([width], np.int32), "height": np.array([height], np.int32)})
    seconds = time.perf_counter() - start
    return {"case": case, "bytes": len(data), "error": error,
            "resize_size": predictor.transform.resize_size,
            "mean": None if error else float(out["mean"][0]),
            "seconds": seconds, "loaded_kib": loaded,
            "step_peak_kib": _status_kib("VmHWM") - loaded,
            "process_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run_case(case: str, photo: Path, model: str, image_size: int) -> dict:
    """:func:`measure` in a fresh Python process; its figures."""
    argv = [sys.executable, "-m", "benchmarks.decode", "--measure", case, "--photo",
            str(photo), "--model", model, "--image-size", str(image_size), "--log-level", "WARNING"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict], args, photos: dict[str, Path]) -> list[str]:
    normal, strip = results["normal"], results["strip-allowed"]
    ratio = strip["process_peak_kib"] / normal["process_peak_kib"]
    step_ratio = strip["step_peak_kib"] / normal["step_peak_kib"]
    rows = []
    for case, r in results.items():
        outcome = f"error row: `{r['error']}`" if r["error"] else f"scored (mean {r['mean']:.3f})"
        rows.append(f"| {CASES[case][0]} | {r['bytes']:,} | {outcome} | "
                    f"**{r['process_peak_kib'] / 1024:.0f} MiB** | {r['loaded_kib'] / 1024:.0f} MiB "
                    f"| {r['step_peak_kib'] / 1024:.1f} MiB | {r['seconds'] * 1e3:.0f} ms |")
    width, height = STRIP
    short = strip["resize_size"]  # the short side before the crop (256 for 224)
    long = round(width * short / height)
    old = long * short * 4
    return [
        "# One scoring actor's memory on the strip PNG",
        "",
        f"- command: `python -m benchmarks.decode {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}",
        f"- the actor: `apm.stages.scoring.ScorePredictor` of `{args.model}` at {args.image_size} px on "
        "the CPU, built as an actor builds it (batch norm folded), then one photo read, decoded "
        "and cropped by `ImageTransform.crop_decoded` (what the job's actors call) and scored in "
        "a batch of one; each case in a fresh Python process",
        f"- photos: {photos['normal'].name} (500 x 375 JPEG, a crop of scikit-learn's sample "
        f"photos) and a {width} x {height} PNG of one colour ({photos['strip'].stat().st_size} "
        "bytes)",
        "",
        "| case | bytes | outcome | process peak RSS | RSS, model loaded | decode-crop-score "
        "step above it | step time, a fresh actor's first batch |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "- process peak RSS: `ru_maxrss` of the measuring process over its life (imports, the "
        "model and the step): what one actor costs the machine",
        "- the step above the loaded model: Linux's peak resident set, reset through "
        "`/proc/self/clear_refs` once the model is loaded, minus the resident set then",
        f"- strip (b) / normal photo (a), process peak: **{ratio:.2f}x** (target ≤ 2x: "
        f"{'met' if ratio <= 2 else 'NOT met'}); the step alone: {step_ratio:.2f}x",
        f"- before: the strip was resized whole, to {long:,} x {short} pixels "
        f"({old / 2**30:.0f} GiB at Pillow's 4 bytes a pixel) before the "
        "crop, more than this machine's memory; now only the crop's box is resized, and by "
        "default --max-aspect 20 refuses the strip from its header, before any pixel is decoded",
    ]


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("Measure one scoring actor's peak memory on the 400000 x 1 strip PNG "
                    "against a normal photo.")
    p.add_argument("--model", default="random:efficientnet_lite0",
                   help="model spec (default random:efficientnet_lite0)")
    p.add_argument("--image-size", type=int, default=224, help="crop size (default 224)")
    p.add_argument("--doc", default="docs/benchmark_decode.md", help="report to write")
    p.add_argument("--measure", choices=sorted(CASES), metavar="CASE",
                   help="run one case in this process and print its figures as JSON (what each "
                        "fresh process of the benchmark runs); needs --photo")
    p.add_argument("--photo", type=Path, help="the photo of --measure")
    args = p.parse_args(argv)
    _cli.setup(args)
    if args.measure:
        if not args.photo:
            _cli.fail("--measure needs --photo")
        print(json.dumps(measure(args.measure, args.photo, args.model, args.image_size)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        photos = {"normal": make_photos(Path(tmp), 1)[0], "strip": Path(tmp) / "strip.png"}
        Image.new("RGB", STRIP, (200, 40, 40)).save(photos["strip"])
        results = {case: run_case(case, photos["normal" if case == "normal" else "strip"],
                                  args.model, args.image_size) for case in CASES}
        lines = report(results, args, photos)
    write_doc(args.doc, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
