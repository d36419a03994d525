"""The Ray Data actor that explains batches of decoded crops and writes their PNGs.

Each actor builds the model once (scoring's predictor: eval mode, parameters frozen) and, for
every good crop of a batch and every direction asked for, runs
:func:`apm.explain.attack.attack`, computes the heatmap and its peak region and writes
``OUT/heatmaps/ROW-DIRECTION.png`` and (unless panels are off)
``OUT/panels/ROW-DIRECTION.png``, where ROW is the photo's position in the job's input table.
The PNGs are written where the work is done, so no image travels back to the driver; only
numbers do. A photo whose PNG cannot be written keeps its row with the reason in ``error``.
"""
from __future__ import annotations

import numpy as np
import torch

from apm.core import storage
from apm.core.rows import NO_ERROR
from apm.explain.attack import AttackConfig, attack, perturbation_norm
from apm.explain.heatmap import Box, HeatmapConfig, change_heatmap, peak_bbox
from apm.explain.panels import heatmap_png, panel_png, to_uint8
from apm.models import ModelSpec
from apm.models.predictor import Predictor
from apm.stages.base import BatchStage

HEATMAPS_FOLDER, PANELS_FOLDER = "heatmaps", "panels"

#: ``bbox`` entries of a row without a peak region (an error, or a zero perturbation).
NO_BOX = -1


def artefact_uri(out: str, folder: str, row: int, direction: str) -> str:
    """Where the heatmap or panel of input row ``row`` and ``direction`` goes."""
    return storage.join(out, folder, f"{row:06d}-{direction}.png")


class ExplainPredictor(BatchStage):
    """Ray Data callable class: per batch, ``row``, ``error``, ``score_before`` (N,) and, per
    direction of ``directions`` (in that order), ``score_after``, ``perturbation_norm`` (N, D)
    and ``bbox`` (N, D, 4; ``NO_BOX`` where there is none). NaN scores on error rows.

    The attack moves the scores of scoring's own predictor (batch norm folded, the same
    precision; parameters frozen)."""

    def __init__(self, model: str | ModelSpec, image_size: int | None,
                 attack_config: AttackConfig, heatmap: HeatmapConfig,
                 directions: tuple[str, ...], out: str, panels: bool, device: str,
                 storage_env: dict[str, str], precision: str | None = None) -> None:
        super().__init__(device, storage_env)  # the checkpoint and OUT may be on S3
        self.predictor = Predictor(model, image_size, device, precision)
        self.attack_config, self.heatmap, self.directions = attack_config, heatmap, directions
        self.out, self.panels = out, panels
        self.sigma = heatmap.smooth * self.predictor.crop

    def empty(self, n: int) -> dict[str, np.ndarray]:
        d = len(self.directions)
        return {"score_before": np.full(n, np.nan, np.float32),
                "score_after": np.full((n, d), np.nan, np.float32),
                "perturbation_norm": np.full((n, d), np.nan, np.float32),
                "bbox": np.full((n, d, 4), NO_BOX, np.int32)}

    def process(self, batch: dict[str, np.ndarray], ok: np.ndarray,
                out: dict[str, np.ndarray]) -> None:
        out["error"] = np.array(out["error"], dtype=object)  # a failed write sets its row's
        index = np.flatnonzero(ok)
        crops = torch.from_numpy(np.ascontiguousarray(batch["crop"][ok])).to(
            self.predictor.device)
        for j, direction in enumerate(self.directions):
            result = attack(self.predictor, self.predictor.transform, crops, self.attack_config,
                            direction)
            heat = change_heatmap(result.delta, self.sigma).cpu().numpy()
            modified = to_uint8((crops.float() / 255 + result.delta).cpu().numpy())
            out["score_before"][index] = result.before.cpu().numpy()
            out["score_after"][index, j] = result.after.cpu().numpy()
            out["perturbation_norm"][index, j] = perturbation_norm(
                result.delta, self.attack_config.norm).cpu().numpy()
            for k, i in enumerate(index):
                box = peak_bbox(heat[k], self.heatmap.peak_threshold)
                if box is not None:
                    out["bbox"][i, j] = box
                try:
                    self._write(int(batch["row"][i]), direction, batch["crop"][i], modified[k],
                                heat[k], box, float(out["score_before"][i]),
                                float(out["score_after"][i, j]))
                except Exception as err:  # noqa: BLE001 - one failed write must not stop the job
                    out["error"][i] = f"writing its PNGs failed: {type(err).__name__}: {err}"
        failed = out["error"] != NO_ERROR
        out["score_before"][failed] = np.nan
        out["score_after"][failed] = np.nan
        out["perturbation_norm"][failed] = np.nan
        out["bbox"][failed] = NO_BOX

    def _write(self, row: int, direction: str, original: np.ndarray, modified: np.ndarray,
               heat: np.ndarray, box: Box | None, before: float, after: float) -> None:
        storage.write_bytes(artefact_uri(self.out, HEATMAPS_FOLDER, row, direction),
                            heatmap_png(heat))
        if self.panels:
            storage.write_bytes(artefact_uri(self.out, PANELS_FOLDER, row, direction),
                                panel_png(original, modified, heat, box, direction, before, after))
