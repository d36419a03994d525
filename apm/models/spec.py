"""A job's model option, ``URI | random:ARCH``, resolved once.

:meth:`ModelSpec.resolve` reads a checkpoint's bytes once (on the driver), checks them (a
missing, unreachable, foreign or damaged file, or weights that do not fit, is one
CheckpointError line naming the URI) and keeps them, so that the architecture, the id and the
trained crop cost no further read, and :meth:`ModelSpec.load` builds the model from the held
bytes wherever the spec travels (a Ray actor) without touching the store again.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from apm.core import storage
from apm.models.apm import APM, APMConfig
from apm.models.backbones import list_backbones
from apm.models.checkpoint import (
    RANDOM_PREFIX,
    CheckpointError,
    checkpoint_payload,
    load_checkpoint,
    load_weights,
    read_source,
)
from apm.models.init import create_apm

#: The crop of a checkpoint that does not record its own (ImageNet's 224).
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model spec: what it names, its architecture and, for a checkpoint, its bytes."""

    spec: str  # as given: a checkpoint's path / URI, or random:ARCH
    architecture: APMConfig
    trained_crop: int | None = None  # the crop its trainer recorded (None: not recorded)
    data: bytes | None = field(default=None, repr=False)  # the checkpoint; None for random:ARCH

    @classmethod
    def resolve(cls, spec: str | ModelSpec, allow_random: bool = True) -> ModelSpec:
        """``spec`` resolved (a ModelSpec is returned as it is); ``random:ARCH`` only when
        ``allow_random``, else it is read as a path."""
        if isinstance(spec, ModelSpec):
            return spec
        if allow_random and spec.startswith(RANDOM_PREFIX):
            backbone = spec[len(RANDOM_PREFIX):]
            if backbone not in list_backbones():
                raise CheckpointError(f"{spec}: unknown architecture {backbone!r}; choose one of "
                                      f"{', '.join(list_backbones())}")
            return cls(spec, APMConfig(backbone=backbone))
        try:
            # The preflight's short retries: a dead endpoint answers in seconds, not after the
            # bulk reads' backoff.
            storage.check_input(spec)
        except storage.StorageError as err:
            raise CheckpointError(str(err)) from err
        data = read_source(spec)
        config, state_dict, crop = checkpoint_payload(data, spec)
        load_weights(APM(config), state_dict, spec)  # the weights must fit their architecture
        return cls(spec, config, crop, data)

    @property
    def is_random(self) -> bool:
        return self.data is None

    @property
    def id(self) -> str:
        """What identifies the weights: the spec for ``random:ARCH`` (fixed seed), else a hash
        of the checkpoint's bytes, so a moved or renamed checkpoint keeps its id."""
        if self.data is None:
            return self.spec
        return "sha256:" + hashlib.sha256(self.data).hexdigest()[:16]

    def crop(self, requested: int | None = None) -> int:
        """The crop to run the model at: as requested, else its trained crop, else 224."""
        return requested or self.trained_crop or DEFAULT_IMAGE_SIZE

    def load(self) -> APM:
        """The model, in eval mode; ``random:ARCH`` gives the same weights everywhere."""
        if self.data is None:
            torch.manual_seed(0)  # every actor must build the same random model
            return create_apm(self.architecture, "random").eval()
        return load_checkpoint(self.data, what=self.spec).eval()


def check_model_spec(spec: str, allow_random: bool = True) -> APMConfig:
    """The architecture of a job's model option, checked before any work starts (see
    :meth:`ModelSpec.resolve`)."""
    return ModelSpec.resolve(spec, allow_random).architecture

