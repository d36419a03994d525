"""The encoded photo of each row of a decode batch, wherever the listing says it is: a loose
object (its URI), a member of a WebDataset tar shard (a byte range of the shard) or a row of a
Parquet file (its image column).

Members of one shard in a batch are read with one ranged GET covering them (at most
:data:`MAX_RANGE_BYTES`), and the rows of one Parquet file with one read of the row groups
that hold them; each row's bytes are handed out once and then dropped.
"""
from __future__ import annotations

import numpy as np

from apm.core import storage
from apm.data.decode import DecodeError, ImageLimits, read_images

#: Most bytes of one ranged read that covers several members of a shard.
MAX_RANGE_BYTES = 64 * 2**20


def _text(value) -> str | None:
    # Ray Data gives a column that is all None as float NaN.
    return value if isinstance(value, str) and value else None


def _int(value) -> int | None:
    return int(value) if value is not None and value == value else None  # NaN: unknown


class RowBytes:
    """``reader(i)``: the bytes of row ``i`` of ``batch`` (``uri``, and optionally ``size``,
    ``error``, ``shard``, ``offset``, ``image_column`` as :meth:`apm.data.listing.Listing.dataset`
    gives them). Raises as :func:`apm.data.decode.read_image_bytes` would: DecodeError for a fault of
    the photo, :class:`storage.TransientStorageError` for one of the store."""

    def __init__(self, batch: dict[str, np.ndarray], limits: ImageLimits) -> None:
        self.batch, self.limits = batch, limits
        n = len(batch["uri"])

        def column(name: str) -> np.ndarray | list:
            return batch[name] if name in batch else [None] * n

        self.sizes = [_int(v) for v in column("size")]
        self.shards = [_text(v) for v in column("shard")]
        self.offsets = [_int(v) for v in column("offset")]
        self.known = [_text(v) for v in column("error")]
        self.image_columns = [_text(v) for v in column("image_column")]
        self.ready: dict[int, bytes | None] = {}  # row -> bytes read with an earlier row's
        # Loose objects: every read of the batch at once, a round trip to the store per
        # MAX_READS_IN_FLIGHT photos rather than per photo.
        loose = [i for i in range(n) if self.shards[i] is None and self.known[i] is None]
        self.loose = dict(zip(loose, read_images(
            [(str(batch["uri"][i]), self.sizes[i]) for i in loose], limits)))

    def __call__(self, i: int) -> bytes:
        shard, size = self.shards[i], self.sizes[i]
        if shard is None:
            outcome = self.loose.pop(i)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        if self.image_columns[i] is not None:
            if i not in self.ready:
                self._read_parquet_rows(i)
            data = self.ready.pop(i)
            if data is None:
                raise DecodeError(f"no image: {self.image_columns[i]} is null")
            return data
        self.limits.check_bytes(size)
        if i not in self.ready:
            self._read_members(i)
        data = self.ready.pop(i)
        if len(data) < size:
            raise DecodeError(f"{shard} ends inside this member (it was changed after listing)")
        return data

    def _peers(self, i: int) -> list[int]:
        """Rows of the batch in the shard of row ``i`` still to be read (``i`` first)."""
        return [i] + [j for j in range(len(self.shards)) if j != i and j not in self.ready
                      and self.shards[j] == self.shards[i] and self.known[j] is None]

    def _read_parquet_rows(self, i: int) -> None:
        # Imported here: apm.data.parquet_images builds on apm.data.listing, which imports this module's
        # user, apm.stages.inference.
        from apm.data.parquet_images import read_images

        peers = self._peers(i)
        images = read_images(self.shards[i], self.image_columns[i],
                             [self.offsets[j] for j in peers])
        self.ready.update(zip(peers, images))

    def _read_members(self, i: int) -> None:
        """Row ``i`` and the other members of its shard that one bounded range covers."""
        start = self.offsets[i]
        peers = [j for j in self._peers(i) if self.sizes[j] is not None
                 and self.sizes[j] <= self.limits.max_bytes
                 and start <= self.offsets[j]
                 and self.offsets[j] + self.sizes[j] <= start + MAX_RANGE_BYTES] or [i]
        end = max(self.offsets[j] + self.sizes[j] for j in peers)
        data = storage.read_range(self.shards[i], start, end)
        for j in peers:
            self.ready[j] = data[self.offsets[j] - start:self.offsets[j] - start + self.sizes[j]]
