"""The row contract of every batch stage: statuses, error kinds and the errors that need no
photo read, which suffixes are photos, and how a task that reads photos is retried."""
from __future__ import annotations

import warnings

from apm.core import storage

STATUS_OK, STATUS_ERROR = "ok", "error"

#: ``error_kind`` of an error row: a fault of the object itself (missing, empty, not an image,
#: truncated, over a limit), or of the infrastructure (a store fault that outlasted every retry;
#: ``--retry-errors`` rescores those).
KIND_PERMANENT, KIND_TRANSIENT = "permanent", "transient"

#: The error of a photo whose task's worker died every time it was tried, alone.
WORKER_DIED = "worker died while decoding or scoring this object"

#: Ray retries of a task (or actor task) that failed, before its photos are tried one by one.
TASK_RETRIES = 2

# Ray 2.60 has no named parameters for task and actor retries yet, and warns on every
# ray_remote_args that they will go; these modules pass them on purpose.
warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")

#: Files a folder / prefix input is searched for (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: The ``error`` of a good photo inside the Ray pipeline. Not None: Ray Data turns a batch
#: whose column is all None into a float NaN array.
NO_ERROR = ""

def known_errors(uris: list[str | None], statuses: list[str | None],
                 details: list[str | None]) -> list[str | None]:
    """Why each manifest row cannot be scored before any photo is read (None: it can)."""
    errors: list[str | None] = []
    for uri, status, why in zip(uris, statuses, details):
        if uri is None:
            errors.append("the manifest has no uri for this row")
        elif status not in (None, STATUS_OK):
            errors.append(f"manifest image_status {status!r}" + (f": {why}" if why else ""))
        else:
            errors.append(None)
    return errors



def retrying_task_args(retries: int = TASK_RETRIES) -> dict:
    """Ray remote args of a Ray Data task that reads photos: a task whose worker died is
    retried ``retries`` times (Ray Data's default: without end), and so is one that raised
    :class:`apm.core.storage.TransientStorageError` (a store fault that outlasted botocore's
    retries)."""
    return {"max_retries": retries, "retry_exceptions": [storage.TransientStorageError]}
