"""Metrics: segmentation from a pooled confusion matrix; nested regions per case; classification from scores.

Per class, Dice is pooled over all test pixels (2 TP / (2 TP + FP + FN) summed over
frames) rather than averaged per frame: a rare class is absent from many
frames, and per-frame Dice is undefined there.

Regions (unions of classes, as BraTS's whole tumour, tumour core, enhancing tumour) follow
BraTS instead: Dice and the 95th-percentile Hausdorff distance in millimetres per case, then
the mean over cases; a case where truth and prediction are both empty scores Dice 1 and
HD95 0, one where only one of them is empty Dice 0 and HD95 the volume's diagonal (BraTS
uses 373.13 mm, the diagonal of its 240 x 240 x 155 mm volumes, by the same rule).
"""

from __future__ import annotations

import contextlib
import warnings

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


# --------------------------------------------------------------------------- regions, per case
def region_indices(regions: dict[str, list[str]], class_names: list[str]) -> dict[str, list[int]]:
    return {name: [class_names.index(m) for m in members] for name, members in regions.items()}


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty (nothing to find, nothing found)."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, truth).sum() / total)


def hd95_mm(prediction: np.ndarray, truth: np.ndarray, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two boolean masks, in mm."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return 0.0
    if not has_prediction or not has_truth:
        return float(np.linalg.norm(np.asarray(prediction.shape) * np.asarray(spacing, float)))
    as_batch = lambda m: torch.from_numpy(np.ascontiguousarray(m))[None, None].float()  # noqa: E731
    with monai_own_deprecation():
        distance = compute_hausdorff_distance(as_batch(prediction), as_batch(truth), include_background=True,
                                              percentile=95, spacing=[float(s) for s in spacing])
    return float(distance.item())


@contextlib.contextmanager
def monai_own_deprecation():
    """MONAI 1.5's surface metrics pass a deprecated argument of their own to get_mask_edges; only that
    warning is silenced (one per case would fill every evaluation log)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*get_mask_edges:always_return_as_numpy", category=FutureWarning)
        yield


def surface_dice(prediction: np.ndarray, truth: np.ndarray, tolerance_mm: float, spacing) -> float:
    """Normalised surface Dice of two boolean masks (Nikolov et al. 2021, MONAI's compute_surface_dice): the
    share of both surfaces within tolerance_mm of the other. Undefined (NaN) when both are empty, 0 when
    only one is: nothing found where something is, or something where nothing is."""
    import torch
    from monai.metrics import compute_surface_dice

    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return float("nan")
    if not has_prediction or not has_truth:
        return 0.0
    as_onehot = lambda m: torch.from_numpy(np.stack([~m, m]))[None].float()  # noqa: E731
    with monai_own_deprecation():
        value = compute_surface_dice(as_onehot(prediction), as_onehot(truth), [float(tolerance_mm)],
                                     spacing=[float(s) for s in spacing])
    return float(value.item())


def region_metrics(prediction: np.ndarray, truth: np.ndarray, regions: dict[str, list[int]],
                   spacing=None, tolerance_mm: float | None = None) -> dict[str, float]:
    """dice_<region> (and hd95_<region> in mm when spacing is given, nsd_<region> when a surface tolerance
    is too) of one case's class maps."""
    out = {}
    for name, members in regions.items():
        predicted, true = np.isin(prediction, members), np.isin(truth, members)
        out[f"dice_{name}"] = dice(predicted, true)
        if spacing is not None:
            out[f"hd95_{name}"] = hd95_mm(predicted, true, spacing)
            if tolerance_mm is not None:
                out[f"nsd_{name}"] = surface_dice(predicted, true, tolerance_mm, spacing)
    return out


def mean_defined(rows: list[dict], key: str) -> float:
    """The mean of a per-case metric over the cases where it is defined (NaN where none is)."""
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def mean_over_cases(rows: list[dict], regions: dict, prefix: str = "") -> dict[str, float]:
    """The mean of each region metric over cases (NSD over the cases where it is defined), and dice_mean
    over the regions."""
    keys = [k for k in rows[0] if k.startswith(("dice_", "hd95_", "nsd_")) and k.split("_", 1)[1] in regions] if rows else []
    out = {f"{prefix}{k}": mean_defined(rows, k) if k.startswith("nsd_") else float(np.mean([r[k] for r in rows]))
           for k in keys}
    out[f"{prefix}dice_mean"] = float(np.mean([out[f"{prefix}dice_{r}"] for r in regions])) if rows else float("nan")
    return out


# --------------------------------------------------------------------------- classification
def positive_scores(probabilities: np.ndarray) -> np.ndarray:
    """The score a binary decision thresholds: the probability of the last (positive) class."""
    return probabilities[:, -1]


def decisions(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """The predicted class of each row, decided in one place for evaluate, explain and predict: a binary
    problem with a threshold (chosen on validation) calls positive at p(positive) >= threshold, any
    threshold 0.0 included; without one (more classes, or none saved) the most probable class."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] == 2 and threshold is not None:
        return (positive_scores(probabilities) >= threshold).astype(int)
    return probabilities.argmax(1)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target_sensitivity: float | None = None) -> float:
    """Decision threshold on validation scores of a binary problem.

    With a target sensitivity: the highest threshold that still reaches it (screening
    programmes fix the sensitivity they need and take the best specificity there).
    Otherwise Youden's J = sensitivity + specificity - 1, maximal. Without both classes
    in the validation set there is nothing to choose from, and 0.5 stays.
    """
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    finite = np.isfinite(thresholds)  # sklearn's first threshold is +inf (nothing called positive)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if target_sensitivity is not None:
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[reaching[0]]) if len(reaching) else float(thresholds[-1])
    return float(thresholds[np.argmax(tpr - fpr)])


def auroc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """AUROC alone (binary, or macro one-vs-rest), NaN where a class is absent: what the bootstrap
    recomputes thousands of times, without the rest of classification_metrics or its warnings.

    Through the Mann-Whitney statistic on average ranks (ties count a half, as in roc_auc_score, which
    it equals): one sort per class instead of a ROC curve, 30x faster on a 1,000-case, 10-class set."""
    labels = np.asarray(labels).astype(int)
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        return rank_auroc(positive_scores(probabilities), labels == 1)
    if len(np.unique(labels)) < n_classes:
        return float("nan")
    return float(np.mean([rank_auroc(probabilities[:, c], labels == c) for c in range(n_classes)]))


def rank_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties; NaN without both kinds."""
    from scipy.stats import rankdata

    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                           prefix: str = "") -> dict[str, float]:
    """auroc, pr_auc, accuracy, balanced_accuracy, sensitivity, specificity (binary at `threshold`; macro
    one-vs-rest otherwise).

    Undefined values (a class absent from the set) are NaN rather than a misleading 0 or 1.
    """
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    n_classes = probabilities.shape[1]
    both = len(np.unique(labels)) >= 2
    if n_classes == 2:
        scores = positive_scores(probabilities)
        predicted = decisions(probabilities, threshold)
        auroc = roc_auc_score(labels, scores) if both else np.nan
        pr_auc = average_precision_score(labels, scores) if both else np.nan
        positives, negatives = labels == 1, labels == 0
        sensitivity = predicted[positives].mean() if positives.any() else np.nan
        specificity = (1 - predicted[negatives]).mean() if negatives.any() else np.nan
    else:
        predicted = probabilities.argmax(1)
        present = np.unique(labels)
        onehot = np.eye(n_classes)[labels]
        auroc = (roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=range(n_classes))
                 if len(present) == n_classes else np.nan)
        pr_auc = (average_precision_score(onehot[:, present], probabilities[:, present], average="macro")
                  if both else np.nan)
        recalls = [np.mean(predicted[labels == c] == c) for c in present]
        specificities = [np.mean(predicted[labels != c] != c) for c in present if (labels != c).any()]
        sensitivity, specificity = np.mean(recalls), (np.mean(specificities) if specificities else np.nan)
    out = {"auroc": auroc, "pr_auc": pr_auc, "accuracy": np.mean(predicted == labels) if len(labels) else np.nan,
           "balanced_accuracy": balanced_accuracy_score(labels, predicted) if len(labels) else np.nan,
           "sensitivity": sensitivity, "specificity": specificity}
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10, prefix: str = "") -> dict:
    """Expected calibration error and Brier score. Binary: the positive-class probability against the
    positive rate in `bins` equal-width bins (ECE = sum over bins of |rate - mean probability| weighted
    by the bin's share), Brier the mean squared error of that probability; more classes: the top-class
    confidence against accuracy, and the multi-class Brier (sum over classes, Brier 1950)."""
    probabilities, labels = np.asarray(probabilities, float), np.asarray(labels).astype(int)
    if not len(labels):
        return {f"{prefix}ece": float("nan"), f"{prefix}brier": float("nan")}
    if probabilities.shape[1] == 2:
        confidence, outcome = positive_scores(probabilities), (labels == 1).astype(float)
        brier = float(np.mean((confidence - outcome) ** 2))
    else:
        confidence = probabilities.max(1)
        outcome = (probabilities.argmax(1) == labels).astype(float)
        brier = float(np.mean(((probabilities - np.eye(probabilities.shape[1])[labels]) ** 2).sum(1)))
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = sum(abs(outcome[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
              for b in range(bins) if np.any(which == b))
    return {f"{prefix}ece": float(ece), f"{prefix}brier": brier}


def bootstrap_interval(statistic, n: int, samples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(indices) over n test cases resampled with replacement.
    Resamples where the statistic is undefined (one class only, for AUROC) are left out; with fewer
    than half defined, or n < 2, the interval is undefined (NaN, NaN)."""
    if samples <= 0 or n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [v for v in (statistic(rng.integers(0, n, n)) for _ in range(samples)) if np.isfinite(v)]
    if len(values) < samples / 2:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    counts = ConfusionCounts(n_classes)
    counts.update(np.asarray(predicted), np.asarray(labels))
    return counts.matrix
