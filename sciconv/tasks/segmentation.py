"""Segmentation: patches sampled by class ratio, Dice + cross-entropy, Dice on whole validation images."""

from __future__ import annotations

import numpy as np
import torch

from sciconv import data
from sciconv.inference import segment_logits
from sciconv.metrics import ConfusionCounts, segmentation_metrics


def build_loss(name: str):
    from monai.losses import DiceCELoss, DiceLoss

    # batch=True pools Dice over the whole batch: a rare class absent from one
    # patch then does not contribute a meaningless 0-or-1 term per patch.
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True, batch=True)
    ce = torch.nn.CrossEntropyLoss()
    return lambda logits, target: ce(logits, target[:, 0].long())


class Segmentation:
    selection_metric = "val_dice_mean"

    def __init__(self, cfg: dict, class_names: list[str], train_records: list[dict], val_records: list[dict]):
        self.cfg, self.train_cfg = cfg, cfg["train"]
        self.class_names = class_names
        self.train_records, self.val_records = train_records, val_records
        self.patch_size = list(self.train_cfg["patch_size"])
        self.loss = build_loss(self.train_cfg["loss"])

    @property
    def input_size(self) -> list[int]:
        return self.patch_size

    def train_loader(self, augment: list):
        return data.segmentation_train_loader(self.train_records, len(self.class_names), self.train_cfg, augment)

    def inputs_targets(self, batch, device):
        return batch["image"].to(device, non_blocking=True), batch["mask"].to(device, non_blocking=True)

    def validate(self, net, device, amp) -> tuple[dict[str, float], float]:
        net.eval()
        counts = ConfusionCounts(len(self.class_names))
        for record in self.val_records:
            logits = segment_logits(net, torch.from_numpy(record["image"])[None], self.patch_size, device, amp)
            counts.update(logits.argmax(1)[0].cpu().numpy(), record["mask"][0])
        metrics = segmentation_metrics(counts, self.class_names, prefix="val_")
        return metrics, metrics[self.selection_metric]

    def finalize(self, net, device, amp) -> dict:
        return {"patch_size": self.patch_size}


# --------------------------------------------------------------------------- evaluation and saliency
def evaluate(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> tuple[dict, list[dict], list]:
    """Pooled Dice per class of the model and of the classical baseline; per-image Dice; the plots written."""
    from sciconv import plots
    from sciconv.inference import segment

    class_names = checkpoint["class_names"]
    model_counts, baseline_counts = ConfusionCounts(len(class_names)), ConfusionCounts(len(class_names))
    rows = []
    for record in test:
        prediction = segment(net, record["image"], checkpoint["patch_size"], device, ds.cfg["train"]["amp"])
        classical = ds.domain.baseline(record["image"], record["attrs"], ds.cfg)
        truth = record["mask"][0]
        model_counts.update(prediction, truth)
        baseline_counts.update(classical, truth)
        one = ConfusionCounts(len(class_names))
        one.update(prediction, truth)
        rows.append({"id": record["id"], **segmentation_metrics(one, class_names)})
    metrics = segmentation_metrics(model_counts, class_names)
    baseline = segmentation_metrics(baseline_counts, class_names, prefix="baseline_")
    metrics |= {k: v for k, v in baseline.items() if k != "baseline_iou_mean"}
    metrics["n_test"] = len(test)
    written = [plots.bar_per_case(out_dir, [r["id"] for r in rows], [r["dice_mean"] for r in rows],
                                  "Dice (mean over foreground classes present)",
                                  f"{ds.name}: Dice per test image", "dice_per_case.png")]
    written.append(plots.confusion(out_dir, model_counts.matrix, class_names, f"{ds.name}, pixels"))
    return metrics, rows, written


def pick_samples(records: list[dict], num_classes: int, n: int) -> list[dict]:
    """The test images richest in the rarest foreground class present: those are the ones worth explaining."""
    counts = np.array([np.bincount(r["mask"].ravel(), minlength=num_classes)[1:num_classes] for r in records])
    totals = counts.sum(0)
    rarest = int(np.argmin(np.where(totals > 0, totals, np.inf)))
    order = np.argsort(-counts[:, rarest], kind="stable")
    return [records[i] for i in order[:n]]


def explain(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> list:
    """Per-class saliency (Seg-Grad-CAM or occlusion) beside the true and predicted masks."""
    from sciconv import models
    from sciconv.inference import segment
    from sciconv.saliency import class_saliency, render_segmentation

    params = ds.cfg["explain"]
    class_names, patch_size = checkpoint["class_names"], checkpoint["patch_size"]
    target_layer = params["target_layer"] or models.last_conv_before_output(
        net, (1, test[0]["image"].shape[0], *patch_size))
    method = "occlusion" if params["method"] == "occlusion" else "gradcam"
    written = []
    for record in pick_samples(test, len(class_names), params["n_samples"]):
        prediction = segment(net, record["image"], patch_size, device, amp=False)
        maps = class_saliency(net, record["image"], prediction, len(class_names), method, target_layer, patch_size)
        path = out_dir / f"{record['id']}.png"
        render_segmentation(path, record["image"], record["mask"][0], prediction, maps, class_names,
                            f"{ds.name} {record['id']}: {method} on {target_layer}")
        written.append(path)
    return written
