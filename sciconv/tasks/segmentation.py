"""Segmentation: sampled patches, Dice + cross-entropy, sliding-window Dice on whole validation images.

With `regions` (BraTS's nested whole tumour, tumour core, enhancing tumour) validation and test
score each region per case, and dice_mean is the regions' mean.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from sciconv.metrics import (ConfusionCounts, mean_defined, mean_over_cases, region_indices, region_metrics,
                             segmentation_metrics, surface_dice)
from sciconv.tasks.base import Task, headline_interval


def build_loss(name: str):
    import torch
    from monai.losses import DiceCELoss, DiceLoss

    # batch=True pools Dice over the whole batch: a rare class absent from one
    # patch then does not contribute a meaningless 0-or-1 term per patch.
    if name == "dice_ce":
        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        return lambda logits, target: dice_ce(logits, target.long())
    if name == "dice":
        dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True)
        return lambda logits, target: dice(logits, target.long())
    ce = torch.nn.CrossEntropyLoss()
    return lambda logits, target: ce(logits, target[:, 0].long())


class Segmentation(Task):
    name = "segmentation"
    headline_metric = "dice_mean"
    # averaging over mirrored inputs is nnU-Net's default at inference; it costs 2^k passes
    default_tta = "mirror"
    selection_metric = "val_dice_mean"
    dense = True
    default_network = "unet"
    explain_methods = ("gradcam", "hirescam", "occlusion")
    explain_note = "Grad-CAM++ weights need an image-level score; occlusion is bounded to the predicted structure in 3D"
    stratified_by = "rarest class present"
    baseline_needs = "mask"

    @classmethod
    def stratum_keys(cls, store) -> dict[str, str]:
        """Each sample's rarest foreground class present (over the whole dataset), so every set gets
        frames of the rare classes; 'none' for a sample of background alone."""
        present, totals = {}, Counter()
        for sample in store:  # one sample in memory at a time
            counts = np.bincount(sample.mask.ravel().astype(np.int64))
            present[sample.id] = [c for c in range(1, len(counts)) if counts[c] > 0]
            totals.update({c: int(counts[c]) for c in present[sample.id]})
        return {i: str(min(classes, key=lambda c: totals[c])) if classes else "none" for i, classes in present.items()}

    @classmethod
    def stored_mask(cls, mask: np.ndarray | None, cfg: dict) -> tuple[np.ndarray | None, str | None]:
        """Class indices: the values listed in mask_values (e.g. BraTS 0, 1, 2, 4) become 0, 1, 2, ..."""
        values = cfg.get("mask_values")
        if mask is None or not values:
            return mask, None
        lookup = np.full(max(int(mask.max()), max(values)) + 1, -1, dtype=np.int64)
        lookup[values] = np.arange(len(values))
        if mask.min() < 0:
            return mask, f"mask holds negative values; mask_values are {values}"
        mapped = lookup[mask]
        if (mapped < 0).any():
            stray = sorted(set(np.unique(mask[mapped < 0]).tolist()))[:5]
            return mask, f"mask holds values {stray} that are not in mask_values {values}"
        return mapped, None

    @classmethod
    def class_counts(cls, mask: np.ndarray | None, label: int | None, n_classes: int) -> np.ndarray | None:
        """Pixels (voxels) per class."""
        if mask is None:
            return np.zeros(n_classes, dtype=np.int64)
        return np.bincount(np.asarray(mask).ravel(), minlength=n_classes)[:n_classes].astype(np.int64)

    @classmethod
    def count_name(cls) -> str:
        return "pixels_per_class"

    def __init__(self, cfg: dict, class_names: list[str], train_records: list[dict], val_records: list[dict]):
        self.cfg, self.train_cfg = cfg, cfg["train"]
        self.class_names = class_names
        self.train_records, self.val_records = train_records, val_records
        self.patch_size = list(self.train_cfg["patch_size"])
        self.loss = build_loss(self.train_cfg["loss"])
        self.regions = region_indices(cfg["regions"], class_names) if cfg.get("regions") else None

    @classmethod
    def configured_input_size(cls, cfg: dict) -> list[int] | None:
        return list(cfg["train"]["patch_size"])

    planned_keys = ("train.patch_size", "model.channels", "model.strides", "train.batch_size", "train.epochs",
                    "train.patch_sampling", "train.class_sampling_ratios", "train.loss")

    @classmethod
    def plan(cls, ctx) -> None:
        """nnU-Net's plan, within a time budget: the patch starts from the median image (capped by what the
        device can train), the U-Net downsamples it to 8-16 voxels on its shortest axis, the batch fills
        the memory budget, and while the budget pays for fewer than MIN_EPOCHS_WANTED epochs (or than
        the epochs the YAML writes) the longest patch axis loses a quarter; then sampling and loss from
        the class frequencies."""
        from sciconv import planning
        from sciconv.tasks.segmentation_plan import plan_patch_and_network, plan_sampling

        classes = ctx.fingerprint["classes"]
        empty = [name for name, c in classes.items() if c["voxels"] == 0]
        if empty:
            raise planning.plan_error(ctx.ds, f"key classes: {', '.join(empty)} has no voxels in any training or "
                                             "validation mask; add samples that contain it, or leave it out of "
                                             "classes (and mask_values)")
        plan_sampling(ctx, classes)
        if ctx.plans("train.loss"):
            fraction = sum(c["voxel_fraction"] for name, c in list(classes.items())[1:])
            ctx.plan.set("train.loss", "dice_ce", f"Dice + cross-entropy (nnU-Net's loss): Dice keeps the "
                                                  f"{100 * fraction:.2g}% foreground from vanishing, CE keeps the "
                                                  "gradients smooth")
        if any(ctx.plans(k) for k in ("train.patch_size", "train.batch_size", "train.epochs", "model.channels")):
            plan_patch_and_network(ctx)

    @property
    def input_size(self) -> list[int]:
        return self.patch_size

    def train_batches(self, augment, device, rank: int = 0, world: int = 1):
        from sciconv import data

        return data.segmentation_batches(self.train_records, len(self.class_names), self.train_cfg, augment, device,
                                         rank, world)

    def validate(self, net, device, amp) -> tuple[dict[str, float], float]:
        import torch

        from sciconv.inference import segment_logits

        net.eval()
        counts = ConfusionCounts(len(self.class_names))
        per_case = []
        for record in self.val_records:
            logits = segment_logits(net, torch.from_numpy(record["image"])[None], self.patch_size, device, amp)
            prediction = logits.argmax(1)[0].cpu().numpy()
            counts.update(prediction, record["mask_channel"][0])
            if self.regions:
                per_case.append(region_metrics(prediction, record["mask_channel"][0], self.regions))
        metrics = segmentation_metrics(counts, self.class_names, prefix="val_")
        if self.regions:
            metrics |= mean_over_cases(per_case, self.regions, prefix="val_")
        return metrics, metrics[self.selection_metric]

    def finalize(self, net, device, amp) -> dict:
        return {"patch_size": self.patch_size}


# --------------------------------------------------------------------------- inference, cross-validation
def predicted_mask(net, image: np.ndarray, checkpoint: dict, device, cfg: dict, amp: bool | None = None) -> np.ndarray:
    """The class map evaluate, explain and predict use: sliding windows, the configured test-time
    mirroring, then the post-processing chosen on cross-validation (saved with the ensemble)."""
    from sciconv.inference import segment, tta_axes

    mask = segment(net, image, checkpoint["patch_size"], device, cfg["train"]["amp"] if amp is None else amp,
                   tta_axes(cfg))
    return postprocess(mask, checkpoint.get("postprocessing") or {}, checkpoint["class_names"])


def keep_largest_component(mask: np.ndarray, c: int) -> np.ndarray:
    """Class c reduced to its largest connected component (full connectivity: MONAI's
    KeepLargestConnectedComponent, nnU-Net's post-processing); the rest of c becomes background."""
    from monai.transforms import KeepLargestConnectedComponent

    keep = KeepLargestConnectedComponent(applied_labels=[c], is_onehot=False, connectivity=None)
    return np.asarray(keep(mask[None]))[0].astype(mask.dtype)


def postprocess(mask: np.ndarray, choice: dict, class_names: list[str]) -> np.ndarray:
    """The chosen post-processing: {class name: "largest_component"} for the classes it helps."""
    for c, name in enumerate(class_names):
        if choice.get(name) == "largest_component":
            mask = keep_largest_component(mask, c)
    return mask


def cv_outputs(ds, net, checkpoint: dict, records: list[dict], device) -> list[np.ndarray]:
    """Each record's class map by one fold's network (no post-processing: it is chosen on these)."""
    from sciconv.inference import segment, tta_axes

    return [segment(net, r["image"], checkpoint["patch_size"], device, ds.cfg["train"]["amp"], tta_axes(ds.cfg))
            for r in records]


def cv_metrics(ds, outputs: list[np.ndarray], records: list[dict], checkpoint: dict) -> tuple[dict, dict]:
    """Cross-validation metrics of the pooled out-of-fold class maps, and the post-processing chosen on
    them as nnU-Net chooses it: per foreground class, keep only its largest connected component when
    that raises the class's pooled cross-validation Dice. The metrics are after that choice, with
    cv_dice_mean_before_postprocessing beside them."""
    class_names = checkpoint["class_names"]
    truths = [r["mask_channel"][0] for r in records]

    def pooled(maps) -> dict:
        counts = ConfusionCounts(len(class_names))
        for prediction, truth in zip(maps, truths):
            counts.update(prediction, truth)
        return segmentation_metrics(counts, class_names)

    regions = region_indices(ds.cfg["regions"], class_names) if ds.cfg.get("regions") else None

    def scored(maps) -> dict:  # as evaluate scores the test set: pooled per class, per case per region
        metrics = pooled(maps)
        if regions:
            metrics |= mean_over_cases([region_metrics(p, t, regions) for p, t in zip(maps, truths)], regions)
        return metrics

    choice, current, score = {}, outputs, pooled(outputs)
    for c, name in enumerate(class_names[1:], start=1):
        candidate = [keep_largest_component(m, c) for m in current]
        trial = pooled(candidate)
        if np.isfinite(trial[f"dice_{name}"]) and trial[f"dice_{name}"] > score[f"dice_{name}"]:
            choice[name], current, score = "largest_component", candidate, trial
    metrics = {f"cv_{k}": v for k, v in scored(current).items()}
    metrics["cv_dice_mean_before_postprocessing"] = scored(outputs)["dice_mean"] if choice else metrics["cv_dice_mean"]
    return metrics, {"postprocessing": choice}


def ensemble_extras(checkpoints: list[dict]) -> dict:
    """What the ensemble's checkpoint takes from its members beyond the first's: nothing for segmenters."""
    return {}


# --------------------------------------------------------------------------- evaluation and saliency
def evaluate(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> tuple[dict, list[dict], list]:
    """Pooled Dice per class of the model and of the classical baseline; per-image Dice (and per-case
    region Dice and HD95 in mm when the dataset has regions); the plots and predicted masks written."""
    from sciconv import plots

    class_names = checkpoint["class_names"]
    regions = region_indices(ds.cfg["regions"], class_names) if ds.cfg.get("regions") else None
    model_counts, baseline_counts = ConfusionCounts(len(class_names)), ConfusionCounts(len(class_names))
    rows, baseline_rows, per_image, written = [], [], [], []
    for record in test:
        prediction = predicted_mask(net, record["image"], checkpoint, device, ds.cfg)
        classical = ds.domain.baseline(record["image"], record["attrs"], ds.cfg, Segmentation.baseline_needs).mask
        truth = record["mask_channel"][0]
        model_counts.update(prediction, truth)
        baseline_counts.update(classical, truth)
        one = ConfusionCounts(len(class_names))
        one.update(prediction, truth)
        per_image.append(one.matrix)
        row = {"id": record["id"], **segmentation_metrics(one, class_names)}
        # the grid's spacing in mm where preprocessing gives one (MRI), else one unit per pixel
        spacing = record["attrs"].get("spacing") or [1.0] * truth.ndim
        tolerance = ds.cfg["evaluate"]["surface_tolerance_mm"] or 2 * min(spacing)
        if regions:
            row |= region_metrics(prediction, truth, regions, spacing, tolerance)
            row["dice_mean"] = float(np.mean([row[f"dice_{r}"] for r in regions]))
            baseline_rows.append(region_metrics(classical, truth, regions, spacing))
        else:
            row |= {f"nsd_{name}": surface_dice(prediction == c, truth == c, tolerance, spacing)
                    for c, name in enumerate(class_names) if c > 0}
        rows.append(row)
        written += write_predicted_mask(prediction, record, ds, out_dir.parent / "predicted_masks")
    metrics = segmentation_metrics(model_counts, class_names)
    baseline = segmentation_metrics(baseline_counts, class_names, prefix="baseline_")
    metrics |= {k: v for k, v in baseline.items() if k != "baseline_iou_mean"}
    if regions:
        metrics |= mean_over_cases(rows, regions) | mean_over_cases(baseline_rows, regions, prefix="baseline_")
        case_dice = np.array([r["dice_mean"] for r in rows])
        metrics |= headline_interval(ds, lambda idx: float(case_dice[idx].mean()), len(test))
    else:
        metrics |= {f"nsd_{name}": mean_defined(rows, f"nsd_{name}") for name in class_names[1:]}
        matrices = np.stack(per_image)

        def pooled_dice_mean(idx):
            counts = ConfusionCounts(len(class_names))
            counts.matrix = matrices[idx].sum(0)
            return segmentation_metrics(counts, class_names)["dice_mean"]

        metrics |= headline_interval(ds, pooled_dice_mean, len(test))
    nsd = [v for k, v in metrics.items() if k.startswith("nsd_") and np.isfinite(v)]
    metrics["nsd_mean"] = float(np.mean(nsd)) if nsd else float("nan")
    metrics["surface_tolerance_mm"] = float(tolerance)  # the last case's: one value unless spacings differ
    metrics["n_test"] = len(test)
    what = "mean over regions" if regions else "mean over foreground classes present"
    written.append(plots.bar_per_case(out_dir, [r["id"] for r in rows], [r["dice_mean"] for r in rows],
                                      f"Dice ({what})", f"{ds.name}: Dice per test image", "dice_per_case.png"))
    written.append(plots.confusion(out_dir, model_counts.matrix, class_names,
                                   f"{ds.name}, {'voxels' if truth.ndim == 3 else 'pixels'}"))
    return metrics, rows, written


def prediction_columns(checkpoint: dict) -> list[str]:
    """sciconv predict's columns after the file: the mask written, and the pixel count of each class."""
    return ["mask", *[f"pixels_{c}" for c in checkpoint["class_names"]]]


def prediction_row(net, image: np.ndarray, checkpoint: dict, device, write_mask) -> list:
    mask = predicted_mask(net, image, checkpoint, device, checkpoint["config"])
    target = write_mask(mask)
    return [str(target), *np.bincount(mask.ravel(), minlength=len(checkpoint["class_names"])).tolist()]


def write_predicted_mask(prediction: np.ndarray, record: dict, ds, out_dir) -> list:
    """Where the source's format can hold a mask on the source file's own grid (NIfTI, a DICOM series),
    the predicted mask written there with its label values, to overlay the source in a viewer."""
    from sciconv import io as readers

    source = record["attrs"].get("source")
    if not source:
        return []
    written = readers.write_mask(prediction, source, Path(out_dir) / f"{record['id']}_pred", grid=record["attrs"],
                                 values=ds.cfg.get("mask_values"), onto_source_grid_only=True,
                                 class_names=ds.class_names)
    return [written] if written else []


def pick_samples(records: list[dict], num_classes: int, n: int) -> list[dict]:
    """The test images richest in the rarest foreground class present: those are the ones worth explaining."""
    counts = np.array([np.bincount(r["mask_channel"].ravel(), minlength=num_classes)[1:num_classes] for r in records])
    totals = counts.sum(0)
    rarest = int(np.argmin(np.where(totals > 0, totals, np.inf)))
    order = np.argsort(-counts[:, rarest], kind="stable")
    return [records[i] for i in order[:n]]


def explain(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> list:
    """Per-class saliency (Seg-Grad-CAM or occlusion) beside the true and predicted masks."""
    from sciconv import models
    from sciconv.saliency import class_saliency, display_channel, render_segmentation, render_segmentation_volume

    params = ds.cfg["explain"]
    class_names, patch_size = checkpoint["class_names"], checkpoint["patch_size"]
    target_layer = params["target_layer"] or models.last_conv_before_output(
        net, (1, test[0]["image"].shape[0], *patch_size))
    method = params["method"]  # one the task honours, checked at load time
    written = []
    for record in pick_samples(test, len(class_names), params["n_samples"]):
        prediction = predicted_mask(net, record["image"], checkpoint, device, ds.cfg, amp=False)
        maps = class_saliency(net, record["image"], prediction, len(class_names), method, target_layer, patch_size,
                              multiple=models.downsampling_factor(checkpoint["model_args"]))
        path = out_dir / f"{record['id']}.png"
        title = f"{ds.name} {record['id']}: {method} on {target_layer}"
        if prediction.ndim == 3:
            shown, name = display_channel(record, ds.domain)
            render_segmentation_volume(path, record["image"], record["mask_channel"][0], prediction, maps, class_names, title,
                                       channel=shown, channel_name=name)
        else:
            render_segmentation(path, record["image"], record["mask_channel"][0], prediction, maps, class_names, title)
        written.append(path)
    return written
