"""ingest: raw files -> ingested.h5, through the format readers, checking every file."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from sciconv import io as readers
from sciconv import sources
from sciconv.config import DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.runtime import Progress, atomic_write_text, log, sha256_file
from sciconv.store import Sample, StoreWriter


class IngestError(ValueError):
    """One or more input files are unusable; the message lists each with its reason."""


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


def read_row(row: dict, hdf5_keys: dict | None, as_suffix: str | None):
    """(image, metadata, mask or None, label stored in the file or None) for one input row."""
    image_path = Path(row["image"])
    is_hdf5 = (as_suffix or image_path.suffix).lower() in (".h5", ".hdf5", ".hdf")
    if hdf5_keys and is_hdf5:
        from sciconv.io.arrays import read_hdf5_sample

        image, meta, mask, label = read_hdf5_sample(image_path, hdf5_keys.get("image", "image"),
                                                    hdf5_keys.get("mask"), hdf5_keys.get("label"))
        if mask is not None and not row.get("mask"):
            return image, meta, mask.astype(np.int64), label
        return image, meta, readers.read_mask(row["mask"], as_suffix) if row.get("mask") else None, label
    image, meta = readers.read(image_path, as_suffix)
    return image, meta, readers.read_mask(row["mask"], as_suffix) if row.get("mask") else None, None


def sample_ids(files: list[Path]) -> list[str]:
    """Sample ids: file names without suffixes, prefixed by their folders (below the common one) where names repeat."""
    stems = [f.name.split(".")[0] for f in files]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    return [str(f.parent.relative_to(common) / stem).replace(os.sep, "__") for f, stem in zip(files, stems)]


class Inspector:
    """Checks that need more than one file: duplicates, mixed dimensionality, classes never seen.

    Keeps only hashes and counts, so memory stays flat in the number of files.
    """

    def __init__(self, n_classes: int, task):
        self.task, self.n_classes = task, n_classes
        self.seen_sha: dict[str, Path] = {}
        self.ndim: int | None = None
        self.class_counts = np.zeros(n_classes, dtype=np.int64)

    def check(self, path: Path, sha: str, image: np.ndarray) -> str | None:
        if sha in self.seen_sha:
            return f"duplicate of {self.seen_sha[sha]} (same sha256)"
        spatial = image.ndim - 1
        if self.ndim is not None and spatial != self.ndim:
            return f"{spatial}D image among {self.ndim}D images (mixed dimensionality)"
        return None

    def accept(self, path: Path, sha: str, image: np.ndarray, mask, label) -> None:
        self.seen_sha[sha] = path
        self.ndim = image.ndim - 1
        counts = self.task.class_counts(mask, label, self.n_classes)
        if counts is not None:
            self.class_counts += counts

    def missing_classes(self, class_names: list[str]) -> list[str]:
        if self.task.class_counts(None, None, self.n_classes) is None:  # a task without classes
            return []
        return [name for name, count in zip(class_names, self.class_counts) if count == 0]


def write_rejected(path: Path, rejected: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(rejected)
    atomic_write_text(path, buffer.getvalue())


def run(ds: DatasetConfig) -> None:
    """Read every file; on_bad_input: fail lists every bad file and writes nothing, skip writes rejected.csv."""
    paths = DatasetPaths(ds.results_dir)
    try:
        rows = sources.input_rows(ds)
    except sources.SourceError as err:
        raise IngestError(str(err)) from err
    as_suffix = sources.format_hint(ds)
    hdf5_keys = ds.cfg["source"].get("hdf5")
    ids = sample_ids([Path(r["image"]) for r in rows])
    class_names = ds.class_names
    policy = ds.cfg["on_bad_input"]
    rejected: list[tuple[str, str]] = []
    inspector = Inspector(len(class_names), ds.task)
    progress = Progress("ingest", len(rows))
    with StoreWriter(paths.ingested, domain=ds.cfg["domain"], task=ds.cfg["task"],
                     class_names=class_names, dataset=ds.name, stage="ingested") as store:
        for done, (row, sample_id) in enumerate(zip(rows, ids), start=1):
            image_path = Path(row["image"])
            if row.get("missing_mask"):
                rejected.append((str(image_path), row["missing_mask"]))
                continue
            try:
                image, meta, mask, stored_label = read_row(row, hdf5_keys, as_suffix)
                sha = sha256_file(image_path)
            except readers.ReadError as err:
                rejected.append((str(image_path), str(err).removeprefix(f"{image_path}: ")))
                continue
            mask, reason = ds.task.stored_mask(mask, ds.cfg)
            reason = reason or _check(image, mask, len(class_names)) or inspector.check(image_path, sha, image)
            if reason:
                rejected.append((str(image_path), reason))
                continue
            label = row.get("label") if row.get("label") not in (None, "") else stored_label
            if label is not None:
                try:
                    label = int(label) if str(label).lstrip("-").isdigit() else class_names.index(str(label))
                except ValueError:
                    rejected.append((str(image_path), f"label {label!r} is not a declared class "
                                                      f"({', '.join(class_names)}) nor a class index"))
                    continue
                if not 0 <= label < len(class_names):
                    rejected.append((str(image_path), f"label {label} outside the {len(class_names)} declared classes"))
                    continue
            inspector.accept(image_path, sha, image, mask, label)
            attrs = {"source": str(image_path), "sha256": sha, "meta": json.dumps(meta)}
            for key in ("group", "target"):
                if row.get(key) not in (None, ""):
                    attrs[key] = row[key]
            if "group" not in attrs and meta.get("PatientID"):
                # DICOM without a group column: one patient's images stay in one set
                attrs["group"] = str(meta["PatientID"])
            if label is not None:
                attrs["label"] = label
            store.add(Sample(sample_id, image, mask, attrs))
            progress(done)
        store.file_attrs["n_rejected"] = len(rejected)
        if store.count == 0:
            raise IngestError(f"{ds.path}: no usable input among {len(rows)} files; nothing to train on"
                              + "".join(f"\n  {p}: {r}" for p, r in rejected))
        missing = inspector.missing_classes(class_names)
        if missing and policy == "fail":
            rejected.append((str(ds.path), f"declared classes with no example: {', '.join(missing)}"))
        elif missing:
            log.warning("declared classes with no example in %s: %s", ds.name, ", ".join(missing))
        if rejected and policy == "fail":
            # Raising inside the writer discards the partial file: no ingested.h5 that looks complete.
            raise IngestError(f"{len(rejected)} problem(s) in {len(rows)} input files (on_bad_input: fail; "
                              "set on_bad_input: skip to leave them out):\n  "
                              + "\n  ".join(f"{p}: {r}" for p, r in rejected))
    # always written (a header alone when nothing was left out): a declared output of the step
    write_rejected(paths.rejected, rejected)
    if rejected:
        log.warning("skipped %d of %d files; reasons in %s", len(rejected), len(rows), paths.rejected)
    log.info("ingested %d samples into %s", store.count, paths.ingested)
