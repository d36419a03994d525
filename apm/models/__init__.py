"""The APM student model: backbones, the two-headed network, initialisation, checkpoints and
model specs."""
from __future__ import annotations

from apm.models.apm import (
    APM,
    HEADS,
    HIGH_SCORE_THRESHOLD,
    APMConfig,
    APMOutput,
    is_high,
    mean_score,
    std_score,
)
from apm.models.backbones import (
    Backbone,
    Normalisation,
    check_backbone,
    create_backbone,
    input_normalisation,
    list_backbones,
    register_backbone,
)
from apm.models.checkpoint import (
    RANDOM_PREFIX,
    CheckpointError,
    checkpoint_bytes,
    load_checkpoint,
    load_state,
    read_checkpoint,
    save_checkpoint,
    trained_image_size,
)
from apm.models.fusion import fold_batch_norm, optimize_for_inference
from apm.models.init import TEACHER_WEIGHTS, create_apm, initialise, list_inits, register_init
from apm.models.spec import ModelSpec, check_model_spec
from apm.models.weights import WeightsMismatchError

__all__ = [
    "APM", "APMConfig", "APMOutput", "Backbone", "CheckpointError", "HEADS",
    "HIGH_SCORE_THRESHOLD", "ModelSpec", "Normalisation", "RANDOM_PREFIX", "TEACHER_WEIGHTS",
    "WeightsMismatchError", "check_backbone", "check_model_spec", "checkpoint_bytes", "create_apm",
    "create_backbone", "fold_batch_norm", "initialise", "input_normalisation", "is_high",
    "list_backbones", "list_inits", "load_checkpoint", "load_state", "mean_score",
    "optimize_for_inference", "read_checkpoint", "register_backbone", "register_init",
    "save_checkpoint", "std_score", "trained_image_size",
]
