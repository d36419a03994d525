"""Generator checkpoints: the weights, the configuration and the category names in one file.

Like APM checkpoints (:mod:`apm.models.checkpoint`) the file holds only tensors, strings and
numbers (``torch.load(..., weights_only=True)`` reads it), and it is self-describing: generation
rebuilds the generator and maps category names to ids from the file alone. Files are written
and read through :mod:`apm.core.storage` (local paths or ``s3://`` URIs) or handled as bytes.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch

from apm.core import storage
from apm.models.checkpoint import describe_source, read_format
from apm.models.weights import WeightsMismatchError, load_exact
from pfagan.config import GANConfig
from pfagan.generator import Generator

#: Written into every file; a reader rejects anything else rather than guess.
CHECKPOINT_FORMAT = "pfagan-generator/1"


class GeneratorCheckpointError(ValueError):
    """A file that is not a readable PFAGAN generator checkpoint."""


@dataclass(frozen=True)
class StoredGenerator:
    generator: Generator  # in eval mode: batch norm uses the running statistics
    config: GANConfig
    categories: tuple[str, ...]  # category id -> name

    def category_id(self, name: str) -> int:
        if name not in self.categories:
            raise ValueError(f"unknown category {name!r}; this generator knows "
                             f"{', '.join(self.categories)}")
        return self.categories.index(name)


def generator_bytes(generator: Generator, categories: Sequence[str]) -> bytes:
    """The checkpoint of ``generator`` (category id i is named ``categories[i]``) as bytes."""
    if len(categories) != generator.config.num_categories:
        raise ValueError(f"{len(categories)} category names for a generator of "
                         f"{generator.config.num_categories} categories")
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(generator.config),
                "categories": list(categories), "state_dict": generator.state_dict()}, buffer)
    return buffer.getvalue()


def save_generator(generator: Generator, categories: Sequence[str], uri: str) -> None:
    """Write the checkpoint of ``generator`` to a local path or ``s3://`` URI."""
    storage.write_bytes(uri, generator_bytes(generator, categories))


def load_generator(source: str | bytes) -> StoredGenerator:
    """The generator stored in a checkpoint (a URI or its bytes), on the CPU, in eval mode."""
    what = describe_source(source)
    payload = read_format(source, CHECKPOINT_FORMAT, "a PFAGAN generator checkpoint",
                          GeneratorCheckpointError)
    unknown = payload["config"].keys() - {f.name for f in fields(GANConfig)}
    if unknown:
        raise GeneratorCheckpointError(f"{what} has config fields this version does not know: "
                                       f"{sorted(unknown)}")
    config = GANConfig(**payload["config"])
    generator = Generator(config)
    try:
        load_exact(generator, payload["state_dict"], what, f"a generator of {config.describe()}")
    except WeightsMismatchError as err:
        raise GeneratorCheckpointError(str(err)) from err
    return StoredGenerator(generator.eval(), config, tuple(payload["categories"]))
