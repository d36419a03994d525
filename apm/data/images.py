"""Checking that photos exist and decode, in parallel with Ray Data."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from apm.core import storage
from apm.core.rows import retrying_task_args
from apm.data.decode import DEFAULT_LIMITS, DecodeError, ImageLimits, decode_image, read_image_bytes

STATUS_OK, STATUS_MISSING, STATUS_UNREADABLE = "ok", "missing", "unreadable"


def probe_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(width, height) of an encoded image, decoding it fully so truncation is caught.

    Decoding to a tiny size lets JPEG draft mode work at 1/8 scale: every entropy-coded byte
    is still read (so a truncated file fails) at a fraction of the cost of a full decode.
    """
    decoded = decode_image(data, size=8, limits=limits)
    return decoded.width, decoded.height


def _check_batch(batch: dict[str, np.ndarray], storage_env: dict[str, str],
                 limits: ImageLimits) -> pa.Table:
    storage.apply_env(storage_env)
    rows: list[tuple] = []  # (image_status, image_error, width, height)
    for uri, size in zip(batch["uri"], batch["size"]):
        try:
            rows.append((STATUS_OK, None, *probe_image(read_image_bytes(uri, limits, int(size)),
                                                       limits)))
        except storage.TransientStorageError:
            raise  # the store's fault, not the photo's: Ray retries the task
        except FileNotFoundError:
            rows.append((STATUS_MISSING, "not found", None, None))
        except DecodeError as err:  # its message says why
            rows.append((STATUS_UNREADABLE, str(err), None, None))
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the job
            rows.append((STATUS_UNREADABLE, f"{type(err).__name__}: {err}", None, None))
    status, error, width, height = (list(column) for column in zip(*rows))
    return pa.table({"uri": pa.array(batch["uri"], type=pa.string()),
                     "image_status": pa.array(status, type=pa.string()),
                     "image_error": pa.array(error, type=pa.string()),
                     "width": pa.array(width, type=pa.int32()),
                     "height": pa.array(height, type=pa.int32())})


def check_images(uris: list[str], images_root: str, limits: ImageLimits = DEFAULT_LIMITS
                 ) -> pa.Table:
    """Status of each URI: one listing finds the missing ones, Ray Data decodes the rest.

    A photo over ``limits`` (the listing's size is checked before it is read) is unreadable.

    Returns a table (uri, image_status, image_error, width, height) in the order of ``uris``.
    """
    import ray

    images_root = storage.normalize(images_root)
    present = {info.uri: info.size for info in storage.list_files(images_root)}
    found = [u for u in uris if u in present]
    results: dict[str, tuple] = {
        u: (STATUS_MISSING, "not found under " + images_root, None, None)
        for u in uris if u not in present
    }
    if found:
        checked = (ray.data.from_items([{"uri": u, "size": present[u]} for u in found])
                   .map_batches(_check_batch, batch_size=64, batch_format="numpy",
                                fn_kwargs={"storage_env": storage.ray_env_vars(),
                                           "limits": limits}, **retrying_task_args())
                   .take_all())
        for row in checked:
            results[row["uri"]] = (row["image_status"], row["image_error"], row["width"],
                                   row["height"])
    ordered = [results[u] for u in uris]
    return pa.table({
        "uri": pa.array(uris, type=pa.string()),
        "image_status": pa.array([r[0] for r in ordered], type=pa.string()),
        "image_error": pa.array([r[1] for r in ordered], type=pa.string()),
        "width": pa.array([r[2] for r in ordered], type=pa.int32()),
        "height": pa.array([r[3] for r in ordered], type=pa.int32()),
    })
