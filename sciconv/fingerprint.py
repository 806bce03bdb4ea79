"""A dataset's fingerprint: what the planner needs to know about the data, read once, streamed.

nnU-Net's idea (Isensee et al. 2021, "dataset fingerprint"): shapes, spacings, intensity statistics
and class statistics of the training cases decide the plan. Here it is computed over the ingested
store's training and validation samples only (the test set's labels must not shape the model that
is scored on them), one sample in memory at a time: running sums for means, a bounded random draw of
voxels per sample for percentiles (nnU-Net draws 10,000 foreground voxels per case), and running
summaries of object sizes, so the memory is flat in the number of samples.
"""

from __future__ import annotations

import numpy as np

from sciconv.store import StoreReader

PERCENTILES = (0.5, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.5)
VOXELS_DRAWN_TOTAL = 1_000_000  # across all samples: percentiles of a million draws are exact to ~0.1%
OBJECT_SIZES_KEPT = 10_000      # per class, a uniform reservoir for the median size


class RunningMoments:
    """Mean and standard deviation of a stream of arrays (Chan's pairwise update, float64)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = values.astype(np.float64, copy=False)
        n, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta, total = mean - self.mean, self.n + n
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.n * n / total
        self.n = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0


class Reservoir:
    """A uniform random sample of at most `size` items from a stream (Vitter's algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def extend(self, values) -> None:
        for value in values:
            self.seen += 1
            if len(self.items) < self.size:
                self.items.append(value)
            else:
                slot = int(self.rng.integers(self.seen))
                if slot < self.size:
                    self.items[slot] = value


def _summary(values) -> dict | None:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


class FingerprintBuilder:
    """Accumulates one sample at a time; `result()` is the JSON-ready fingerprint."""

    def __init__(self, class_names: list[str], task, n_samples: int, seed: int):
        self.class_names, self.task, self.dense = class_names, task, task.dense
        self.rng = np.random.default_rng(seed)
        self.draw_per_sample = max(1000, VOXELS_DRAWN_TOTAL // max(n_samples, 1))
        self.shapes, self.spacings, self.labels, self.targets = [], [], [], []
        self.moments: list[RunningMoments] = []
        self.draws: list[list[np.ndarray]] = []
        self.voxels = np.zeros(len(class_names), np.int64)
        self.samples_with = np.zeros(len(class_names), np.int64)
        self.objects = [Reservoir(OBJECT_SIZES_KEPT, self.rng) for _ in class_names]
        self.foreground_used = False

    def add(self, image: np.ndarray, mask: np.ndarray | None, attrs: dict) -> None:
        # per sample: a shape and a spacing are a few numbers, kept for exact medians
        self.shapes.append(list(image.shape[1:]))
        spacing = (attrs.get("meta") or {}).get("spacing")
        if spacing is not None and len(spacing) >= image.ndim - 1:
            self.spacings.append([float(s) for s in spacing[: image.ndim - 1]])
        if "label" in attrs:
            self.labels.append(int(attrs["label"]))
        target = self.task.sample_target(attrs, self.class_names)
        if target is not None:
            self.targets.append(target)
        inside = mask > 0 if (mask is not None and self.dense and mask.any()) else None
        self.foreground_used |= inside is not None
        while len(self.moments) < image.shape[0]:
            self.moments.append(RunningMoments())
            self.draws.append([])
        for c, channel in enumerate(image):
            values = channel[inside] if inside is not None else channel.ravel()
            values = values[np.isfinite(values)]
            self.moments[c].add(values)
            take = min(values.size, self.draw_per_sample)
            self.draws[c].append(self.rng.choice(values, take, replace=False).astype(np.float32))
        if mask is not None and self.dense:
            self._add_classes(mask)

    def _add_classes(self, mask: np.ndarray) -> None:
        from skimage.measure import label

        counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(self.class_names))[: len(self.class_names)]
        self.voxels += counts
        self.samples_with += counts > 0
        for c in range(1, len(self.class_names)):
            if counts[c]:
                components = label(mask == c, connectivity=mask.ndim)
                self.objects[c].extend(np.bincount(components.ravel())[1:].tolist())

    def result(self) -> dict:
        shapes = np.asarray(self.shapes)
        out = {
            "n_samples": len(self.shapes),
            "spatial_dims": int(shapes.shape[1]),
            "channels": len(self.moments),
            "shape": {"median": np.median(shapes, 0).tolist(), "min": shapes.min(0).tolist(),
                      "max": shapes.max(0).tolist()},
            "spacing": None,
            "intensity": [],
            "intensity_inside": "foreground" if self.foreground_used else "whole image",
        }
        if len(self.spacings) == len(self.shapes):
            spacings = np.asarray(self.spacings)
            out["spacing"] = {"median": np.median(spacings, 0).tolist(), "min": spacings.min(0).tolist(),
                              "max": spacings.max(0).tolist(), "per_sample": self.spacings}
        for moments, draws in zip(self.moments, self.draws):
            drawn = np.concatenate(draws) if draws else np.zeros(1, np.float32)
            out["intensity"].append({"mean": moments.mean, "std": moments.std,
                                     "percentiles": dict(zip(map(str, PERCENTILES),
                                                             np.percentile(drawn, PERCENTILES).tolist()))})
        if self.dense:
            total = max(int(self.voxels.sum()), 1)
            out["classes"] = {name: {"voxels": int(self.voxels[c]), "voxel_fraction": float(self.voxels[c] / total),
                                     "samples_with": int(self.samples_with[c]),
                                     "sample_fraction": float(self.samples_with[c] / max(len(self.shapes), 1)),
                                     "objects": self.objects[c].seen if c else None,
                                     "object_voxels": _summary(self.objects[c].items) if c else None}
                              for c, name in enumerate(self.class_names)}
        elif self.labels:
            counts = np.bincount(self.labels, minlength=len(self.class_names))
            out["labels"] = {name: int(counts[c]) for c, name in enumerate(self.class_names)}
        if self.targets:
            values = np.asarray(self.targets)
            out["targets"] = {name: {"mean": float(values[:, j].mean()), "std": float(values[:, j].std()),
                                     "min": float(values[:, j].min()), "max": float(values[:, j].max())}
                              for j, name in enumerate(self.class_names)}
        return out


def compute(ingested, sample_ids: list[str], class_names: list[str], task, seed: int) -> dict:
    """The fingerprint of `sample_ids` in the ingested store at `ingested`, read one sample at a time;
    `task` (a sciconv.tasks Task class) says whether masks are class maps and what a target is."""
    builder = FingerprintBuilder(class_names, task, len(sample_ids), seed)
    with StoreReader(ingested) as store:
        for sample_id in sample_ids:
            sample = store.sample(sample_id)
            builder.add(sample.image, sample.mask, sample.attrs)
    result = builder.result()
    result["samples"] = "train and validation (the test set is left out)"
    return result
