"""MLflow: the store, one experiment per dataset, one run per training, batched logging, the model.

A fresh sqlite store migrates its schema on first open, and several processes
doing that at once race (seen with mlflow 3.17: 5 of 6 simultaneous openers
fail). `ensure_store` creates it once, under a file lock; the workflow calls it
in `onstart`, before any job runs, and every CLI step calls it too, so steps
run by hand are safe as well.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from sciconv.runtime import log

PIP_REQUIREMENTS_PACKAGES = ("torch", "monai", "numpy")
# The workflow sets this once per `snakemake` invocation; its jobs inherit it (workflow/rules/common.smk).
SNAKEMAKE_RUN_ID = "SCICONV_SNAKEMAKE_RUN_ID"
SYSTEM_METRICS_INTERVAL_S = 2.0


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_store(uri: str) -> None:
    """Create (and migrate) the tracking store once; a no-op when it exists."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return  # a server or another backend manages its own schema
    with _file_lock(db.with_name(db.name + ".lock")):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def retry(action, what: str, attempts: int = 5):
    """Retry transient store errors (sqlite 'database is locked' under parallel jobs) with backoff."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            return action()
        except (MlflowException, OperationalError) as err:
            if attempt == attempts - 1 or "locked" not in str(err).lower():
                raise
            wait = 0.5 * 2**attempt
            log.warning("%s: store busy (%s); retrying in %.1f s", what, err, wait)
            time.sleep(wait)


class Tracker:
    """One MLflow run of one dataset, resumable by id across steps (train, evaluate, explain)."""

    def __init__(self, uri: str, results_root: Path | str, experiment: str):
        import mlflow

        ensure_store(uri)
        self.uri = uri
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        mlflow.set_tracking_uri(uri)
        found = retry(lambda: self.client.get_experiment_by_name(experiment), "get experiment")
        if found is None:
            artifacts = (Path(results_root) / "mlartifacts" / experiment).resolve().as_uri()
            self.experiment_id = retry(lambda: self.client.create_experiment(experiment, artifact_location=artifacts),
                                       "create experiment")
        else:
            self.experiment_id = found.experiment_id
        self.run_id: str | None = None

    def start(self, run_id: str | None = None, tags: dict | None = None, run_name: str | None = None) -> str:
        """Create a run, or reopen one; either way tagged with the Snakemake invocation that touched it last."""
        invocation = {"snakemake_run_id": os.environ[SNAKEMAKE_RUN_ID]} if os.environ.get(SNAKEMAKE_RUN_ID) else {}
        if run_id is None:
            run = retry(lambda: self.client.create_run(self.experiment_id, tags={**(tags or {}), **invocation},
                                                       run_name=run_name), "create run")
            run_id = run.info.run_id
            self.run_id = run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            if invocation:
                self.set_tags(invocation)
        return run_id

    @contextmanager
    def system_metrics(self, sampling_interval_s: float = SYSTEM_METRICS_INTERVAL_S, resume: bool = False):
        """CPU, memory, disk and network (and GPU where pynvml sees one) as system/* metrics of the run,
        sampled by MLflow's monitor thread while the block runs."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=sampling_interval_s, resume_logging=resume,
                                       tracking_uri=self.uri)
        monitor.start()
        try:
            yield monitor
        finally:
            monitor.finish()
            # One sample at the end as well: a training shorter than the sampling interval would
            # otherwise have no system metrics at all.
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            retry(lambda: self.client.log_batch(self.run_id, params=items[start:start + 100]), "log params")

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """All metrics of a step in one call (one sqlite transaction, not one per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch), "log metrics")

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]),
              "set tags")

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, source: Path, split: dict, profile: dict) -> None:
        """The training data as an MLflow dataset input (the Datasets column of the UI).

        The digest is over the split's sample ids, so two runs on the same samples show the same
        dataset; the profile carries the per-set statistics.
        """
        import hashlib

        from mlflow.entities import Dataset, DatasetInput, InputTag

        ids = json.dumps({k: split[k] for k in ("train", "val", "test") if k in split}, sort_keys=True)
        dataset = Dataset(name=name, digest=hashlib.sha256(ids.encode()).hexdigest()[:16], source_type="local",
                          source=json.dumps({"uri": Path(source).resolve().as_uri()}),
                          profile=json.dumps(profile, default=str))
        retry(lambda: self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset, tags=[InputTag("mlflow.data.context", "training")])]), "log dataset")

    def log_dict(self, data: dict, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), name)

    def log_model(self, net, input_example, output_channels: int, spatial_free: bool = True) -> None:
        """The network in MLflow's PyTorch flavour (torch.export, "pt2").

        Pip requirements are given explicitly: inferring them imports the model
        in a subprocess and takes over 10 s. The input example has a batch of
        2, since a batch of 1 would fix the exported model's batch size at 1;
        the signature marks batch and spatial sizes as free (-1) so the logged
        model takes whole frames, not only training patches.
        """
        import mlflow
        import numpy as np
        from importlib.metadata import version
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        # A segmenter maps any size to the same size; an image-level network takes its training size
        # and returns one row of outputs per image.
        spatial = (-1,) * (input_example.ndim - 2) if spatial_free else tuple(input_example.shape[2:])
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, input_example.shape[1], *spatial))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32),
                                       (-1, output_channels, *spatial) if spatial_free else (-1, output_channels))]))
        requirements = [f"{name}=={version(name)}" for name in PIP_REQUIREMENTS_PACKAGES]
        with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
            mlflow.pytorch.log_model(net, name="model", input_example=input_example, signature=signature,
                                     pip_requirements=requirements)

    def end(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status=status), "end run")

    @contextmanager
    def closing(self):
        """The run ends in a true state whatever happens in the block: FINISHED when it completes,
        KILLED on SIGINT or SIGTERM (StepInterrupted, KeyboardInterrupt), FAILED on any other
        exception, with the error as the tag `error`. The exception goes on to the caller."""
        from sciconv.errors import StepInterrupted

        try:
            yield self
        except KeyboardInterrupt as err:
            signal = err.args[0] if isinstance(err, StepInterrupted) else "SIGINT"
            self._end_quietly("KILLED", {"error": f"interrupted by {signal}"})
            raise
        except BaseException as err:
            self._end_quietly("FAILED", {"error": f"{type(err).__name__}: {err}"[:5000]})
            raise
        else:
            self.end("FINISHED")

    def _end_quietly(self, status: str, tags: dict) -> None:
        """End the run while an exception is under way: a store problem here must not hide that exception."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.set_tags(tags)
            self.end(status)
        except (MlflowException, SQLAlchemyError, OSError) as err:
            log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, err)


def tracking_uri(global_cfg: dict) -> str:
    """The store: MLFLOW_TRACKING_URI, else the configured URI, else a sqlite file under results_dir,
    so that the store, its lock and the artifacts it points to stay together wherever results go."""
    configured = os.environ.get("MLFLOW_TRACKING_URI") or global_cfg.get("mlflow_tracking_uri")
    return configured or f"sqlite:///{global_cfg['results_dir']}/mlflow.db"


class ModelURIError(ValueError):
    """A model reference does not lead to a sciconv checkpoint; the message says what was tried."""


def checkpoint_path(model: str, uri: str) -> Path:
    """The sciconv checkpoint behind a model reference.

    Accepted: a results/<dataset>/model folder or a model.pt; the results/<dataset> folder (or its
    ensemble.json) of a dataset whose cross-validation folds evaluate ensembled; `runs:/<run id>[/...]`;
    `models:/<name>/<version>` or `models:/<name>/latest` from the model registry. An MLflow
    reference is resolved to its run, whose logged `checkpoint/model.pt` holds the weights and
    everything needed to rebuild the network and its preprocessing.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if model.startswith(("runs:/", "models:/")):
        mlflow.set_tracking_uri(uri)
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        try:
            if model.startswith("runs:/"):
                run_id = model[len("runs:/"):].split("/")[0]
            else:
                name, _, version = model[len("models:/"):].partition("/")
                if version in ("", "latest"):
                    versions = client.search_model_versions(f"name='{name}'")
                    if not versions:
                        raise ModelURIError(f"{model}: no registered model named {name!r} in {uri}")
                    version = str(max(int(v.version) for v in versions))
                run_id = client.get_model_version(name, version).run_id
            return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint/model.pt",
                                                            tracking_uri=uri))
        except (MlflowException, OSError) as err:
            raise ModelURIError(f"{model}: no sciconv checkpoint found through {uri} ({err})") from err
    path = Path(model)
    if path.is_dir():
        # results/<dataset> of a cross-validated dataset holds its folds' ensemble
        path = path / "model.pt" if (path / "model.pt").is_file() or not (path / "ensemble.json").is_file() \
            else path / "ensemble.json"
    if not path.is_file():
        raise ModelURIError(f"{model}: not a model folder, a model.pt, a cross-validated dataset's results folder "
                            "(its ensemble.json), runs:/<run id> or models:/<name>/<version>")
    return path


def register_model(run_id: str, name: str, uri: str) -> str:
    """Register the run's logged model as a new version of `name`; returns the version."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    version = retry(lambda: mlflow.register_model(f"runs:/{run_id}/model", name), "register model")
    return str(version.version)
