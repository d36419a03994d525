"""Parquet files with a column of image bytes as scoring input (img2dataset's parquet output,
Hugging Face datasets' ``image: {bytes, path}`` struct).

Each table row is one listing row: ``shard`` = the file, ``offset`` = the row's position in it,
``key`` = the ``--id-column`` value as text (default: the row number), ``uri = FILE#KEY``. The
listing reads only the id column and the ``--keep-columns``, which it carries as extra listing
columns typed as in the input (so the output shard writer finds them with the listing rows,
without reading the input again); the image bytes are read by the scoring tasks, a batch's rows
of one file at a time from the row groups that hold them (:func:`read_images`).

Ray Data's ``read_parquet`` is not used: it gives no fixed row listing for exactly-once resume
(row positions make output shards), and a block that fails to read fails the job rather than
becoming error rows.
"""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from apm.core import storage
from apm.core.schemas import LISTING_SCHEMA, SCORES_SCHEMA
from apm.data.listing import ListingConfig, PartWriter, list_sources

#: The field of a ``{bytes, path}`` image struct that holds the encoded image.
BYTES_FIELD = "bytes"
#: Rows of the id and keep columns read at a time while listing.
LIST_BATCH_ROWS = 65_536


def parquet_files(source: str) -> list[str]:
    """``source`` itself if it is a ``.parquet`` file, else its ``.parquet`` objects, sorted."""
    if source.lower().endswith(".parquet"):
        return [storage.normalize(source)]
    return [info.uri for info in storage.list_files(source, (".parquet",))]


def _check_columns(file: str, schema: pa.Schema, config: ListingConfig) -> None:
    """One clear error for a missing or unusable image, id or keep column."""
    wanted = [config.image_column, config.id_column, *config.keep_columns]
    missing = [c for c in wanted if c and c not in schema.names]
    if missing:
        raise storage.StorageError(f"{file}: no column {', '.join(missing)} (it has "
                                   f"{', '.join(schema.names)})")
    image = schema.field(config.image_column).type
    if pa.types.is_struct(image):
        image = image.field(BYTES_FIELD).type if image.get_field_index(BYTES_FIELD) >= 0 else None
    if image is None or not (pa.types.is_binary(image) or pa.types.is_large_binary(image)):
        raise storage.StorageError(f"{file}: --image-column {config.image_column} is "
                                   f"{schema.field(config.image_column).type}, not binary or a "
                                   f"struct with a binary '{BYTES_FIELD}' field")
    clash = sorted(set(config.keep_columns) & set(SCORES_SCHEMA.names))
    if clash:
        raise storage.StorageError(f"--keep-columns {', '.join(clash)}: the output has columns "
                                   "of that name")


def list_parquet(config: ListingConfig, folder: str) -> tuple[list[dict], Counter]:
    """The listing parts of every row of every Parquet file of ``config.source``."""
    files = parquet_files(config.source)
    if not files:
        raise storage.StorageError(f"{config.source}: no .parquet files found")
    with storage.open_file(files[0]) as f:
        schema = pq.ParquetFile(f).schema_arrow
    _check_columns(files[0], schema, config)
    listing_schema = pa.schema([*LISTING_SCHEMA, *(schema.field(c) for c in config.keep_columns)])
    list_one = functools.partial(list_file, id_column=config.id_column,
                                 keep_columns=list(config.keep_columns))
    return list_sources(config, folder, files, list_one, listing_schema)


def list_file(writer: PartWriter, file: str, id_column: str | None,
              keep_columns: list[str]) -> None:
    """One listing row per row of ``file``, in order."""
    columns = ([id_column] if id_column else []) + keep_columns
    with storage.open_file(file) as f:
        parquet = pq.ParquetFile(f)
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:  # the first file was checked on the driver; the others here
            raise storage.StorageError(f"{file}: no column {', '.join(missing)}")
        integer_ids = id_column is not None and pa.types.is_integer(
            parquet.schema_arrow.field(id_column).type)
        # Without columns to read, the row count alone lists the file.
        batches = parquet.iter_batches(LIST_BATCH_ROWS, columns=columns) if columns else [None]
        row = 0
        for batch in batches:
            n = parquet.metadata.num_rows if batch is None else batch.num_rows
            ids = batch.column(id_column).to_pylist() if id_column else range(row, row + n)
            kept = {c: batch.column(c).to_pylist() for c in keep_columns}
            for i, value in enumerate(ids):
                key = None if value is None else str(value)
                writer.add({"uri": f"{file}#{row + i if key is None else key}",
                            "image_id": value if integer_ids else None, "shard": file,
                            "key": key, "offset": row + i,
                            "error": f"--id-column {id_column} is null" if key is None else None,
                            **{c: values[i] for c, values in kept.items()}})
            row += n


def read_images(file: str, image_column: str, rows: list[int]) -> list[bytes | None]:
    """The image bytes of ``rows`` (positions in ``file``), read from the row groups that hold
    them, only the image column (a struct's ``bytes`` field); None where the image is null.
    A store fault raises :class:`storage.TransientStorageError`."""
    try:
        with storage.open_file(file) as f:
            parquet = pq.ParquetFile(f)
            sizes = [parquet.metadata.row_group(g).num_rows
                     for g in range(parquet.metadata.num_row_groups)]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            wanted = np.asarray(rows, np.int64)
            group_of = np.searchsorted(starts, wanted, side="right") - 1
            if (wanted < 0).any() or (wanted >= starts[-1]).any():
                raise IndexError(f"{file} has {starts[-1]} rows, fewer than listed")
            groups = sorted(set(group_of.tolist()))
            column = parquet.read_row_groups(groups, columns=[image_column]).column(image_column)
    except Exception as err:
        storage.raise_if_transient(err)
        raise
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, BYTES_FIELD)
    # Row r of group g sits after the rows of the groups read before g.
    base = dict(zip(groups, np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])))
    local = [int(base[g] + r - starts[g]) for g, r in zip(group_of.tolist(), wanted.tolist())]
    return column.take(pa.array(local, pa.int64())).to_pylist()
