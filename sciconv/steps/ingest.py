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
from sciconv.io.arrays import close_npz_streams
from sciconv.runtime import Progress, atomic_write_text, log
from sciconv.store import Sample, StoreWriter


# The fewest pixels an image may have along its two longest axes. Smaller ones (a 1x1 thumbnail,
# a single line) carry too little to resize up from: preprocessing would turn them into blank
# samples the network trains on as if they were images. A volume's third axis may be thin (a few
# thick MRI slices are a real acquisition).
MIN_SIDE = 8


class IngestError(ValueError):
    """One or more input files are unusable; the message lists each with its reason."""


def _check(image: np.ndarray, mask: np.ndarray | None, n_classes: int) -> str | None:
    """Why a sample is unusable, or None."""
    if not np.issubdtype(image.dtype, np.number):
        return f"image dtype {image.dtype} is not numeric"
    if image.size == 0:
        return "image is empty"
    if image.ndim == 2 and image.shape[1] < MIN_SIDE:
        return f"signal has {image.shape[1]} bins; sciconv needs at least {MIN_SIDE}"
    if image.ndim > 2 and sorted(image.shape[1:])[-2] < MIN_SIDE:
        return (f"image is {' x '.join(map(str, image.shape[1:]))} pixels; sciconv needs at least {MIN_SIDE} along "
                "its two longest axes (resized up, a smaller image is a blank sample)")
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        bad = np.flatnonzero(~np.isfinite(image).all(0).ravel())
        where = (f"{len(bad)} bin(s) of the signal, the first at bin {bad[0]}" if image.ndim == 2
                 else f"{len(bad)} pixel(s)")
        return f"image holds NaN or Inf values in {where}"
    if mask is not None:
        if mask.shape != image.shape[1:]:
            return f"mask shape {mask.shape} differs from image shape {image.shape[1:]}"
        if mask.min() < 0 or mask.max() >= n_classes:
            return f"mask labels span {mask.min()}..{mask.max()}, outside the {n_classes} declared classes"
    return None


def sample_ids(rows: list[dict]) -> list[str]:
    """Sample ids: the layout's own (an nnU-Net case, an archive item), else file names without suffixes,
    prefixed by their folders (below the common one) where names repeat."""
    files = [Path(r["image"]) for r in rows]
    stems = [r.get("id") or sources.sample_name(f) for r, f in zip(rows, files)]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([str(f.parent) for f in files]))
    return [str(f.parent.relative_to(common) / stem).replace(os.sep, "__") for f, stem in zip(files, stems)]


class DatasetChecks:
    """Checks that need more than one file: duplicates, mixed dimensionality, classes never seen.

    Keeps only hashes and counts, so memory stays flat in the number of files.
    """

    def __init__(self, n_classes: int, task):
        self.task, self.n_classes = task, n_classes
        self.seen_sha: dict[str, Path] = {}
        self.ndim: int | None = None
        self.channels: tuple[int, Path] | None = None  # the first accepted file's channel count, and that file
        self.class_counts = np.zeros(n_classes, dtype=np.int64)

    def check(self, path: Path, sha: str, image: np.ndarray) -> str | None:
        if sha in self.seen_sha:
            return f"duplicate of {self.seen_sha[sha]} (same sha256)"
        spatial = image.ndim - 1
        if self.ndim is not None and spatial != self.ndim:
            return f"{spatial}D image among {self.ndim}D images (mixed dimensionality)"
        if self.channels is not None and image.shape[0] != self.channels[0]:
            return (f"{image.shape[0]} channels among files of {self.channels[0]} (e.g. {self.channels[1]}); "
                    "a network takes one channel count: split the files into datasets, or convert them")
        return None

    def accept(self, path: Path, sha: str, image: np.ndarray, mask, label) -> None:
        self.seen_sha[sha] = path
        self.ndim = image.ndim - 1
        if self.channels is None:
            self.channels = (image.shape[0], path)
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


def label_index(label, class_names: list[str]) -> tuple[int | None, str | None]:
    """A label given as a class name or index, as the class index; or the reason it is none."""
    if label in (None, ""):
        return None, None
    try:
        index = int(label) if str(label).lstrip("-").isdigit() else class_names.index(str(label))
    except ValueError:
        return None, f"label {label!r} is not a declared class ({', '.join(class_names)}) nor a class index"
    if not 0 <= index < len(class_names):
        return None, f"label {index} outside the {len(class_names)} declared classes"
    return index, None


def ingest_row(ds: DatasetConfig, row: dict, sample_id: str, checks: "DatasetChecks"):
    """One input row as a Sample to store, or the reason it cannot be used."""
    image_path = Path(row["image"])
    if row.get("problem"):
        return row["problem"]
    try:
        image, meta, mask, stored_label, sha = readers.read_row(row, ds.cfg["source"], signal=ds.domain.signals)
    except readers.ReadError as err:
        return str(err).removeprefix(f"{image_path}: ")
    if ds.domain.dims_problem(image):
        return ds.domain.dims_problem(image)
    n_classes = len(ds.class_names)
    mask, reason = ds.task.stored_mask(mask, ds.cfg)
    reason = reason or _check(image, mask, n_classes) or checks.check(image_path, sha, image)
    label, label_problem = None, None
    if ds.task.output_names == "classes":  # a regression's outputs are its targets; a row's label is not one
        label, label_problem = label_index(row.get("label") if row.get("label") not in (None, "") else stored_label,
                                           ds.class_names)
    if reason or label_problem:
        return reason or label_problem
    checks.accept(image_path, sha, image, mask, label)
    attrs = {"source": str(image_path), "sha256": sha, "meta": json.dumps(meta)}
    for key in ("group", "target", "subset", "series"):  # series: which SeriesInstanceUID of a DICOM folder
        if row.get(key) not in (None, ""):
            attrs[key] = row[key]
    if "group" not in attrs and readers.group_of(meta):
        # without a group column, the format's own subject id (DICOM's PatientID) keeps a subject in one set
        attrs["group"] = readers.group_of(meta)
    if label is not None:
        attrs["label"] = label
    return Sample(sample_id, image, mask, attrs)


def run(ds: DatasetConfig) -> None:
    """Read every file; on_bad_input: fail lists every bad file and writes nothing, skip writes rejected.csv."""
    paths = DatasetPaths(ds.results_dir)
    try:
        rows = sources.input_rows(ds)
    except sources.SourceError as err:
        raise IngestError(str(err)) from err
    rejected: list[tuple[str, str]] = []
    checks = DatasetChecks(len(ds.class_names), ds.task)
    progress = Progress("ingest", len(rows))
    with StoreWriter(paths.ingested, domain=ds.cfg["domain"], task=ds.cfg["task"],
                     class_names=ds.class_names, dataset=ds.name, stage="ingested") as store:
        for done, (row, sample_id) in enumerate(zip(rows, sample_ids(rows)), start=1):
            result = ingest_row(ds, row, sample_id, checks)
            if isinstance(result, str):
                rejected.append((str(row["image"]), result))
            else:
                store.add(result)
            progress(done)
        close_npz_streams()
        store.file_attrs["n_rejected"] = len(rejected)
        finish_checks(ds, store, checks, rejected, len(rows))
    # always written (a header alone when nothing was left out): a declared output of the step
    write_rejected(paths.rejected, rejected)
    if rejected:
        log.warning("skipped %d of %d files; reasons in %s", len(rejected), len(rows), paths.rejected)
    log.info("ingested %d samples into %s", store.count, paths.ingested)


def finish_checks(ds: DatasetConfig, store, checks: "DatasetChecks", rejected: list, n_files: int) -> None:
    """The checks over the whole dataset; raising here, inside the writer, discards the partial file."""
    if store.count == 0:
        raise IngestError(f"{ds.path}: no usable input among {n_files} files; nothing to train on"
                          + "".join(f"\n  {p}: {r}" for p, r in rejected))
    missing = checks.missing_classes(ds.class_names)
    policy = ds.cfg["on_bad_input"]
    if missing and policy == "fail":
        rejected.append((str(ds.path), f"declared classes with no example: {', '.join(missing)}"))
    elif missing:
        log.warning("declared classes with no example in %s: %s", ds.name, ", ".join(missing))
    if rejected and policy == "fail":
        raise IngestError(f"{len(rejected)} problem(s) in {n_files} input files (on_bad_input: fail; "
                          "set on_bad_input: skip to leave them out):\n  "
                          + "\n  ".join(f"{p}: {r}" for p, r in rejected))
