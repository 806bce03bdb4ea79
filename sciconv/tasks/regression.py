"""Regression: whole images to a vector of physical parameters, standardised targets, MSE.

Targets come from the samples' `target` attribute (a JSON object of parameter values, or
one number), named by the dataset's `targets:` list. They are standardised with the
training set's mean and standard deviation, and that scaler is saved with the model, so
predictions come back in physical units. The classical baseline is the domain's summary
statistic (`baseline` returns a feature vector) fed to a ridge regression fitted on the
training set.
"""

from __future__ import annotations

import json

import numpy as np

from sciconv.tasks.base import Task, fit_on_baseline_features, headline_interval


def target_vector(attrs: dict, names: list[str]) -> np.ndarray:
    raw = attrs.get("target")
    if raw is None:
        raise ValueError(f"sample has no target; regression needs one value per name in targets: {names}")
    values = json.loads(raw) if isinstance(raw, str) else raw
    if isinstance(values, dict):
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"target {values} lacks {missing}; targets: {names}")
        return np.array([float(values[n]) for n in names], dtype=np.float32)
    return np.atleast_1d(np.asarray(values, dtype=np.float32))


def r2_rmse(predicted: np.ndarray, truth: np.ndarray, names: list[str], prefix: str = "") -> dict[str, float]:
    """r2_<name> and rmse_<name> per target (physical units) and r2_mean."""
    out = {}
    for j, name in enumerate(names):
        residual = np.sum((truth[:, j] - predicted[:, j]) ** 2)
        total = np.sum((truth[:, j] - truth[:, j].mean()) ** 2)
        # undefined where the truth does not vary (a bootstrap resample of one case drawn n times): the
        # rounding residue of its sum of squares would make R² any huge negative number
        out[f"{prefix}r2_{name}"] = float(1 - residual / total) if np.ptp(truth[:, j]) > 0 else float("nan")
        out[f"{prefix}rmse_{name}"] = float(np.sqrt(residual / len(truth)))
    r2 = [out[f"{prefix}r2_{n}"] for n in names if np.isfinite(out[f"{prefix}r2_{n}"])]
    out[f"{prefix}r2_mean"] = float(np.mean(r2)) if r2 else float("nan")
    return out


def predict(net, images: list[np.ndarray], device, amp: bool, mean: np.ndarray, std: np.ndarray,
            batch_size: int = 8, mirror_axes=()) -> np.ndarray:
    """Network outputs back in physical units (averaged over the mirrored inputs)."""
    from sciconv.inference import batched_outputs

    if not images:
        return np.zeros((0, len(mean)))
    return batched_outputs(net, images, device, amp, batch_size, mirror_axes).numpy() * std + mean


class Regression(Task):
    name = "regression"
    headline_metric = "r2_mean"
    ensemble_average = "outputs"
    selection_metric = "val_r2_mean"
    output_names = "targets"
    explain_methods = ("hirescam",)
    explain_note = "one map per predicted parameter: the gradient-weighted activations with no pooling of the gradient"

    @classmethod
    def sample_target(cls, attrs: dict, names: list[str]) -> list[float] | None:
        return target_vector(attrs, names).astype(float).tolist() if attrs.get("target") is not None else None

    @classmethod
    def class_counts(cls, mask, label, n_classes):
        return None

    def __init__(self, cfg: dict, class_names: list[str], train_records: list[dict], val_records: list[dict]):
        self.cfg, self.train_cfg = cfg, cfg["train"]
        self.names = class_names  # for regression: the target names
        self.train_records, self.val_records = train_records, val_records
        self.train_targets = np.stack([target_vector(r["attrs"], self.names) for r in train_records])
        self.val_targets = np.stack([target_vector(r["attrs"], self.names) for r in val_records])
        self.mean = self.train_targets.mean(0)
        self.std = np.maximum(self.train_targets.std(0), 1e-8)

    @property
    def input_size(self) -> list[int]:
        return list(self.train_records[0]["image"].shape[1:])

    def train_batches(self, augment, device, rank: int = 0, world: int = 1):
        from sciconv.batches import TrainBatches

        standardised = ((self.train_targets - self.mean) / self.std).astype(np.float32)
        return TrainBatches([r["image"] for r in self.train_records], None, standardised, self.train_cfg["batch_size"],
                            augment, device, self.train_cfg["cache"],
                            drop_last=len(self.train_records) > self.train_cfg["batch_size"], rank=rank, world=world)

    def loss(self, outputs, targets):
        import torch

        return torch.nn.functional.mse_loss(outputs.float(), targets)

    def validate(self, net, device, amp) -> tuple[dict[str, float], float]:
        predicted = predict(net, [r["image"] for r in self.val_records], device, amp, self.mean, self.std)
        metrics = r2_rmse(predicted, self.val_targets, self.names, prefix="val_")
        metrics["val_loss"] = float(np.mean(((predicted - self.val_targets) / self.std) ** 2))
        return metrics, metrics["val_r2_mean"]

    def finalize(self, net, device, amp) -> dict:
        return {"target_names": self.names, "target_mean": self.mean.tolist(), "target_std": self.std.tolist()}


def baseline_predictions(ds, test: list[dict], names: list[str]) -> np.ndarray:
    """The domain's summary statistic of each sample, ridge-regressed on the training set."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model, features = fit_on_baseline_features(ds, test, make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
                                               lambda r: target_vector(r["attrs"], names))
    return np.asarray(model.predict(features)).reshape(len(test), len(names))  # one target: sklearn gives 1D


def cv_outputs(ds, net, checkpoint: dict, records: list[dict], device) -> np.ndarray:
    """The targets of each record in physical units by one fold's network."""
    from sciconv.inference import tta_axes

    return predict(net, [r["image"] for r in records], device, ds.cfg["train"]["amp"],
                   np.array(checkpoint["target_mean"]), np.array(checkpoint["target_std"]), mirror_axes=tta_axes(ds.cfg))


def cv_metrics(ds, outputs: list[np.ndarray], records: list[dict], checkpoint: dict) -> tuple[dict, dict]:
    names = checkpoint["target_names"]
    predicted = np.concatenate([np.atleast_2d(o) for o in outputs])
    truth = np.stack([target_vector(r["attrs"], names) for r in records])
    return {f"cv_{k}": v for k, v in r2_rmse(predicted, truth, names).items()}, {}


def ensemble_extras(checkpoints: list[dict]) -> dict:
    """The ensemble averages its members' outputs in physical units (each through its own fold's scaler,
    sciconv.inference.EnsembleNet), so its own scaler is the identity."""
    n = len(checkpoints[0]["target_mean"])
    return {"target_mean": [0.0] * n, "target_std": [1.0] * n}


def member_scale_shift(checkpoint: dict) -> tuple[list[float], list[float]]:
    return list(checkpoint["target_std"]), list(checkpoint["target_mean"])


def prediction_columns(checkpoint: dict) -> list[str]:
    """sciconv predict's columns after the file: the predicted targets."""
    return list(checkpoint["target_names"])


def prediction_row(net, image: np.ndarray, checkpoint: dict, device, write_mask) -> list:
    """The targets in physical units, through the scaler saved with the model."""
    from sciconv.inference import tta_axes

    values = predict(net, [image], device, checkpoint["config"]["train"]["amp"], np.array(checkpoint["target_mean"]),
                     np.array(checkpoint["target_std"]), mirror_axes=tta_axes(checkpoint["config"]))[0]
    return [f"{v:.6g}" for v in values]


def evaluate(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> tuple[dict, list[dict], list]:
    from sciconv import plots

    names = checkpoint["target_names"]
    mean, std = np.array(checkpoint["target_mean"]), np.array(checkpoint["target_std"])
    truth = np.stack([target_vector(r["attrs"], names) for r in test])
    from sciconv.inference import tta_axes

    predicted = predict(net, [r["image"] for r in test], device, ds.cfg["train"]["amp"], mean, std,
                        mirror_axes=tta_axes(ds.cfg))
    metrics = r2_rmse(predicted, truth, names)
    metrics |= headline_interval(ds, lambda idx: r2_rmse(predicted[idx], truth[idx], names)["r2_mean"], len(test))
    classical = baseline_predictions(ds, test, names)
    baseline = r2_rmse(classical, truth, names, prefix="baseline_")
    metrics |= {k: v for k, v in baseline.items() if k.startswith("baseline_r2")}
    metrics["n_test"] = len(test)
    rows = [{"id": r["id"], **{f"true_{n}": float(truth[i, j]) for j, n in enumerate(names)},
             **{f"predicted_{n}": float(predicted[i, j]) for j, n in enumerate(names)},
             **{f"baseline_{n}": float(classical[i, j]) for j, n in enumerate(names)}} for i, r in enumerate(test)]
    written = [plots.predicted_vs_true(out_dir, truth, predicted, classical, names, f"{ds.name}, {len(test)} test samples")]
    return metrics, rows, written


def explain(ds, net, checkpoint: dict, test: list[dict], device, out_dir) -> list:
    """HiResCAM of each target for a few test samples (rendered through the domain-neutral classifier view)."""
    from sciconv import models
    from sciconv.saliency import hirescam_raw, render_classification

    params = ds.cfg["explain"]
    layer = params["target_layer"] or models.cam_target_layer(net, checkpoint["model_args"]["name"])
    written = []
    for record in test[: params["n_samples"]]:
        maps = {f"{name}": hirescam_raw(net, record["image"], j, layer)
                for j, name in enumerate(checkpoint["target_names"])}
        path = out_dir / f"{record['id']}.png"
        render_classification(path, record["image"], None, maps,
                              f"{ds.name} {record['id']}: HiResCAM of each predicted parameter at {layer}")
        written.append(path)
    return written
