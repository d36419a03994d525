"""Run folders (``STORAGE/NAME``): what a run was started with, and whether a rerun continues it.

Rerunning a run name resumes it from its latest checkpoint. That is right for a longer run or
one restarted on other machines, but a rerun with another loss, learning rate, backbone or data
would silently continue weights trained for something else; so the driver records the run's
settings in ``NAME/run.json`` and refuses, before training, a rerun that asks for others.
"""
from __future__ import annotations

import json

from apm.core import storage
from apm.training.loop import STATE_FILE

RUN_FILE = "run.json"

#: Settings a rerun may change and still continue the run: its length and its resources
#: (and the tests' fault injection).
CONTINUABLE = frozenset({"epochs", "num_workers", "use_gpu", "cpus_per_worker",
                         "fail_marker", "fail_at_step"})


class RunMismatchError(ValueError):
    """A rerun of a run name asks for other settings than the run was started with."""


def run_uri(storage_uri: str, name: str) -> str:
    return storage.join(storage_uri, name)


def has_checkpoint(run: str) -> bool:
    """Whether the run folder holds a checkpoint, i.e. a rerun would resume rather than start."""
    return any(f.uri.endswith("/" + STATE_FILE) for f in storage.list_files(run))


def _pairs(settings: dict, keys: list[str]) -> str:
    return ", ".join(f"{key}={settings.get(key)}" for key in keys)


def prepare_run(storage_uri: str, name: str, settings: dict, force: bool = False) -> None:
    """Before training: with ``force`` remove the run's folder (checkpoints and all), so it
    starts over; else refuse (RunMismatchError naming the fields) to resume a run that was
    started with other ``settings``. Records ``settings`` (JSON values) for the next rerun;
    fields in CONTINUABLE are neither compared nor recorded."""
    run = run_uri(storage_uri, name)
    # Through JSON, so that the comparison sees what the file will hold (tuples as lists, ...).
    wanted = json.loads(json.dumps({k: v for k, v in settings.items() if k not in CONTINUABLE}))
    if force:
        storage.remove(run, recursive=True)
    elif has_checkpoint(run) and storage.exists(storage.join(run, RUN_FILE)):
        started = json.loads(storage.read_text(storage.join(run, RUN_FILE)))
        changed = sorted(key for key in wanted if key in started and started[key] != wanted[key])
        if changed:
            raise RunMismatchError(
                f"run {name} was started with {_pairs(started, changed)}; this run asks "
                f"{_pairs(wanted, changed)}; use --force to start over, or another --name")
    storage.write_text(storage.join(run, RUN_FILE), json.dumps(wanted, indent=1, sort_keys=True))
