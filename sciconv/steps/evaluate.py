"""evaluate: test metrics of the trained model beside the domain's classical baseline -> metrics.json, plots."""

from __future__ import annotations

import csv
import io
import json
import math

import torch

from sciconv import data
from sciconv.config import DatasetConfig
from sciconv.inference import load_model
from sciconv.paths import DatasetPaths
from sciconv.plots import training_curves
from sciconv.runtime import atomic_write_json, atomic_write_text, log, pick_device
from sciconv.tasks import task_module
from sciconv.tracking import Tracker, tracking_uri


def write_table(path, rows: list[dict]) -> None:
    """The per-case metrics as CSV (one row per test case), for a spreadsheet."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None) -> dict:
    paths = DatasetPaths(ds.results_dir)
    dev = pick_device(device or ds.global_cfg["device"])
    if threads:
        torch.set_num_threads(threads)
    net, checkpoint = load_model(paths.model, dev)
    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    tracker.start(checkpoint["mlflow_run_id"])
    with tracker.closing():  # the training run reopened: FINISHED again, or FAILED with the error
        metrics, written = evaluate(ds, paths, net, checkpoint, dev)
        tracker.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        for path in (paths.metrics, paths.per_sample_metrics, paths.per_sample_table):
            tracker.log_artifact(path, "evaluation")
        for path in written:
            # predicted masks (NIfTI on the source grid) beside the plots, each kind in its own folder
            tracker.log_artifact(path, "predicted_masks" if paths.predicted_masks in path.parents else "plots")
    log.info("test metrics: %s", json.dumps({k: v for k, v in metrics.items() if k != "mlflow_run_id"}))
    return metrics


def evaluate(ds: DatasetConfig, paths: DatasetPaths, net, checkpoint: dict, dev) -> tuple[dict, list]:
    """The task's test metrics and per-sample rows, written to metrics.json and per_sample_metrics.*; the plots."""
    test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    paths.predicted_masks.mkdir(parents=True, exist_ok=True)  # declared for every dataset; NIfTI sources fill it
    metrics, rows, written = task_module(ds.cfg["task"]).evaluate(ds, net, checkpoint, test, dev, paths.plots)
    written.append(training_curves(paths.plots, checkpoint["history"], f"{ds.name}: training"))
    # undefined values (no lesion masks, one class in the test set) are null: NaN is not JSON
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    metrics["mlflow_run_id"] = checkpoint["mlflow_run_id"]
    atomic_write_json(paths.metrics, metrics)
    atomic_write_json(paths.per_sample_metrics, rows)
    write_table(paths.per_sample_table, rows)
    return metrics, written
