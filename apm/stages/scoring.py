"""Bulk scoring: every photo of a library -> score distribution, semantics and embedding, in Parquet.

The job lists its input once (:mod:`apm.data.listing`), then runs the shared inference pipeline
(:func:`apm.stages.inference.predict_rows`) with :class:`ScorePredictor` actors that load the model
once. The listing's rows are cut into shards of ``rows_per_file`` consecutive rows; the driver
collects each shard's results as they stream back and writes the shard as one Parquet file,
``OUT/scores/part-NNNNNN.parquet``, once every row of it is in. Hence:

* exactly one row per listed object: a shard file holds exactly its rows, or does not exist;
* resume: a rerun with the same ``OUT`` reuses the listing, keeps every complete shard file
  and scores only the rest (a killed run loses at most the shards in flight);
* a bad object (missing, empty, truncated, not an image, too many pixels) is a row with
  ``status = 'error'`` and the reason, never a failed job.

``OUT/_job.json`` records what the table was scored with (model, crop, rows per file); a rerun
with other settings is refused unless ``overwrite`` starts over.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from apm.core import storage
from apm.core.lease import DEFAULT_STALE_AFTER_S, OutputLease
from apm.core.rows import IMAGE_SUFFIXES, KIND_PERMANENT, KIND_TRANSIENT, STATUS_ERROR, STATUS_OK
from apm.core.schemas import EMBEDDING_TYPE, NUM_BINS, SCORES_FOLDER, SCORES_SCHEMA, TEACHER_TOP_K
from apm.data.decode import DEFAULT_LIMITS, ImageLimits
from apm.data.inputs import INPUT_KINDS
from apm.data.listing import LISTING_FOLDER, Listing, ListingConfig, build_listing
from apm.models import ModelSpec
from apm.models.predictor import Predictor
from apm.models.teachers import imagenet_categories
from apm.models.transforms import image_transform
from apm.stages.base import BatchStage, Tally, check_batch_options, fixed_lists
from apm.stages.inference import default_concurrency, predict_rows

log = logging.getLogger(__name__)

JOB_FILE = "_job.json"
#: Parquet key-value metadata of a shard file: its :func:`shard_stamp`.
SHARD_KEY = "apm.shard"


# --- the model ------------------------------------------------------------------------------

class ScorePredictor(BatchStage):
    """Ray Data callable class: each actor builds the model once (:class:`Predictor`) and
    scores batches of crops.

    Per row: the score distribution (NaN for a mean-regression head), mean, std, the semantic
    head's top-5 ImageNet ids and probabilities, and (optionally) the pooled backbone features.
    """

    passed = ("row", "error", "error_kind", "width", "height")

    def __init__(self, model: str | ModelSpec, image_size: int | None, embedding: bool,
                 device: str, storage_env: dict[str, str], precision: str | None = None) -> None:
        super().__init__(device, storage_env)
        self.predictor = Predictor(model, image_size, device, precision)
        self.transform = self.predictor.transform
        self.embedding = embedding

    def empty(self, n: int) -> dict[str, np.ndarray]:
        out = {"dist": np.full((n, NUM_BINS), np.nan, np.float32),
               "mean": np.full(n, np.nan, np.float32), "std": np.full(n, np.nan, np.float32),
               "top5_ids": np.zeros((n, TEACHER_TOP_K), np.int32),
               "top5_probs": np.zeros((n, TEACHER_TOP_K), np.float32)}
        if self.embedding:
            out["embedding"] = np.zeros((n, self.predictor.feature_dim), np.float16)
        return out

    def process(self, batch: dict[str, np.ndarray], ok: np.ndarray,
                out: dict[str, np.ndarray]) -> None:
        p = self.predictor.predict(batch["crop"][ok], self.embedding)
        out["mean"][ok], out["std"][ok], out["dist"][ok] = p.mean, p.std, p.dist
        out["top5_ids"][ok], out["top5_probs"][ok] = p.top_ids, p.top_probs
        if self.embedding:
            out["embedding"][ok] = p.embedding.astype(np.float16)


# --- configuration and summary --------------------------------------------------------------

@dataclass(frozen=True)
class ScoreConfig:
    """What ``score`` runs; invalid values raise ValueError before any work."""

    input: str  # photos' folder / s3:// prefix, a manifest, tar shards, Parquet of images
    out: str
    model: str | ModelSpec  # checkpoint path / URI, or random:ARCH (resolved: read once)
    device: str = "cpu"
    precision: str | None = None  # fp32 | bf16; default: the device's (apm.core.precision)
    image_size: int | None = None  # default: the checkpoint's training crop, else 224
    batch_size: int | None = None  # None: the device's (apm.stages.base.DEFAULT_BATCH_SIZE)
    concurrency: int | None = None  # a fixed pool of this many actors; default: elastic
    max_actors: int | None = None  # the elastic pool's cap; default: as many as the cluster holds
    decode_concurrency: int | None = None  # GPU runs: decoding tasks; default as Ray sees fit
    rows_per_file: int = 50_000
    rows_per_part: int = 200_000  # rows per listing part
    listing_tasks: int | None = None  # listing tasks at most; default 4 per cluster CPU
    embedding: bool = True
    limits: ImageLimits = DEFAULT_LIMITS  # what one object may cost (bytes, pixels, aspect)
    suffixes: tuple[str, ...] | None = IMAGE_SUFFIXES  # None: every object of the prefix
    input_kind: str = "auto"  # apm.data.inputs.INPUT_KINDS
    image_column: str | None = None  # Parquet input: the column of image bytes
    id_column: str | None = None  # Parquet input: the rows' identity; default row numbers
    keep_columns: tuple[str, ...] = ()  # Parquet input: columns passed through to the output
    overwrite: bool = False
    retry_errors: bool = False  # rescore the rows of kind 'transient' of an earlier run
    progress_every_s: float = 30.0
    lease_timeout_s: float = DEFAULT_STALE_AFTER_S  # a lease older than this is taken over

    def __post_init__(self) -> None:
        # Frozen: the batch size the device calls for is filled in once, here.
        object.__setattr__(self, "batch_size", check_batch_options(
            self.device, self.batch_size, self.concurrency, self.precision, self.image_size))
        if self.rows_per_file < 1:
            raise ValueError(f"rows per file must be at least 1, got {self.rows_per_file}")
        if min(self.rows_per_part, self.listing_tasks or 1, self.max_actors or 1) < 1:
            raise ValueError("rows per part, listing tasks and max actors must be >= 1")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"--input-kind must be one of {', '.join(INPUT_KINDS)}")
        if self.input_kind == "parquet" and not self.image_column:
            raise ValueError("--input-kind parquet needs --image-column (the image bytes)")
        if (self.id_column or self.keep_columns) and not self.image_column:
            raise ValueError("--id-column and --keep-columns are for Parquet input: give "
                             "--image-column too")

    def uri(self, *parts: str) -> str:
        return storage.join(storage.normalize(self.out), *parts)

    def job_record(self, model_id_: str, crop: int) -> dict:
        """What must not change between a run and its resumption."""
        return {"input": self.input, "model_id": model_id_, "image_size": crop,
                "rows_per_file": self.rows_per_file, "embedding": self.embedding,
                "input_kind": self.input_kind, "image_column": self.image_column,
                "id_column": self.id_column, "keep_columns": list(self.keep_columns)}


@dataclass
class ScoreSummary(Tally):  # rows: written by this run
    out: str
    model_id: str
    listing: Listing
    kinds: Counter = field(default_factory=Counter)  # error_kind -> count
    files_written: int = 0
    files_kept: int = 0  # complete shards of an earlier run
    rows_kept: int = 0
    rows_retried: int = 0  # transient error rows of an earlier run scored again
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.rows / self.seconds if self.seconds else 0.0
        out = [*self.listing.lines(), f"model: {self.model_id}",
               f"scored now: {self.rows} = {self.ok} ok + {self.rows - self.ok} error "
               f"in {self.seconds:.1f} s ({rate:.1f} images/s)"]
        if self.files_kept:
            out.append(f"kept from an earlier run: {self.files_kept} files, {self.rows_kept} rows")
        if self.rows_retried:
            out.append(f"transient error rows of an earlier run scored again: {self.rows_retried}")
        transient = self.kinds.get(KIND_TRANSIENT, 0)
        if transient:
            out.append(f"  {transient} rows failed on store faults after every retry "
                       "(error_kind 'transient'): rerun with --retry-errors to score them")
        out += self.error_lines()
        out.append(f"output: {storage.join(self.out, SCORES_FOLDER)} "
                   f"({self.files_written + self.files_kept} files, "
                   f"{self.listing.rows} rows, one per listed object)")
        return out


# --- output ---------------------------------------------------------------------------------

#: The columns of a score row that come from its listing row: the identity of its input.
LISTED_COLUMNS = ("uri", "image_id", "size", "shard", "key", "meta")


def scores_table(listed: pa.Table | None, result: dict[str, np.ndarray], model_id_: str,
                 scored_at: dt.datetime) -> pa.Table:
    """``SCORES_SCHEMA`` rows for ``listed`` (:data:`LISTED_COLUMNS`) and their ``result``
    arrays (``listed`` None: those columns null, to be filled by :func:`with_listing`)."""
    n = len(result["row"])
    errors = [e or None for e in result["error"]]
    ok = np.array([e is None for e in errors], dtype=bool)
    kinds = [(k or KIND_PERMANENT) if e else None for e, k in zip(errors, result["error_kind"])]
    has_dist = ok & np.isfinite(result["dist"]).all(axis=1)
    names = imagenet_categories()
    embedding = result.get("embedding")
    if embedding is None:
        embedding_column = pa.nulls(n, EMBEDDING_TYPE)
    else:
        flat = pa.array(embedding.ravel(), pa.float16())
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * embedding.shape[1])
        embedding_column = pa.ListArray.from_arrays(offsets, flat, type=EMBEDDING_TYPE,
                                                    mask=pa.array(~ok))
    mean = result["mean"].astype(np.float32)

    def listed_column(name: str) -> pa.Array:
        return (listed.column(name) if listed is not None
                else pa.nulls(n, SCORES_SCHEMA.field(name).type))

    return pa.table({
        "uri": listed_column("uri"),
        "image_id": listed_column("image_id"),
        "size": listed_column("size"),
        "shard": listed_column("shard"),
        "key": listed_column("key"),
        "meta": listed_column("meta"),
        "status": pa.array([STATUS_OK if v else STATUS_ERROR for v in ok], pa.string()),
        "error": pa.array(errors, pa.string()),
        "error_kind": pa.array(kinds, pa.string()),
        "width": pa.array(result["width"], pa.int32(), mask=~ok),
        "height": pa.array(result["height"], pa.int32(), mask=~ok),
        "dist": fixed_lists(np.nan_to_num(result["dist"]), SCORES_SCHEMA.field("dist").type,
                            has_dist),
        "mean": pa.array(mean, pa.float32(), mask=~ok),
        "std": pa.array(result["std"], pa.float32(), mask=~has_dist),
        "is_high": pa.array(mean >= 5.0, pa.bool_(), mask=~ok),
        "top5_ids": fixed_lists(result["top5_ids"], SCORES_SCHEMA.field("top5_ids").type, ok),
        "top5_names": pa.array([[names[i] for i in ids] if v else None
                                for ids, v in zip(result["top5_ids"], ok)], pa.list_(pa.string())),
        "top5_probs": fixed_lists(result["top5_probs"], SCORES_SCHEMA.field("top5_probs").type, ok),
        "embedding": embedding_column,
        "model_id": pa.array([model_id_] * n, pa.string()),
        "scored_at": pa.array([scored_at] * n, SCORES_SCHEMA.field("scored_at").type),
    }, schema=SCORES_SCHEMA)


def with_listing(table: pa.Table, listed: pa.Table, keep_columns: list[str]) -> pa.Table:
    """``table`` (rows in listing order) with the :data:`LISTED_COLUMNS` of ``listed``, and its
    ``keep_columns`` (a Parquet input's, typed as there) after the standard columns."""
    for name in LISTED_COLUMNS:
        table = table.set_column(table.schema.get_field_index(name), SCORES_SCHEMA.field(name),
                                 listed.column(name))
    for name in keep_columns:
        table = table.append_column(listed.schema.field(name), listed.column(name))
    return table


def output_schema(listing: Listing) -> pa.Schema:
    """``SCORES_SCHEMA``, then the listing's keep columns."""
    if not listing.keep_columns:
        return SCORES_SCHEMA
    listed = listing.read_rows(0, 1, listing.keep_columns).schema
    return pa.schema([*SCORES_SCHEMA, *listed])


def shard_uri(config: ScoreConfig, shard: int) -> str:
    return config.uri(SCORES_FOLDER, f"part-{shard:06d}.parquet")


def shard_stamp(listing: Listing, first_row: int, rows: int, model_id_: str) -> dict:
    """What a shard file must hold to be kept by a resumed run (its Parquet key-value
    metadata): its row range, first and last URI, and the model that scored it."""
    uris = pa.concat_arrays([
        listing.read_rows(first_row, first_row + 1, ["uri"]).column("uri").combine_chunks(),
        listing.read_rows(first_row + rows - 1, first_row + rows, ["uri"]).column("uri")
        .combine_chunks()])
    return {"first_row": first_row, "rows": rows, "first_uri": uris[0].as_py(),
            "last_uri": uris[1].as_py(), "model_id": model_id_}


def shard_mismatch(uri: str, stamp: dict, schema: pa.Schema) -> str | None:
    """Why a shard file of an earlier run cannot be kept (None: it is whole, of ``schema``, and
    matches)."""
    try:
        with storage.open_file(uri) as f:
            parquet = pq.ParquetFile(f)
            found = json.loads((parquet.metadata.metadata or {}).get(SHARD_KEY.encode(), b"{}"))
            if not parquet.schema_arrow.equals(schema):
                return "another schema"
            if parquet.metadata.num_rows != stamp["rows"]:
                return f"{parquet.metadata.num_rows} rows, {stamp['rows']} expected"
    except Exception as err:  # noqa: BLE001 - a torn file from a killed run: score it again
        return f"unreadable ({type(err).__name__})"
    differ = [key for key, value in stamp.items() if found.get(key) != value]
    return f"its {', '.join(differ)} differ from this listing and model" if differ else None


class ShardWriter:
    """Collects result rows per shard; once all of a shard's rows are in, joins them with
    their listing rows (read then, from the listing's parts) and writes the shard's file.
    The driver holds only the shards in flight."""

    def __init__(self, config: ScoreConfig, listing: Listing, model_id_: str,
                 summary: ScoreSummary) -> None:
        self.config, self.listing, self.model_id, self.summary = (config, listing, model_id_,
                                                                  summary)
        self.pending: dict[int, list[tuple[np.ndarray, pa.Table]]] = {}
        self.missing: dict[int, int] = {}  # shard -> rows still to come

    def shard_rows(self, shard: int) -> int:
        size = self.config.rows_per_file
        return min(size, self.listing.rows - shard * size)

    def rows_of(self, shard: int) -> np.ndarray:
        first = shard * self.config.rows_per_file
        return np.arange(first, first + self.shard_rows(shard), dtype=np.int64)

    def open(self, shard: int, kept: pa.Table | None = None,
             kept_rows: np.ndarray | None = None) -> None:
        """Expect the rows of ``shard``; with ``kept``, those of an earlier file stay and only
        the other rows are expected."""
        self.pending[shard] = []
        self.missing[shard] = self.shard_rows(shard)
        if kept is not None and kept.num_rows:
            # Its standard columns only: the listing's keep columns are added when it is written.
            self.pending[shard].append((kept_rows, kept.select(SCORES_SCHEMA.names)
                                        .replace_schema_metadata(None)))
            self.missing[shard] -= kept.num_rows

    def add(self, result: dict[str, np.ndarray]) -> None:
        rows = result["row"].astype(np.int64)
        shards = rows // self.config.rows_per_file
        scored_at = dt.datetime.now(dt.UTC)
        self._record(result)
        for shard in np.unique(shards):
            pick = np.flatnonzero(shards == shard)
            part = {key: value[pick] for key, value in result.items()}
            self.pending[int(shard)].append((rows[pick], scores_table(None, part, self.model_id,
                                                                      scored_at)))
            self.missing[int(shard)] -= len(pick)
            if self.missing[int(shard)] == 0:
                self._write(int(shard))

    def _record(self, result: dict[str, np.ndarray]) -> None:
        self.summary.record(result["error"])
        self.summary.kinds.update((k or KIND_PERMANENT) for e, k in
                                  zip(result["error"], result["error_kind"]) if e)

    def _write(self, shard: int) -> None:
        pieces = self.pending.pop(shard)
        del self.missing[shard]
        rows = np.concatenate([r for r, _ in pieces])
        table = pa.concat_tables([t for _, t in pieces]).take(pa.array(np.argsort(rows)))
        first = int(rows.min())
        table = with_listing(table, self.listing.read_rows(first, first + len(rows)),
                             self.listing.keep_columns)
        stamp = shard_stamp(self.listing, first, len(rows), self.model_id)
        table = table.replace_schema_metadata({SHARD_KEY: json.dumps(stamp)})
        storage.write_table(table, shard_uri(self.config, shard))
        self.summary.files_written += 1

    def unfinished(self) -> dict[int, int]:
        return dict(self.missing)


# --- the job --------------------------------------------------------------------------------

def _read_job_file(job: str) -> dict | None:
    """The record of an earlier run, None if there is none; one clear error if it is damaged."""
    if not storage.exists(job):
        return None
    try:
        record = json.loads(storage.read_text(job))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record
    except ValueError as err:
        raise ValueError(f"{job}: damaged ({err}); delete it to resume (every shard file is "
                         "then checked against the listing and the model), or use --overwrite "
                         "to start over") from None


def _prepare_out(config: ScoreConfig, record: dict) -> dict | None:
    """Start over (overwrite), or check that an earlier run scored with the same settings;
    returns the earlier run's record (None: there is none)."""
    job = config.uri(JOB_FILE)
    if config.overwrite:
        # Safe: this run holds OUT's lease, so no live run is writing here.
        for name in (SCORES_FOLDER, LISTING_FOLDER, JOB_FILE):
            if storage.exists(config.uri(name)):
                storage.remove(config.uri(name), recursive=name != JOB_FILE)
        return None
    earlier = _read_job_file(job)
    if earlier is None:
        if storage.exists(config.uri(SCORES_FOLDER)):
            log.warning("%s is missing: every shard file under %s is checked against the "
                        "listing and the model before it is kept", job, config.uri(SCORES_FOLDER))
        return None
    changed = {k: (earlier.get(k), v) for k, v in record.items() if earlier.get(k) != v}
    if changed:
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(f"{job}: {config.out} was scored with other settings ({what}); "
                         "use --overwrite to start over, or another --output")
    return earlier


def _read_listing(config: ScoreConfig) -> Listing:
    folder = config.uri(LISTING_FOLDER)
    if not storage.exists(folder):
        log.info("listing %s into %s", config.input, folder)
    try:
        return build_listing(ListingConfig(
            config.input, folder, suffixes=config.suffixes, rows_per_part=config.rows_per_part,
            tasks=config.listing_tasks, kind=config.input_kind, image_column=config.image_column,
            id_column=config.id_column, keep_columns=config.keep_columns))
    except (ValueError, KeyError, TypeError, OSError, pa.ArrowException) as err:
        if isinstance(err, storage.StorageError):
            raise
        raise storage.StorageError(
            f"{folder}: the listing is damaged ({type(err).__name__}: {err}); delete it to list "
            "the input again (shard files are checked against the new listing)") from err


def _plan_shards(config: ScoreConfig, writer: ShardWriter, identity: str,
                 summary: ScoreSummary) -> np.ndarray:
    """Open every shard to (re)score and return the listing rows to score."""
    todo: list[np.ndarray] = []
    schema = output_schema(writer.listing)
    shards = math.ceil(writer.listing.rows / config.rows_per_file)
    for shard in range(shards):
        uri, rows = shard_uri(config, shard), writer.rows_of(shard)
        if not storage.exists(uri):
            writer.open(shard)
            todo.append(rows)
            continue
        why = shard_mismatch(uri, shard_stamp(writer.listing, int(rows[0]), len(rows), identity),
                             schema)
        if why:
            log.warning("%s is not kept: %s; scoring its rows again", uri, why)
            writer.open(shard)
            todo.append(rows)
            continue
        if config.retry_errors:
            kept = storage.read_table(uri)
            transient = np.array([k == KIND_TRANSIENT
                                  for k in kept.column("error_kind").to_pylist()], dtype=bool)
            if transient.any():
                writer.open(shard, kept.filter(pa.array(~transient)), rows[~transient])
                todo.append(rows[transient])
                summary.rows_retried += int(transient.sum())
                continue
        summary.files_kept += 1
        summary.rows_kept += len(rows)
    log.info("%d shards of up to %d rows: %d complete from an earlier run, %d to score",
             shards, config.rows_per_file, summary.files_kept, shards - summary.files_kept)
    return np.concatenate(todo) if todo else np.zeros(0, np.int64)


def run_score(config: ScoreConfig) -> ScoreSummary:
    """Score every listed object of ``config.input`` into ``OUT/scores``; Ray must be up.

    The run holds OUT's lease (:class:`apm.core.lease.OutputLease`) from start to end, so a second
    run into the same OUT is refused while this one is alive.
    """
    start = time.perf_counter()
    storage.makedirs(storage.normalize(config.out))
    with OutputLease(config.uri(), stale_after_s=config.lease_timeout_s) as lease:
        spec = ModelSpec.resolve(config.model)  # read once; a bad checkpoint fails here
        identity, crop = spec.id, spec.crop(config.image_size)
        record = config.job_record(identity, crop)
        earlier = _prepare_out(config, record)
        listing = _read_listing(config)
        record["listing_digest"] = listing.digest
        if earlier and earlier.get("listing_digest") not in (None, record["listing_digest"]):
            log.warning("the listing differs from the earlier run's (%s -> %s): shard files that "
                        "do not match it are scored again", earlier["listing_digest"],
                        record["listing_digest"])
        storage.write_text(config.uri(JOB_FILE), json.dumps(record, indent=1))
        summary = ScoreSummary(out=storage.normalize(config.out), model_id=identity,
                               listing=listing)
        writer = ShardWriter(config, listing, identity, summary)
        rows = _plan_shards(config, writer, identity, summary)
        concurrency = (config.concurrency
                       or default_concurrency(config.device, config.max_actors))
        progress = Progress(len(rows), config.progress_every_s)
        # Rows known to be bad (a manifest's image_status) come back as error rows unread.
        batches = predict_rows(
            listing, rows, image_transform(spec.architecture.backbone, crop), ScorePredictor,
            {"model": spec, "image_size": crop, "embedding": config.embedding,
             "precision": config.precision},
            batch_size=config.batch_size, concurrency=concurrency, device=config.device,
            limits=config.limits, decode_concurrency=config.decode_concurrency)
        progress.update(summary)
        for batch in batches:
            lease.check()  # stop at once if another run took OUT over
            writer.add(batch)
            progress.update(summary)
        if writer.unfinished():
            raise RuntimeError(f"internal error: shards without all their rows: "
                               f"{writer.unfinished()}")
    summary.seconds = time.perf_counter() - start
    return summary


class Progress:
    """A log line every ``every_s`` seconds: rows done, images/s, errors."""

    def __init__(self, total: int, every_s: float) -> None:
        self.total, self.every_s = total, every_s
        self.start = self.last = time.perf_counter()

    def update(self, summary: ScoreSummary) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and summary.rows < self.total:
            return
        self.last = now
        rate = summary.rows / max(now - self.start, 1e-9)
        log.info("scored %d/%d (%.0f%%), %.1f images/s, %d errors, %d files written",
                 summary.rows, self.total, 100 * summary.rows / max(self.total, 1), rate,
                 summary.rows - summary.ok, summary.files_written)

