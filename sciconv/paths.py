"""Where each step's outputs live for a dataset: one place, used by the CLI and by the workflow."""

from __future__ import annotations

from pathlib import Path


class DatasetPaths:
    """The dataset's files; with `fold`, a cross-validation fold's model (results/<dataset>/folds/fold_<f>/model)."""

    def __init__(self, results_dir: Path | str, fold: int | None = None):
        self.root = Path(results_dir)
        self.fold = fold

    def of_fold(self, fold: int) -> "DatasetPaths":
        return DatasetPaths(self.root, fold)

    raw = property(lambda self: self.root / "raw")
    manifest = property(lambda self: self.root / "raw" / "manifest.csv")
    ingested = property(lambda self: self.root / "ingested.h5")
    rejected = property(lambda self: self.root / "rejected.csv")
    split = property(lambda self: self.root / "split.json")
    preprocessed = property(lambda self: self.root / "preprocessed.h5")
    fingerprint = property(lambda self: self.root / "fingerprint.json")
    plan = property(lambda self: self.root / "plan.json")
    model_dir = property(lambda self: self.root / "model" if self.fold is None
                         else self.root / "folds" / f"fold_{self.fold}" / "model")
    model = property(lambda self: self.model_dir / "model.pt")
    checkpoint = property(lambda self: self.model_dir / "last.pt")
    # the folds' ensemble: its members, the threshold and post-processing chosen on cross-validation
    ensemble = property(lambda self: self.root / "ensemble.json")
    metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    per_sample_metrics = property(lambda self: self.root / "per_sample_metrics.json")
    per_sample_table = property(lambda self: self.root / "per_sample_metrics.csv")
    predicted_masks = property(lambda self: self.root / "predicted_masks")
    saliency = property(lambda self: self.root / "saliency")
    network = property(lambda self: self.root / "network")
    augmented_samples = property(lambda self: self.model_dir / "augmented_samples.png")

    def inputs(self, step: str, folds: list[int] = ()) -> list[tuple[Path, str]]:
        """The files `step` reads from earlier steps, each with the step that writes it; with the
        cross-validation `folds` of an ensemble, evaluate and explain read each fold's model."""
        made_by = {"ingested": "ingest", "split": "split", "preprocessed": "preprocess", "model": "train",
                   "fingerprint": "plan", "plan": "plan"}
        reads = {"split": ["ingested"], "preprocess": ["ingested"],
                 "plan": ["ingested", "split", "preprocessed"],
                 "train": ["split", "preprocessed", "fingerprint", "plan"],
                 "evaluate": ["split", "preprocessed", "model"], "explain": ["split", "preprocessed", "model"]}
        found = [(getattr(self, name), made_by[name]) for name in reads.get(step, [])]
        if folds and step in ("evaluate", "explain"):
            found = [item for item in found if item[1] != "train"] + [
                (self.of_fold(f).model, f"train --fold {f}") for f in folds]
        return found

    def outputs(self, step: str) -> list[Path]:
        """Every file and folder `step` writes (the workflow's rules declare the same): a step that starts
        afresh removes them first, so nothing of an earlier run can pass for this one's. last.pt is left
        out on purpose: it is what an interrupted training resumes from."""
        return {
            "simulate": [self.raw],
            "ingest": [self.ingested, self.rejected],
            "split": [self.split],
            "preprocess": [self.preprocessed],
            "plan": [self.fingerprint, self.plan],
            "train": [self.model, self.model_dir / "run.json", self.augmented_samples],
            "evaluate": [self.metrics, self.per_sample_metrics, self.per_sample_table, self.plots,
                         self.predicted_masks, self.ensemble],
            "explain": [self.saliency, self.network],
        }[step]
