"""Classification: whole images, class imbalance handled by config, threshold chosen on validation.

train.imbalance picks one of
  none              plain cross-entropy, images drawn uniformly;
  balanced_sampler  plain cross-entropy, images drawn so every class is seen equally often;
  weighted_ce       cross-entropy weighted by inverse class frequency;
  focal             focal loss (Lin et al. 2017), which down-weights the many easy negatives.
"""

from __future__ import annotations

import numpy as np

from sciconv.metrics import (auroc, calibration_metrics, choose_threshold, classification_metrics, decisions,
                             positive_scores)
from sciconv.tasks.base import Task, baseline_features, headline_interval


def predict_probabilities(net, images, device, amp: bool = True, mirror_axes=()):
    from sciconv.inference import predict_probabilities as softmax_outputs

    return softmax_outputs(net, images, device, amp, mirror_axes=mirror_axes)


def build_loss(strategy: str, labels: list[int], n_classes: int, focal_gamma: float):
    import torch

    from sciconv import data

    if strategy == "focal":
        from monai.losses import FocalLoss

        focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=focal_gamma)
        return lambda logits, target: focal(logits, target[:, None])
    weight = None
    if strategy == "weighted_ce":
        weight = torch.as_tensor(data.inverse_frequency_weights(labels, n_classes), dtype=torch.float32)
    ce = torch.nn.CrossEntropyLoss(weight=weight)

    def loss(logits, target):
        if ce.weight is not None and ce.weight.device != logits.device:
            ce.weight = ce.weight.to(logits.device)
        return ce(logits.float(), target)
    return loss


class Classification(Task):
    name = "classification"
    headline_metric = "auroc"
    selection_metric = "val_auroc"
    # the pointing game scores the saliency method's maps inside the evaluation
    evaluate_reads = ("explain.method", "explain.pointing_tolerance_px", "explain.target_layer")
    explain_methods = ("gradcam", "gradcampp", "hirescam")
    explain_note = "the map the pointing game scores; the galleries show all three; occlusion is for segmenters"
    stratified_by = "label"
    baseline_needs = "score or features"
    planned_keys = ("train.imbalance", "train.batch_size", "train.epochs")

    @classmethod
    def plan(cls, ctx) -> None:
        """The imbalance strategy from the label counts, then the image-level batch and epochs."""
        from sciconv import planning

        counts = ctx.fingerprint.get("labels") or {}
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise planning.plan_error(ctx.ds, f"key classes: no training or validation image is labelled "
                                             f"{', '.join(empty)}; add images of it, or leave the class out")
        if ctx.plans("train.imbalance") and counts:
            ratio = max(counts.values()) / max(min(counts.values()), 1)
            if ratio >= 1.5:
                # measured on the mammography demo (docs/domains/mammography.md): weighted CE beat the
                # balanced sampler and focal loss on AUROC and average precision at 1:8 imbalance
                ctx.plan.set("train.imbalance", "weighted_ce",
                             f"classes imbalanced {ratio:.1f}:1; weighted cross-entropy measured best on the "
                             "mammography demo (docs/domains/mammography.md)")
            else:
                ctx.plan.set("train.imbalance", "none", f"classes balanced within {ratio:.1f}:1")
        super().plan(ctx)

    @classmethod
    def stratum_keys(cls, store) -> dict[str, str]:
        return {i: str(store.sample_attrs(i).get("label")) for i in store.ids}

    def __init__(self, cfg: dict, class_names: list[str], train_records: list[dict], val_records: list[dict]):
        self.cfg, self.train_cfg = cfg, cfg["train"]
        self.class_names = class_names
        self.train_records, self.val_records = train_records, val_records
        missing = [r["id"] for r in train_records + val_records if r["label"] is None]
        if missing:
            raise ValueError(f"{len(missing)} samples have no label (e.g. {missing[0]}); a classifier needs one per image")
        self.labels = [int(r["label"]) for r in train_records]
        self.loss = build_loss(self.train_cfg["imbalance"], self.labels, len(class_names), self.train_cfg["focal_gamma"])

    @classmethod
    def configured_input_size(cls, cfg: dict) -> list[int] | None:
        return list(cfg["train"]["patch_size"]) if cfg["train"]["object_crops"] else None

    @property
    def input_size(self) -> list[int]:
        if self.train_cfg["object_crops"]:
            return list(self.train_cfg["patch_size"])
        return list(self.train_records[0]["image"].shape[1:])

    def train_batches(self, augment, device, rank: int = 0, world: int = 1):
        from sciconv import data

        return data.classification_batches(self.train_records, len(self.class_names), self.train_cfg, augment,
                                           device, rank, world)

    def _val_probabilities(self, net, device, amp) -> tuple[np.ndarray, np.ndarray]:
        probabilities = predict_probabilities(net, [r["image"] for r in self.val_records], device, amp)
        return probabilities, np.array([int(r["label"]) for r in self.val_records])

    def validate(self, net, device, amp) -> tuple[dict[str, float], float]:
        probabilities, labels = self._val_probabilities(net, device, amp)
        metrics = classification_metrics(probabilities, labels, prefix="val_")
        eps = 1e-7
        metrics["val_loss"] = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + eps)))
        # A small validation set gives AUROC ties (often 1.0 early on); the lower loss breaks them.
        score = metrics["val_auroc"] if not np.isnan(metrics["val_auroc"]) else metrics["val_balanced_accuracy"]
        return metrics, score - 1e-3 * metrics["val_loss"]

    def finalize(self, net, device, amp) -> dict:
        """The decision threshold, chosen on validation for train.target_sensitivity (else Youden's J)."""
        if len(self.class_names) != 2:
            return {"threshold": None}
        probabilities, labels = self._val_probabilities(net, device, amp)
        return {"threshold": choose_threshold(positive_scores(probabilities), labels,
                                              self.train_cfg["target_sensitivity"])}


# --------------------------------------------------------------------------- evaluation and saliency
def target_layer(net, checkpoint: dict, explain_cfg: dict) -> str:
    from sciconv import models

    return explain_cfg["target_layer"] or models.cam_target_layer(net, checkpoint["model_args"]["name"])


def lesion_of(record: dict) -> np.ndarray | None:
    """The object a positive image is positive for (a lesion mask), when the dataset has one."""
    mask = record.get("mask_channel")
    return None if mask is None or not mask.any() else mask[0] > 0


def saliency_hit_rate(net, records: list[dict], checkpoint: dict, explain_cfg: dict) -> float:
    """Pointing game over the positive test images with an object mask; NaN when there are none."""
    from sciconv.inference import saliency_network
    from sciconv.saliency import classifier_saliency, pointing_hit

    net = saliency_network(net)
    layer = target_layer(net, checkpoint, explain_cfg)
    hits = []
    for record in records:
        lesion = lesion_of(record)
        if int(record["label"]) == 0 or lesion is None:
            continue
        saliency = classifier_saliency(net, record["image"], int(record["label"]), explain_cfg["method"], layer)
        hits.append(pointing_hit(saliency, lesion, explain_cfg["pointing_tolerance_px"]))
    return float(np.mean(hits)) if hits else float("nan")


def baseline_outputs(ds, test: list[dict]) -> dict[str, np.ndarray]:
    """The classical methods' outputs per test image: {"": the domain's own, name: each extra learner's}.

    A domain's baseline returns either a score (a detector's response: one value per image, higher is
    positive) or a feature vector (a summary statistic, or the raw signal); features are turned into
    class probabilities by a logistic regression fitted on the training set, as the field does with
    hand-made statistics, and by each classical model the domain adds (MNIST-1D's MLP).
    """
    results = [ds.domain.baseline(r["image"], r["attrs"], ds.cfg, Classification.baseline_needs) for r in test]
    if all(result.score is not None for result in results):
        return {"": np.array([result.score for result in results])}
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    learners = {"": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                **ds.domain.baseline_learners(ds.cfg, Classification.name)}
    train_features, targets, test_features = baseline_features(ds, test, lambda r: int(r["label"]))
    return {name: full_probabilities(estimator.fit(train_features, targets), test_features, len(ds.class_names))
            for name, estimator in learners.items()}


def full_probabilities(model, features: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, also those the training set lacked (probability 0)."""
    probabilities = np.zeros((len(features), n_classes))
    probabilities[:, model.classes_.astype(int)] = model.predict_proba(features)
    return probabilities


def baseline_metrics(outputs: dict[str, np.ndarray], labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """baseline_auroc for two classes (the domain's score or the positive probability); with more,
    baseline_accuracy, baseline_balanced_accuracy and macro baseline_auroc; each extra learner's as
    baseline_<name>_*."""
    from sklearn.metrics import roc_auc_score

    metrics = {}
    for name, output in outputs.items():
        prefix = f"baseline_{name}_" if name else "baseline_"
        if output.ndim == 1 or n_classes == 2:
            scores = output if output.ndim == 1 else output[:, -1]
            metrics[f"{prefix}auroc"] = (float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2
                                         else float("nan"))
        else:
            found = classification_metrics(output, labels)
            metrics |= {f"{prefix}{k}": found[k] for k in ("auroc", "accuracy", "balanced_accuracy")}
    return metrics


def positive_or_predicted(output: np.ndarray) -> np.ndarray:
    """What a per-image row shows of a baseline: its positive score (two classes), else its class."""
    return output if output.ndim == 1 else output[:, -1] if output.shape[1] == 2 else output.argmax(1)


def cv_outputs(ds, net, checkpoint: dict, records: list[dict], device) -> np.ndarray:
    """The class probabilities of each record by one fold's network."""
    from sciconv.inference import tta_axes

    return predict_probabilities(net, [r["image"] for r in records], device, ds.cfg["train"]["amp"], tta_axes(ds.cfg))


def cv_metrics(ds, outputs: list[np.ndarray], records: list[dict], checkpoint: dict) -> tuple[dict, dict]:
    """Cross-validation metrics of the pooled out-of-fold probabilities, at the decision threshold chosen
    on them (train.target_sensitivity, else Youden's J): more cases than any one fold's validation set."""
    probabilities = np.concatenate([np.atleast_2d(o) for o in outputs])
    labels = np.array([int(r["label"]) for r in records])
    threshold = (choose_threshold(positive_scores(probabilities), labels, ds.cfg["train"]["target_sensitivity"])
                 if probabilities.shape[1] == 2 else None)
    metrics = classification_metrics(probabilities, labels, threshold) | calibration_metrics(probabilities, labels)
    return {f"cv_{k}": v for k, v in metrics.items()}, {"threshold": threshold}


def ensemble_extras(checkpoints: list[dict]) -> dict:
    """Nothing beyond the first member's: the threshold comes from the pooled cross-validation."""
    return {}


def prediction_columns(checkpoint: dict) -> list[str]:
    """sciconv predict's columns after the file: each class's probability, the threshold, the decision."""
    return [*[f"p_{c}" for c in checkpoint["class_names"]], "threshold", "prediction"]


def prediction_row(net, image: np.ndarray, checkpoint: dict, device, write_mask) -> list:
    from sciconv.inference import tta_axes

    probabilities = predict_probabilities(net, [image], device, checkpoint["config"]["train"]["amp"],
                                          tta_axes(checkpoint["config"]))
    threshold = checkpoint.get("threshold")
    decided = int(decisions(probabilities, threshold)[0])
    return [*[f"{p:.6f}" for p in probabilities[0]], "" if threshold is None else f"{threshold:.6f}",
            checkpoint["class_names"][decided]]


def evaluate(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> tuple[dict, list[dict], list]:
    """Test metrics beside the classical baseline's AUROC; the per-image table; the plots written."""
    from sciconv import plots
    from sciconv.metrics import confusion_matrix

    class_names = checkpoint["class_names"]
    labels = np.array([int(r["label"]) for r in test])
    from sciconv.inference import tta_axes

    probabilities = predict_probabilities(net, [r["image"] for r in test], device, ds.cfg["train"]["amp"],
                                          tta_axes(ds.cfg))
    threshold = checkpoint.get("threshold")
    metrics = classification_metrics(probabilities, labels, threshold) | calibration_metrics(probabilities, labels)
    metrics |= headline_interval(ds, lambda idx: auroc(probabilities[idx], labels[idx]), len(test))
    baselines = baseline_outputs(ds, test)
    binary = len(class_names) == 2
    both = len(np.unique(labels)) == 2
    metrics |= baseline_metrics(baselines, labels, len(class_names))
    baseline_scores = positive_or_predicted(baselines[""])
    metrics |= {"threshold": float(threshold) if threshold is not None else float("nan"),
                "n_test": len(test), "n_test_positive": int((labels > 0).sum()),
                "saliency_hit_rate": saliency_hit_rate(net, test, checkpoint, ds.cfg["explain"])}
    predicted = decisions(probabilities, threshold)
    rows = [{"id": r["id"], "label": int(r["label"]), "prediction": int(p), "score": float(positive_scores(probabilities)[i]),
             "baseline_score": float(baseline_scores[i])} for i, (r, p) in enumerate(zip(test, predicted))]
    title = f"{ds.name}, {len(test)} test images"
    written = [plots.confusion(out_dir, confusion_matrix(labels, predicted, len(class_names)), class_names, title)]
    if binary and both:
        scores = positive_scores(probabilities)
        written += plots.roc_pr_curves(out_dir, labels, scores, baseline_scores, threshold, title)
        written.append(plots.calibration(out_dir, labels, scores, title))
    return metrics, rows, written


def explanation_groups(probabilities: np.ndarray, labels: np.ndarray, threshold: float | None):
    """({group: test indices, most confident first}, the class each map explains, the score shown).

    Two classes: true positives, false positives and false negatives, each explained by the positive
    class (also a false positive: what made it look positive). More: the correct and the wrong calls,
    each explained by the class the network chose."""
    called = decisions(probabilities, threshold)
    if probabilities.shape[1] > 2:
        confidence = probabilities.max(1)
        right = called == labels
        groups = {"correct": np.flatnonzero(right)[np.argsort(-confidence[right])],
                  "wrong": np.flatnonzero(~right)[np.argsort(-confidence[~right])]}
        return groups, called, confidence
    scores, positive = positive_scores(probabilities), called > 0
    groups = {  # most confident first: the clearest successes and the worst mistakes
        "true_positive": np.flatnonzero(positive & (labels > 0))[np.argsort(-scores[positive & (labels > 0)])],
        "false_positive": np.flatnonzero(positive & (labels == 0))[np.argsort(-scores[positive & (labels == 0)])],
        "false_negative": np.flatnonzero(~positive & (labels > 0))[np.argsort(scores[~positive & (labels > 0)])],
    }
    return groups, np.ones(len(labels), dtype=int), scores


def explain(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> list:
    """Grad-CAM, Grad-CAM++ and HiResCAM galleries of the groups explanation_groups makes."""
    from sciconv.saliency import classifier_saliency, display_channel, render_classification

    params = ds.cfg["explain"]
    layer = target_layer(net, checkpoint, params)
    from sciconv.inference import tta_axes

    probabilities = predict_probabilities(net, [r["image"] for r in test], device, amp=False,
                                          mirror_axes=tta_axes(ds.cfg))
    threshold = checkpoint.get("threshold")
    labels = np.array([int(r["label"]) for r in test])
    groups, explained, scores = explanation_groups(probabilities, labels, threshold)
    written = []
    for group, order in groups.items():
        for index in order[: params["n_samples"]]:
            record = test[index]
            cls = int(explained[index])
            maps = {method: classifier_saliency(net, record["image"], cls, method, layer)
                    for method in ("gradcam", "gradcampp", "hirescam")}
            path = out_dir / f"{group}_{record['id']}.png"
            render_classification(path, record["image"], lesion_of(record), maps,
                                  f"{ds.name} {record['id']}: {group.replace('_', ' ')} (true class "
                                  f"{checkpoint['class_names'][labels[index]]!r}), score {scores[index]:.3f} "
                                  f"(threshold {'argmax' if threshold is None else f'{threshold:.3f}'}); saliency of class "
                                  f"{checkpoint['class_names'][cls]!r} at {layer}",
                                  channel=display_channel(record, ds.domain)[0])
            written.append(path)
    return written
