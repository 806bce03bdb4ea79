"""explain: saliency maps for a few test images, as PNGs in results/<dataset>/saliency/ and in MLflow."""

from __future__ import annotations

import json

from sciconv import data, models, plots
from sciconv.config import DatasetConfig
from sciconv.inference import load_model
from sciconv.paths import DatasetPaths
from sciconv.runtime import log, pick_device
from sciconv.tasks import task_module
from sciconv.tracking import Tracker, tracking_uri


def run(ds: DatasetConfig, device: str | None = None) -> None:
    paths = DatasetPaths(ds.results_dir)
    dev = pick_device(device or ds.global_cfg["device"])
    # an ensemble is explained through its first fold's network (saliency needs one network's layers),
    # logged to the ensemble's parent run where evaluate has made it
    net, checkpoint = load_model(paths.of_fold(0).model if ds.cv_folds else paths.model, dev)
    run_id = checkpoint["mlflow_run_id"]
    if ds.cv_folds and paths.ensemble.is_file():
        run_id = json.loads(paths.ensemble.read_text())["mlflow_run_id"]
    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    tracker.start(run_id)
    with tracker.closing():  # the training run reopened: FINISHED again, or FAILED with the error
        test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
        paths.saliency.mkdir(parents=True, exist_ok=True)
        for stale in paths.saliency.glob("*.png"):  # a rerun must not mix in images of an earlier model
            stale.unlink()
        written = task_module(ds.cfg["task"]).explain(ds, net, checkpoint, test, dev, paths.saliency)
        # what the network learned: its first filters, and what a few layers make of one test image
        multiple = models.downsampling_factor(checkpoint["model_args"])
        learned = [plots.first_layer_filters(paths.network, net, ds.name),
                   plots.feature_maps(paths.network, net, test[0]["image"], f"{ds.name} {test[0]['id']}",
                                      multiple=multiple)]
        if written:
            tracker.log_artifact(paths.saliency, "saliency")
        for path in learned:
            tracker.log_artifact(path, "network")
    log.info("wrote %d saliency images to %s", len(written), paths.saliency)
