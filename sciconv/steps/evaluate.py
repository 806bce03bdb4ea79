"""evaluate: test metrics of the trained model beside the domain's classical baseline -> metrics.json."""

from __future__ import annotations

import json

import torch

from sciconv import data
from sciconv.config import DatasetConfig
from sciconv.inference import load_model, segment
from sciconv.metrics import ConfusionCounts, segmentation_metrics
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_json, log, pick_device
from sciconv.tracking import Tracker, tracking_uri


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None) -> dict:
    paths = DatasetPaths(ds.results_dir)
    dev = pick_device(device or ds.global_cfg["device"])
    if threads:
        torch.set_num_threads(threads)
    net, checkpoint = load_model(paths.model, dev)
    class_names = checkpoint["class_names"]
    split = data.load_split(paths.split)
    test = data.load_records(paths.preprocessed, split["test"])
    model_counts, baseline_counts = ConfusionCounts(len(class_names)), ConfusionCounts(len(class_names))
    per_sample = []
    for record in test:
        prediction = segment(net, record["image"], checkpoint["patch_size"], dev, ds.cfg["train"]["amp"])
        classical = ds.domain.baseline(record["image"], record["attrs"], ds.cfg)
        truth = record["mask"][0]
        model_counts.update(prediction, truth)
        baseline_counts.update(classical, truth)
        one = ConfusionCounts(len(class_names))
        one.update(prediction, truth)
        per_sample.append({"id": record["id"], **segmentation_metrics(one, class_names)})
    metrics = segmentation_metrics(model_counts, class_names)
    baseline = segmentation_metrics(baseline_counts, class_names, prefix="baseline_")
    metrics |= {k: v for k, v in baseline.items() if k != "baseline_iou_mean"}
    metrics |= {"n_test": len(test), "mlflow_run_id": checkpoint["mlflow_run_id"]}
    atomic_write_json(paths.metrics, metrics)
    atomic_write_json(paths.root / "per_sample_metrics.json", per_sample)

    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    tracker.start(checkpoint["mlflow_run_id"])
    tracker.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, float)})
    tracker.log_artifact(paths.metrics, "evaluation")
    tracker.log_artifact(paths.root / "per_sample_metrics.json", "evaluation")
    tracker.finish()
    log.info("test metrics: %s", json.dumps({k: v for k, v in metrics.items() if k != "mlflow_run_id"}))
    return metrics
