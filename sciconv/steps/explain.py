"""explain: per-class saliency for a few test images, as PNGs in results/<dataset>/saliency/ and in MLflow."""

from __future__ import annotations

import numpy as np

from sciconv import data, models
from sciconv.config import DatasetConfig
from sciconv.inference import load_model, segment
from sciconv.paths import DatasetPaths
from sciconv.runtime import log, pick_device
from sciconv.saliency import class_saliency, render_segmentation
from sciconv.tracking import Tracker, tracking_uri


def pick_samples(records: list[dict], num_classes: int, n: int) -> list[dict]:
    """The test images richest in the rarest foreground class present: those are the ones worth explaining."""
    counts = np.array([np.bincount(r["mask"].ravel(), minlength=num_classes)[1:num_classes] for r in records])
    totals = counts.sum(0)
    rarest = int(np.argmin(np.where(totals > 0, totals, np.inf)))
    order = np.argsort(-counts[:, rarest], kind="stable")
    return [records[i] for i in order[:n]]


def run(ds: DatasetConfig, device: str | None = None) -> None:
    paths = DatasetPaths(ds.results_dir)
    params = ds.cfg["explain"]
    dev = pick_device(device or ds.global_cfg["device"])
    net, checkpoint = load_model(paths.model, dev)
    class_names, patch_size = checkpoint["class_names"], checkpoint["patch_size"]
    test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    target_layer = params["target_layer"] or models.last_conv_before_output(
        net, (1, test[0]["image"].shape[0], *patch_size))
    paths.saliency.mkdir(parents=True, exist_ok=True)
    for record in pick_samples(test, len(class_names), params["n_samples"]):
        prediction = segment(net, record["image"], patch_size, dev, amp=False)
        maps = class_saliency(net, record["image"], prediction, len(class_names), params["method"],
                              target_layer, patch_size)
        render_segmentation(paths.saliency / f"{record['id']}.png", record["image"], record["mask"][0], prediction,
                            maps, class_names, f"{ds.name} {record['id']}: {params['method']} on {target_layer}")
    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    tracker.start(checkpoint["mlflow_run_id"])
    tracker.log_artifact(paths.saliency, "saliency")
    tracker.finish()
    log.info("wrote %d saliency images to %s", len(list(paths.saliency.glob("*.png"))), paths.saliency)
