"""Metrics: segmentation from a pooled confusion matrix.

Dice is pooled over all test pixels (2 TP / (2 TP + FP + FN) summed over
frames) rather than averaged per frame: a rare class is absent from many
frames, and per-frame Dice is undefined there.
"""

from __future__ import annotations

import numpy as np


class ConfusionCounts:
    """Accumulates a C x C confusion matrix (rows: truth, columns: prediction) over images."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        index = truth.astype(np.int64).ravel() * self.num_classes + prediction.astype(np.int64).ravel()
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def _tp_fp_fn(self, c: int) -> tuple[int, int, int]:
        tp = self.matrix[c, c]
        return tp, self.matrix[:, c].sum() - tp, self.matrix[c, :].sum() - tp

    def dice(self, c: int) -> float:
        tp, fp, fn = self._tp_fp_fn(c)
        return float(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else float("nan")

    def iou(self, c: int) -> float:
        tp, fp, fn = self._tp_fp_fn(c)
        return float(tp / (tp + fp + fn)) if (tp + fp + fn) else float("nan")


def segmentation_metrics(counts: ConfusionCounts, class_names: list[str], prefix: str = "") -> dict[str, float]:
    """dice_<class> per foreground class, dice_mean and iou_mean over the foreground classes present."""
    out = {f"{prefix}dice_{name}": counts.dice(c) for c, name in enumerate(class_names) if c > 0}
    dices = [v for v in out.values() if not np.isnan(v)]
    ious = [counts.iou(c) for c in range(1, len(class_names)) if not np.isnan(counts.iou(c))]
    out[f"{prefix}dice_mean"] = float(np.mean(dices)) if dices else float("nan")
    out[f"{prefix}iou_mean"] = float(np.mean(ious)) if ious else float("nan")
    return out
