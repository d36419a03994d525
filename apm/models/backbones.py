"""Backbone registry: feature extractors shared by APM's semantic and aesthetic heads.

Builders register themselves by name with :func:`register_backbone` (the pattern of timm's
``register_model`` and torchvision's ``models/_api.py``), so a config names its backbone as a
string, new architectures need no change elsewhere, and ``--help`` texts can list the choices.

Each builder returns the architecture's ImageNet classifier network with its classifier (and,
for EfficientNet, the dropout in front of it) replaced by ``nn.Identity``: the module maps
images to pooled features, and its state-dict keys are the full network's keys minus those of
the classifier. That is what lets :mod:`apm.models.init` load a full ImageNet state dict in the
architecture's own format: everything under ``classifier_prefix`` goes to APM's semantic head,
the rest to the backbone. No builder downloads anything; every backbone starts random.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torchvision import models as tv_models

from apm.core.registry import Registry


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and what the heads need to know about it."""

    features: nn.Module  # images (N, 3, H, W) -> pooled features (N, feature_dim)
    feature_dim: int
    # Key prefix of the 1000-way ImageNet classifier in the architecture's own state dict
    # (torchvision's ``fc.``, EfficientNet-PyTorch's ``_fc.``).
    classifier_prefix: str


class Normalisation(NamedTuple):
    """Per-channel mean and std (RGB, pixels in 0..1) that a backbone's weights expect."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: torchvision's ImageNet statistics, used by its ResNet weights.
IMAGENET_NORMALISATION = Normalisation(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: EfficientNet-Lite's (x - 127) / 128 on 0..255 pixels, chosen in TensorFlow for quantisation.
LITE_NORMALISATION = Normalisation(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)

BackboneBuilder = Callable[[], Backbone]


@dataclass(frozen=True)
class _Entry:
    builder: BackboneBuilder
    normalisation: Normalisation


_BACKBONES: Registry[_Entry] = Registry("backbone")


def register_backbone(name: str, normalisation: Normalisation = IMAGENET_NORMALISATION,
                      ) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: make ``builder`` available as ``create_backbone(name)``.

    ``normalisation`` is registered with it, not built, so that a data pipeline can ask for it
    without building the network.
    """

    return _BACKBONES.decorator(name, lambda builder: _Entry(builder, normalisation))


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`, sorted."""
    return _BACKBONES.names()


def check_backbone(name: str) -> None:
    """ValueError listing the choices unless ``name`` is registered."""
    _BACKBONES.check(name)


def create_backbone(name: str) -> Backbone:
    """A freshly built, randomly initialised backbone."""
    return _BACKBONES[name].builder()


def input_normalisation(name: str) -> Normalisation:
    """The input normalisation of backbone ``name``: ``(pixels / 255 - mean) / std``."""
    return _BACKBONES[name].normalisation


def _torchvision_resnet(factory: Callable[..., tv_models.ResNet]) -> Backbone:
    net = factory(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return Backbone(features=net, feature_dim=dim, classifier_prefix="fc.")


# torchvision's ResNets; the paper's APM uses ResNet-101.
for _depth in (18, 34, 50, 101):
    register_backbone(f"resnet{_depth}")(partial(_torchvision_resnet, getattr(tv_models, f"resnet{_depth}")))


@register_backbone("efficientnet_lite0", LITE_NORMALISATION)
def efficientnet_lite0() -> Backbone:
    """EfficientNet-Lite0, the architecture of the ImageNet teacher.

    ``image_size=None`` selects TensorFlow-style "same" padding computed per input, instead of
    padding fixed for 224-pixel inputs, so photos of any size get the padding the weights were
    trained with; at 224 pixels both give identical outputs. The network's own dropout is
    removed with its classifier because APM applies its configured dropout to the shared
    features.
    """
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    dim = net._fc.in_features
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    return Backbone(features=net, feature_dim=dim, classifier_prefix="_fc.")
