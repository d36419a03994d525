"""Why this score: adversarial heatmaps of an APM's predicted mean score.

After the explanation in Murray's work: change the photo by gradient descent, within a small
budget, so that its predicted score goes down (or up), and show where it changed most.

``attack``     the bounded perturbation (PGD, L∞ or L2 ball, optional total-variation prior);
``heatmap``    the smoothed, normalised change map, its peak region, its mass inside a mask;
``panels``     the heatmap PNG and the original | modified | overlay panel;
``predictor``  the Ray Data actor that explains decoded crops and writes their PNGs;
``source``     which photos: a library listing or a selection from a scores table;
``job``        the whole job and its table, ``OUT/explanations.parquet``.
"""
from __future__ import annotations

from apm.explain.attack import DIRECTIONS, NORMS, Attack, AttackConfig, attack, perturbation_norm
from apm.explain.heatmap import HeatmapConfig, change_heatmap, gaussian_blur, mass_inside, peak_bbox
from apm.explain.job import TABLE_FILE, ExplainConfig, ExplainSummary, run_explain
from apm.explain.source import SELECTIONS, Selection

__all__ = [
    "DIRECTIONS", "NORMS", "SELECTIONS", "TABLE_FILE", "Attack", "AttackConfig", "ExplainConfig",
    "ExplainSummary", "HeatmapConfig", "Selection", "attack", "change_heatmap", "gaussian_blur",
    "mass_inside", "peak_bbox", "perturbation_norm", "run_explain",
]
