"""The whole pipeline on one work folder (``python -m jobs.pipeline``): settings and presets,
the stages in order, each skipped when its outputs exist."""
from __future__ import annotations

from apm.pipeline.settings import PRESETS, Settings
from apm.pipeline.stages import GAN_SAMPLES_PER_CELL, HEADLINE_FILE, STAGES, Stage

__all__ = ["GAN_SAMPLES_PER_CELL", "HEADLINE_FILE", "PRESETS", "STAGES", "Settings", "Stage"]
