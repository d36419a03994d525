"""How much a job prints, in the driver and in every Ray worker.

By default a job prints its own log lines (``apm``, ``pfagan``, ``jobs`` at ``--log-level``,
INFO unless told) and third-party libraries (Ray, Ray Data, Ray Train, boto, fsspec, torch,
Pillow, ...) only from WARNING up, in the driver and, through a ``worker_process_setup_hook``
in the job's runtime env, in Ray's worker processes. Ray Data's progress bars are kept in a
terminal (stderr is a TTY) and turned off elsewhere (CI, ``ray job submit``, a file), also for
the datasets that Ray Train's split coordinators run, since a Dataset keeps the DataContext
it was created with. ``--verbose`` leaves everything at ``--log-level`` and Ray's own output
as Ray makes it.

:func:`configure` is called once by every job's command line (``jobs._cli.setup``);
:func:`apm.core.runtime.init_ray` then sets up Ray Data (:func:`configure_data_context`) and adds
:func:`runtime_env_additions` to the job's runtime env. Ray Train's own console is set by
``RunConfig(logging_config=...)`` only: :func:`train_logging_config`.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass

#: Our own loggers: at ``--log-level`` in every mode (``__main__``: a job run as ``python -m``).
PROJECT_LOGGERS: tuple[str, ...] = ("apm", "pfagan", "jobs", "__main__")

#: Libraries whose INFO lines a job does not print without ``--verbose``. Ray's loggers do not
#: propagate to the root logger (they have handlers of their own), so they are named here;
#: the root logger's WARNING covers any other library.
THIRD_PARTY_LOGGERS: tuple[str, ...] = (
    "ray", "ray.data", "ray.train", "ray.tune", "ray.serve",
    "urllib3", "botocore", "boto3", "s3transfer", "aiobotocore", "s3fs", "fsspec", "filelock",
    "torch", "torchvision", "timm", "PIL", "matplotlib", "numba", "asyncio", "h5py",
)

#: Where Ray Data notes that progress bars are off (which they are on purpose here) and which
#: progress it picked; its children (the bars' own warnings) are not concerned.
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
#: Ray Data sets up its ``ray.data`` logger from this variable when it is imported, and again
#: in a worker for every dataset it runs there (the split coordinators' "Starting execution
#: of Dataset ..."), whatever level was set on the logger before.
RAY_DATA_LOG_LEVEL = "RAY_DATA_LOG_LEVEL"

#: Ray Train's PlacementGroupCleaner polls the controller's state through the state API every
#: second and warns on each failure; a local Ray started without the dashboard has no state
#: API at all (see :func:`apm.core.runtime.init_ray`), so there the warning says nothing.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"

#: Ray modules whose logger is named after their file rather than their module, so that it is
#: no child of ``ray.train`` and reaches the root logger, which Ray Train sets to INFO in its
#: workers ("Reporting training result 1: TrainingReport(...)" on every report of every rank).
RAY_FILE_LOGGERS: tuple[str, ...] = ("train/v2/_internal/execution/context.py",
                                     "train/collective/collectives.py")

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"

# What travels to the workers (plain settings, never a credential).
ENV_LOG_LEVEL = "APM_LOG_LEVEL"
ENV_VERBOSE = "APM_VERBOSE"
ENV_NO_STATE_API = "APM_RAY_NO_STATE_API"
#: The runtime env's ``worker_process_setup_hook``: every Ray worker runs it at start.
WORKER_SETUP_HOOK = "apm.core.progress.setup_worker"


class _Below(logging.Filter):
    """Drops a logger's own records under ``level`` (a logger's filters do not see the records
    of its children, unlike its level)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


_PROGRESS_NOTICES = _Below(logging.ERROR)


@dataclass(frozen=True)
class Output:
    """What a job prints: ``log_level`` for our loggers; ``verbose``: everything at it."""

    log_level: str = "INFO"
    verbose: bool = False

    @property
    def third_party_level(self) -> int:
        """Where third-party loggers start: WARNING, or ``log_level`` if that is higher."""
        return max(logging.WARNING, logging.getLevelName(self.log_level))


_configured: Output | None = None


def configure(log_level: str = "INFO", verbose: bool = False) -> Output:
    """Set up this process's logging for a job's command line and remember the choice for
    :func:`apm.core.runtime.init_ray` (which hands it to Ray's workers)."""
    global _configured
    _configured = Output(log_level=log_level.upper(), verbose=verbose)
    root_level = _configured.log_level if verbose else _configured.third_party_level
    if not verbose:  # before Ray Data is imported, if it is not yet; a user's value stays
        os.environ.setdefault(RAY_DATA_LOG_LEVEL,
                              logging.getLevelName(_configured.third_party_level))
    # A no-op where the root logger already has handlers (pytest, an embedding application).
    logging.basicConfig(level=root_level, format=LOG_FORMAT, stream=sys.stderr)
    apply_levels(_configured)
    return _configured


def configured() -> Output | None:
    """The choice made by :func:`configure`, or None where no job's command line ran."""
    return _configured


def apply_levels(output: Output, *, state_api: bool = True) -> None:
    """Our loggers at ``output.log_level``; without ``verbose``, third-party ones from
    WARNING up (in verbose mode they are left as their libraries set them)."""
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(output.log_level)
    notices = logging.getLogger(RAY_DATA_PROGRESS_LOGGER)
    if output.verbose:
        notices.removeFilter(_PROGRESS_NOTICES)
        return
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(output.third_party_level)
    if _PROGRESS_NOTICES not in notices.filters:
        notices.addFilter(_PROGRESS_NOTICES)
    if not state_api:
        logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "__file__", None):
        for path in RAY_FILE_LOGGERS:
            name = os.path.join(os.path.dirname(ray.__file__), *path.split("/"))
            logging.getLogger(name).setLevel(output.third_party_level)


def train_logging_config():
    """``ray.train.RunConfig(logging_config=...)`` for a training run. Ray Train sets up the
    console of its controller and workers itself (``ray.train`` at DEBUG into its log files,
    the console from this level: "Started training worker group ...", "Reporting training
    result ..."), after any setting of ours, so only the RunConfig reaches it. Without
    ``--verbose`` that is WARNING; Ray Train's log files under the session still get all."""
    import ray.train

    output = _configured
    if output is None:
        level = "INFO"  # Ray Train's default
    elif output.verbose:
        level = output.log_level
    else:
        level = logging.getLevelName(output.third_party_level)
    return ray.train.LoggingConfig(log_level=level)


def progress_bars_wanted(output: Output | None) -> bool:
    """Ray Data's progress bars: in a terminal, or wherever ``--verbose`` asks for Ray's own
    output (Ray then logs its progress periodically where there is no terminal)."""
    if output is None or output.verbose:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def configure_data_context(output: Output | None) -> None:
    """Turn Ray Data's progress bars and its periodic non-TTY progress log off where
    :func:`progress_bars_wanted` says no. Datasets copy the current DataContext when they are
    created, and carry it to the actors that run them (Ray Train's split coordinators), so
    this runs before any dataset exists."""
    if progress_bars_wanted(output):
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    # Without enable_progress_bars Ray Data uses no progress manager at all: neither tqdm
    # bars nor the "Running Dataset ..." blocks it logs every 10 s when stdout is no TTY.
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False


def worker_env(output: Output | None, *, local: bool) -> dict[str, str]:
    """Environment variables for the job's runtime env (settings only, never a credential):
    what :func:`setup_worker` needs, and Ray's own switches with the same effect.

    ``local``: a Ray started by this driver, with no dashboard, hence no state API.
    """
    ray_switches: dict[str, str] = {}
    if local:
        # A one-node Ray that lives as long as this driver is never drained for preemption;
        # Ray Train's PreemptionWatcher would be an idle actor process (whose creation also
        # logs core_worker.cc's "constructor arguments in the object store" error).
        ray_switches["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    if output is not None and not output.verbose:
        ray_switches[RAY_DATA_LOG_LEVEL] = logging.getLevelName(output.third_party_level)
    # A switch the user exported keeps its value, on a cluster's workers too.
    env = {k: os.environ.get(k, v) for k, v in ray_switches.items()}
    if output is not None:
        env[ENV_LOG_LEVEL] = output.log_level
        env[ENV_VERBOSE] = "1" if output.verbose else "0"
        if local:
            env[ENV_NO_STATE_API] = "1"
    return env


def runtime_env_additions(output: Output | None, *, local: bool) -> dict:
    """What :func:`apm.core.runtime.init_ray` adds to the job's runtime env: the worker hook (only
    where a job's command line chose the output) and :func:`worker_env`."""
    additions: dict = {"env_vars": worker_env(output, local=local)}
    if output is not None:
        additions["worker_process_setup_hook"] = WORKER_SETUP_HOOK
    return additions


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: the driver's choice of output in this worker.

    Never raises: a hook that fails makes Ray end the worker.
    """
    try:
        output = Output(log_level=os.environ.get(ENV_LOG_LEVEL, "INFO").upper(),
                        verbose=os.environ.get(ENV_VERBOSE) == "1")
        root = logging.getLogger()
        if not root.handlers:  # our own lines in a worker: as in the driver
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
        root.setLevel(output.log_level if output.verbose else output.third_party_level)
        apply_levels(output, state_api=os.environ.get(ENV_NO_STATE_API) != "1")
        if not output.verbose:
            # Ray Train's DataConfig sets this deprecated option itself, in every
            # DatasetManager; nothing a job could change.
            warnings.filterwarnings("ignore", r"`ExecutionOptions\.exclude_resources` is deprecated")
        _pin_state_api_to_own_cluster()
    except Exception as err:  # noqa: BLE001 - the worker must start anyway
        print(f"apm.core.progress.setup_worker: {type(err).__name__}: {err}", file=sys.stderr)


def _pin_state_api_to_own_cluster() -> None:
    """Ray's state API client (Ray Train's PlacementGroupCleaner polls it) finds the cluster
    from ``RAY_ADDRESS``, else by looking for Ray processes on the machine, and fails ("Found
    multiple active Ray instances", a traceback that ends the cleaner's thread) where another
    Ray runs there too (CI, a second job). A worker knows its own cluster."""
    if os.environ.get("RAY_ADDRESS"):
        return
    import ray

    if ray.is_initialized():
        address = ray.get_runtime_context().gcs_address
        if address:
            os.environ["RAY_ADDRESS"] = address
