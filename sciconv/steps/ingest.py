"""ingest: raw files -> ingested.h5, through the format readers, checking every file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sciconv import io as readers
from sciconv.config import DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.runtime import Progress, log, sha256_file
from sciconv.store import Sample, StoreWriter


class IngestError(ValueError):
    """One or more input files are unusable; the message lists each with its reason."""


def manifest_rows(ds: DatasetConfig) -> tuple[Path, list[dict]]:
    paths = DatasetPaths(ds.results_dir)
    if not paths.manifest.is_file():
        raise IngestError(f"{paths.manifest}: not found; run `sciconv simulate {ds.name}` first")
    with open(paths.manifest, newline="") as handle:
        return paths.raw, list(csv.DictReader(handle))


def _check(image: np.ndarray, mask: np.ndarray | None, n_classes: int) -> str | None:
    """Why a sample is unusable, or None."""
    if not np.issubdtype(image.dtype, np.number):
        return f"image dtype {image.dtype} is not numeric"
    if image.size == 0:
        return "image is empty"
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        return "image holds NaN or Inf values"
    if mask is not None:
        if mask.shape != image.shape[1:]:
            return f"mask shape {mask.shape} differs from image shape {image.shape[1:]}"
        if mask.min() < 0 or mask.max() >= n_classes:
            return f"mask labels span {mask.min()}..{mask.max()}, outside the {n_classes} declared classes"
    return None


def run(ds: DatasetConfig) -> None:
    paths = DatasetPaths(ds.results_dir)
    base, rows = manifest_rows(ds)
    class_names = ds.domain.CLASS_NAMES
    problems: list[str] = []
    progress = Progress("ingest", len(rows))
    with StoreWriter(paths.ingested, domain=ds.cfg["domain"], task=ds.cfg["task"],
                     class_names=class_names, dataset=ds.name, stage="ingested") as store:
        for done, row in enumerate(rows, start=1):
            image_path = base / row["image"]
            try:
                image, meta = readers.read(image_path)
                mask = readers.read_mask(base / row["mask"]) if row.get("mask") else None
            except readers.ReadError as err:
                problems.append(str(err))
                continue
            reason = _check(image, mask, len(class_names))
            if reason:
                problems.append(f"{image_path}: {reason}")
                continue
            attrs = {"source": str(image_path), "sha256": sha256_file(image_path), "meta": json.dumps(meta)}
            for key in ("group", "label", "target"):
                if row.get(key) not in (None, ""):
                    attrs[key] = int(row[key]) if key == "label" else row[key]
            store.add(Sample(Path(row["image"]).name.split(".")[0], image, mask, attrs))
            progress(done)
        if problems:
            # Raising inside the writer discards the partial file: no ingested.h5 that looks complete.
            raise IngestError(f"{len(problems)} of {len(rows)} input files are unusable:\n  "
                              + "\n  ".join(problems))
    log.info("ingested %d samples into %s", store.count, paths.ingested)
