"""Where each step's outputs live for a dataset: one place, used by the CLI and by the workflow."""

from __future__ import annotations

from pathlib import Path


class DatasetPaths:
    def __init__(self, results_dir: Path | str):
        self.root = Path(results_dir)

    raw = property(lambda self: self.root / "raw")
    manifest = property(lambda self: self.root / "raw" / "manifest.csv")
    ingested = property(lambda self: self.root / "ingested.h5")
    rejected = property(lambda self: self.root / "rejected.csv")
    split = property(lambda self: self.root / "split.json")
    preprocessed = property(lambda self: self.root / "preprocessed.h5")
    model_dir = property(lambda self: self.root / "model")
    model = property(lambda self: self.root / "model" / "model.pt")
    checkpoint = property(lambda self: self.root / "model" / "last.pt")
    metrics = property(lambda self: self.root / "metrics.json")
    saliency = property(lambda self: self.root / "saliency")
