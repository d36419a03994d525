"""Batch inference over photos with Ray Data: the one pipeline of the teacher, evaluation and scoring.

Photos are read (all of a batch's reads at once, so that a far store's latency is paid per
batch, not per photo) and decoded (:func:`decode_batch`) into small uint8 crops for a pool of
actors that each load their model once (Ray's batch-inference pattern: a callable class,
``__call__`` on a dict of numpy arrays). With GPUs, decoding runs in a bounded pool of CPU tasks that feeds
one actor per GPU; on CPUs Ray Data fuses decoding into the actors (same resources), which
saves a copy through the object store. A photo that is missing, unreadable, too large or not an
image keeps its row with the reason in ``error``; it never stops the job.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa

from apm.core import storage
from apm.core.rows import (
    KIND_PERMANENT,
    KIND_TRANSIENT,
    NO_ERROR,
    TASK_RETRIES,
    WORKER_DIED,
    retrying_task_args,
)
from apm.data.decode import DEFAULT_LIMITS, DecodeError, ImageLimits
from apm.data.row_bytes import RowBytes

if TYPE_CHECKING:  # torch stays out of processes that only list objects
    from apm.models.transforms import ImageTransform

log = logging.getLogger(__name__)

#: Most rows per input block: the unit of work an actor takes at a time.
ROWS_PER_BLOCK = 256


#: The size of an inference actor pool: a fixed number of actors, or ``(min, max)`` for a pool
#: that grows while work is queued and the cluster has room (max None: no cap but the
#: cluster's; as Ray Data's own ``concurrency``).
PoolSize = int | tuple[int, int | None]


def default_concurrency(device: str, max_actors: int | None = None) -> PoolSize:
    """The pool when no size is asked for: elastic, from one actor up to ``max_actors`` (None:
    as many as the cluster holds, one per GPU on 'cuda', else one per CPU). On an autoscaling
    cluster the pool grows onto nodes as they join: Ray Data adds actors while they are busy
    and the cluster has free resources, and asks the autoscaler for more."""
    return (1, max_actors)


def _actors_planned(concurrency: PoolSize, device: str) -> int:
    """How many actors a pool will have for planning work, without waiting for nodes."""
    import ray

    if isinstance(concurrency, int):
        return concurrency
    low, high = concurrency
    here = int(ray.cluster_resources().get("GPU" if device == "cuda" else "CPU", 1))
    return max(low, min(high or here, here), 1)


def _pool(concurrency: PoolSize, isolated: bool):
    import ray

    # Isolated: one task at a time per actor, so that an actor's death fails no other photo.
    in_flight = 1 if isolated else None
    if isinstance(concurrency, int):
        return ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=in_flight)
    low, high = concurrency
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                      max_tasks_in_flight_per_actor=in_flight)


def decode_batch(batch: dict[str, np.ndarray], transform: ImageTransform,
                 storage_env: dict[str, str], limits: ImageLimits = DEFAULT_LIMITS,
                 isolated: bool = False) -> dict[str, np.ndarray]:
    """Read each photo (:class:`apm.data.row_bytes.RowBytes`: loose objects all at once, the
    members of a shard or rows of a Parquet file in one read) and decode it into a uint8 crop;
    a fault of the photo becomes ``error``.

    Also returns each photo's stored ``width`` and ``height`` (0 where it failed) and its
    ``error_kind``. A fault of the store (:class:`apm.core.storage.TransientStorageError`, after
    botocore's retries) fails the whole task so that Ray retries it later, unless the batch is
    ``isolated`` (one photo, the last attempt): then it is an error row of kind 'transient'.
    A row whose ``error`` is already set (known bad) is not read.
    """
    storage.apply_env(storage_env)
    size = transform.crop_size
    n = len(batch["uri"])
    crops = np.zeros((n, size, size, 3), dtype=np.uint8)
    width, height = np.zeros(n, np.int32), np.zeros(n, np.int32)
    known = batch.get("error")
    row_bytes = RowBytes(batch, limits)  # a loose object, a tar member or a Parquet row
    errors, kinds = [], []
    for i in range(n):
        kind = KIND_PERMANENT
        try:
            if known is not None and known[i]:
                raise DecodeError(str(known[i]))
            data = row_bytes(i)
            crops[i], width[i], height[i] = transform.crop_decoded(data, limits)
            errors.append(NO_ERROR)
            kinds.append(NO_ERROR)
            continue
        except storage.TransientStorageError as err:
            if not isolated:
                raise
            error, kind = f"storage fault after retries: {err}", KIND_TRANSIENT
        except FileNotFoundError:
            error = "not found"
        except DecodeError as err:  # its message says why
            error = str(err)
        except Exception as err:  # noqa: BLE001 - one bad photo must not stop the job
            error = f"{type(err).__name__}: {err}"
        errors.append(error)
        kinds.append(kind)
    return {"row": batch["row"], "error": np.array(errors, dtype=object),
            "error_kind": np.array(kinds, dtype=object), "crop": crops,
            "width": width, "height": height}


class _PoolActor:
    """An inference actor: the predictor, and on CPUs the decoding of its own photos (no copy
    of the crops through the object store; composed here rather than left to Ray Data's
    operator fusion, which fuses only operators with equal remote args, and the actors need
    their own). Each actor enters itself in its pass's :class:`_ActorRoll`."""

    def __init__(self, predictor: type, predictor_kwargs: dict, decode_kwargs: dict | None,
                 roll) -> None:
        import ray

        roll.enter.remote(ray.get_runtime_context().current_actor)
        self.predict = predictor(**predictor_kwargs)
        self.decode_kwargs = decode_kwargs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decode_kwargs is not None:
            batch = decode_batch(batch, **self.decode_kwargs)
        return self.predict(batch)


class _ActorRoll:
    """The actors of one pass (a Ray actor without resources), so that the driver ends them
    when the pass is over. Ray Data ends its actors by dropping their handles, and an actor
    that died and was restarted can outlive its pool that way (seen here: held until a
    garbage collection, or for good), keeping its CPU or GPU from the next pass: on a cluster
    the size of the pool, a deadlock."""

    def __init__(self) -> None:
        self.actors: list = []

    def enter(self, actor) -> None:
        self.actors.append(actor)

    def take(self) -> list:
        actors, self.actors = self.actors, []
        return actors


class RowSource(Protocol):
    """Where the photos of a job are listed: row positions in, a Ray dataset of their ``row``,
    ``uri`` and optionally ``size`` (bytes, checked against the limits before reading) and
    ``error`` (known bad: not read) out, one block per ``per_block`` rows."""

    def dataset(self, rows: np.ndarray, per_block: int): ...


class TableRows:
    """Photos listed in a table held by the driver: row ``i`` is the table's row ``i``."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def dataset(self, rows: np.ndarray, per_block: int):
        picked = pa.array(rows, pa.int64())
        columns = {"row": picked}
        for name in ("uri", "size", "error"):
            if name in self.table.column_names:
                columns[name] = self.table.column(name).take(picked)
        return _blocks(pa.table(columns), per_block)


def _blocks(table: pa.Table, per_block: int):
    import ray

    return ray.data.from_arrow([table.slice(i, per_block)
                                for i in range(0, table.num_rows, per_block)])


def _dataset(dataset, roll, transform: ImageTransform,
             predictor: type, predictor_kwargs: dict, *, batch_size: int,
             concurrency: PoolSize, device: str, limits: ImageLimits,
             decode_concurrency: int | None, isolated: bool, task_retries: int):
    import ray

    env = storage.ray_env_vars()
    if isolated:  # Ray Data bundles blocks up to batch_size rows into one task
        batch_size = 1
    decode_kwargs = {"transform": transform, "storage_env": env, "limits": limits,
                     "isolated": isolated}
    predictor_kwargs = {**predictor_kwargs, "device": device, "storage_env": env}
    if device == "cuda":  # a pool of CPU tasks decodes for one actor per GPU
        dataset = dataset.map_batches(
            decode_batch, batch_size=batch_size, batch_format="numpy", fn_kwargs=decode_kwargs,
            compute=ray.data.TaskPoolStrategy(size=decode_concurrency) if decode_concurrency
            else None, udf_modifying_row_count=False, **retrying_task_args(task_retries))
        decode_kwargs = None
    return dataset.map_batches(
        _PoolActor, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"predictor": predictor, "predictor_kwargs": predictor_kwargs,
                               "decode_kwargs": decode_kwargs, "roll": roll},
        compute=_pool(concurrency, isolated),
        num_gpus=1 if device == "cuda" else None, udf_modifying_row_count=False,
        # Actors are restarted as often as needed; each of their tasks is retried task_retries
        # times (Ray Data's default retries a task whose actor died without end).
        max_restarts=-1, max_task_retries=task_retries)


@contextlib.contextmanager
def _tolerant_execution():
    """Let Ray Data drop blocks whose tasks failed for good (their rows are retried one by one)
    instead of failing the job, and retry actor tasks that hit a store fault."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.actor_task_retry_on_errors
    context.max_errored_blocks = -1
    context.actor_task_retry_on_errors = [storage.TransientStorageError]
    try:
        yield
    finally:
        context.max_errored_blocks, context.actor_task_retry_on_errors = saved


def predict_rows(inputs: pa.Table | RowSource, rows: np.ndarray, transform: ImageTransform,
                 predictor: type, predictor_kwargs: dict, *, batch_size: int,
                 concurrency: PoolSize, device: str, limits: ImageLimits = DEFAULT_LIMITS,
                 decode_concurrency: int | None = None,
                 task_retries: int = TASK_RETRIES) -> Iterator[dict[str, np.ndarray]]:
    """Decode ``inputs[rows]`` in Ray Data tasks, then run ``predictor`` in an actor pool.

    ``inputs`` is a table held by the driver (``uri`` and optionally ``size``, ``error``) or a
    :class:`RowSource` that Ray tasks read (a job's listing); ``rows`` are its positions.
    ``predictor`` is a callable class built once per actor with ``predictor_kwargs`` (plus the
    device and the storage settings) and called on decoded batches (``row``, ``error``,
    ``error_kind``, ``crop``, ``width``, ``height``); its output batches stream back as Ray
    Data completes them, in no particular order, each row exactly once. One GPU per actor on
    'cuda'; ``decode_concurrency`` caps the decoding tasks there (default: as many as the
    cluster's CPUs allow). A row whose ``error`` is set is not read: it comes back as an error.

    A task whose worker dies (out of memory, a crash in a decoder, a lost node) or that keeps
    hitting store faults is retried ``task_retries`` times; the rows of a batch that still
    fails are then tried one photo per task, and a photo that fails alone is an error row
    (:data:`WORKER_DIED`, or a 'transient' storage fault) while the others are scored.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not len(rows):
        return
    source = TableRows(inputs) if isinstance(inputs, pa.Table) else inputs
    rows = np.sort(np.asarray(rows, np.int64))  # sorted: batches find their rows by bisection
    options = {"transform": transform, "predictor": predictor,
               "predictor_kwargs": predictor_kwargs, "batch_size": batch_size,
               "concurrency": concurrency, "device": device, "limits": limits,
               "decode_concurrency": decode_concurrency, "task_retries": task_retries}
    # Small inputs still get a few blocks per actor, so that every actor has work.
    actors = _actors_planned(concurrency, device)
    per_block = max(1, min(ROWS_PER_BLOCK, math.ceil(len(rows) / (4 * actors))))
    seen = np.zeros(len(rows), dtype=bool)  # with rows, all the driver keeps per row

    def run(inputs: Callable, isolated: bool) -> Iterator[dict[str, np.ndarray]]:
        # On the driver's node: a roll lost with a worker node would lose its actors' names.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        roll = ray.remote(num_cpus=0, scheduling_strategy=here)(_ActorRoll).remote()
        try:
            yield from run_pass(inputs, isolated, roll)
        finally:
            try:
                actors = ray.get(roll.take.remote())
            except ray.exceptions.RayActorError:  # its node went down with the driver's
                actors = []
            for actor in actors:
                ray.kill(actor)
            ray.kill(roll)

    def run_pass(inputs: Callable, isolated: bool, roll) -> Iterator[dict[str, np.ndarray]]:
        with _tolerant_execution():  # a dataset keeps the context it was made in
            dataset = _dataset(inputs(), roll, isolated=isolated, **options)
            # Whole blocks as they complete: the driver sees progress without filling a batch.
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                where = np.searchsorted(rows, batch["row"])
                fresh = ~seen[where]
                seen[where] = True
                if fresh.all():
                    yield batch
                elif fresh.any():  # a retried task whose first try also delivered
                    yield {key: value[fresh] for key, value in batch.items()}

    yield from run(lambda: source.dataset(rows, per_block), isolated=False)
    lost = rows[~seen]
    if len(lost):
        log.warning("%d photos were in batches whose tasks failed %d times; retrying them one "
                    "per task", len(lost), task_retries + 1)
        yield from run(lambda: source.dataset(lost, 1), isolated=True)
    lost = rows[~seen]
    if len(lost):
        log.warning("%d photos failed alone too: error rows (%s)", len(lost), WORKER_DIED)
        culprits = pa.table({"row": pa.array(lost, pa.int64()),
                             "uri": pa.array([""] * len(lost), pa.string()),
                             "error": pa.array([WORKER_DIED] * len(lost), pa.string())})
        yield from run(lambda: _blocks(culprits, ROWS_PER_BLOCK), isolated=False)
    if not seen.all():
        raise RuntimeError(f"internal error: {int((~seen).sum())} rows never came back")
