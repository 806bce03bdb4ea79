"""evaluate: test metrics of the trained model beside the domain's classical baseline -> metrics.json, plots."""

from __future__ import annotations

import csv
import io
import json
import math

import torch

from sciconv import data
from sciconv.config import DatasetConfig
from sciconv.errors import MissingInput
from sciconv.inference import ensemble_checkpoint, load_ensemble, load_model
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
    if ds.cv_folds:
        return run_ensemble(ds, paths, dev)
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


def evaluate(ds: DatasetConfig, paths: DatasetPaths, net, checkpoint: dict, dev,
             extra: dict | None = None) -> tuple[dict, list]:
    """The task's test metrics (and `extra`, the cross-validation's) and per-sample rows, written to
    metrics.json and per_sample_metrics.*; the plots."""
    test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    paths.predicted_masks.mkdir(parents=True, exist_ok=True)  # declared for every dataset; NIfTI sources fill it
    metrics, rows, written = task_module(ds.cfg["task"]).evaluate(ds, net, checkpoint, test, dev, paths.plots)
    written.append(training_curves(paths.plots, checkpoint["history"], f"{ds.name}: training"
                                   + (" (fold 0)" if ds.cv_folds else "")))
    metrics |= extra or {}
    # undefined values (no lesion masks, one class in the test set) are null: NaN is not JSON
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    metrics["mlflow_run_id"] = checkpoint["mlflow_run_id"]
    atomic_write_json(paths.metrics, metrics)
    atomic_write_json(paths.per_sample_metrics, rows)
    write_table(paths.per_sample_table, rows)
    return metrics, written


# --------------------------------------------------------------------------- cross-validation and the ensemble
def fold_models(ds: DatasetConfig, paths: DatasetPaths) -> list:
    missing = [f for f in ds.cv_folds if not paths.of_fold(f).model.is_file()]
    if missing:
        raise MissingInput(f"{ds.name}: fold {', '.join(map(str, missing))} of {len(ds.cv_folds)} has no model "
                           f"({paths.of_fold(missing[0]).model}); train it with `sciconv train {ds.name} --fold "
                           f"{missing[0]}` (the other folds' models are kept), then evaluate again")
    return [paths.of_fold(f).model for f in ds.cv_folds]


def cross_validate(ds: DatasetConfig, paths: DatasetPaths, members: list, dev) -> tuple[dict, dict, list[dict]]:
    """Every non-test sample predicted by the fold that did not train on it, scored once over all of them
    (cv_* metrics, as nnU-Net reports), and what the task chooses on those predictions (the threshold,
    the post-processing). Returns the metrics, the choices and the members' checkpoints."""
    module = task_module(ds.cfg["task"])
    folds = data.load_split(paths.split)["folds"]
    outputs, records, checkpoints = [], [], []
    for fold, member in zip(ds.cv_folds, members):
        net, checkpoint = load_model(member, dev)
        fold_records = data.load_records(paths.preprocessed, folds[fold])
        outputs += list(module.cv_outputs(ds, net, checkpoint, fold_records, dev))
        for record in fold_records:
            record.pop("image")  # the scores need the truth only: memory stays at one fold's images
        records += fold_records
        checkpoints.append(checkpoint)
        del net
    metrics, chosen = module.cv_metrics(ds, outputs, records, checkpoints[0])
    return metrics | {"n_cv": len(records)}, chosen, checkpoints


def ensemble_run(tracker: Tracker, ds: DatasetConfig, checkpoints: list[dict]) -> str:
    """The dataset's parent run over its fold runs: the same one while the same fold runs stand (found by
    the fold runs it holds), a new one when a fold was retrained; each fold run is nested under it."""
    fold_runs = ",".join(c["mlflow_run_id"] for c in checkpoints)
    found = tracker.client.search_runs([tracker.experiment_id], f"tags.ensemble_of = '{fold_runs}'", max_results=1)
    run_id = tracker.start(found[0].info.run_id if found else None,
                           tags={"dataset": ds.name, "domain": ds.cfg["domain"], "task": ds.cfg["task"],
                                 "k_folds": str(len(checkpoints)), "ensemble_of": fold_runs},
                           run_name=f"{ds.name}-ensemble")
    for checkpoint in checkpoints:
        tracker.client.set_tag(checkpoint["mlflow_run_id"], "mlflow.parentRunId", run_id)
    return run_id


def run_ensemble(ds: DatasetConfig, paths: DatasetPaths, dev) -> dict:
    """With split.k_folds and no split.fold: cross-validation metrics, then the folds' ensemble (the mean
    of their probabilities, or of their predictions) on the test set, with the threshold and the
    post-processing chosen on cross-validation; ensemble.json records it for predict."""
    members = fold_models(ds, paths)
    cv, chosen, checkpoints = cross_validate(ds, paths, members, dev)
    scale_shift = task_module(ds.cfg["task"]).member_scale_shift if ds.task.ensemble_average == "outputs" else None
    net, _ = load_ensemble(members, dev, ds.task.ensemble_average, scale_shift)
    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    run_id = ensemble_run(tracker, ds, checkpoints)
    checkpoint = ensemble_checkpoint(ds.cfg["task"], checkpoints, chosen) | {"mlflow_run_id": run_id}
    with tracker.closing():
        metrics, written = evaluate(ds, paths, net, checkpoint, dev, extra=cv | {"k_folds": len(members)})
        tracker.log_metrics({f"test_{k}": v for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not k.startswith("cv_")})
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("cv_") and isinstance(v, (int, float))})
        atomic_write_json(paths.ensemble, {
            "task": ds.cfg["task"], "k_folds": len(members), "mlflow_run_id": run_id,
            "members": [str(m.relative_to(paths.root)) for m in members],
            "chosen": {k: v for k, v in chosen.items()}})
        for path in (paths.metrics, paths.per_sample_metrics, paths.per_sample_table, paths.ensemble):
            tracker.log_artifact(path, "evaluation")
        for path in written:
            tracker.log_artifact(path, "predicted_masks" if paths.predicted_masks in path.parents else "plots")
    log.info("cross-validation: %s; ensemble of %d folds on the test set: %s",
             json.dumps({k: v for k, v in cv.items()}), len(members),
             json.dumps({k: v for k, v in metrics.items() if not k.startswith("cv_") and k != "mlflow_run_id"}))
    return metrics
