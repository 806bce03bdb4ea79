"""predict: a trained model on new files, read and preprocessed exactly as in training.

Files are read with the dataset's own source settings (source.format, source.hdf5). Segmentation
masks are written in the input's own format where it has a mask writer (FITS keeps the source
header, NIfTI the source file's grid and affine), else as .npy, under the input's path relative to
the inputs' common folder, so two inputs never share an output. A CSV lists every file with the
pixel count of each class; classifiers write class probabilities, the threshold and the decision;
regressors the predicted targets in physical units.

All or nothing: outputs are written to a hidden staging folder and moved into place only when every
file has been predicted, so a failure leaves the previous run's results as they were. With
on_bad_input 'skip' (the same policy as ingest), files that cannot be read or do not fit the model
are listed with the reason in rejected.csv and the rest are predicted.
"""

from __future__ import annotations

import csv
import io as text_io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sciconv import io as readers
from sciconv import tracking
from sciconv.domains import get_domain
from sciconv.errors import PredictError
from sciconv.inference import load_ensemble_file, load_model
from sciconv.runtime import atomic_write_text, log, pick_device
from sciconv.tasks import task_module

ON_BAD_INPUT = ("fail", "skip")


class BadInput(Exception):
    """One input cannot be predicted on; the message says why, for rejected.csv or the error."""


@dataclass(frozen=True)
class Input:
    """One thing to predict on: a file, a DICOM series folder, or one series (`series`, its
    SeriesInstanceUID) among several in a folder, which `name` tells apart in the outputs."""

    path: Path
    series: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.path} (series {self.series})" if self.series else str(self.path)


def expand_inputs(inputs: list[str]) -> list[Input]:
    """Files as themselves; a folder's files and, for each folder of DICOM slices in it, each series as
    one volume (never its slices one by one)."""
    from sciconv.io.dicom import is_series_folder
    from sciconv.sources import expand_series

    found: list[Input] = []

    def walk(folder: Path) -> None:
        if is_series_folder(folder):
            found.extend(Input(folder, row.get("series"), row.get("id")) for row in expand_series({"image": str(folder)}))
            return
        for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if entry.is_dir():
                walk(entry)
            elif entry.is_file():
                found.append(Input(entry))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            walk(path)
        elif path.is_file():
            found.append(Input(path))
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not found:
        raise PredictError("no input files")
    return list(dict.fromkeys(found))  # a file named twice (as itself and inside its folder) is predicted once


def output_stems(inputs: list[Input]) -> dict[Input, Path]:
    """Each input's output path without suffix, relative to the out folder: its path below the inputs'
    common folder, named by its stem, or by its whole name where two inputs in one folder share a stem
    (scan.png and scan.tif). Distinct files have distinct relative paths, and a whole name (with a dot)
    never equals a stem (without one), so two inputs cannot map to one output. A series folder is
    named by its whole name (often a UID with dots), one of several series by {folder}_series{n}."""
    resolved = [i.path.resolve() for i in inputs]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    relative = [r.relative_to(common) for r in resolved]

    def stem_of(item: Input, rel: Path) -> str:
        return item.name or (rel.name if item.path.is_dir() else readers.file_stem(rel))

    stem_count: dict[tuple[Path, str], int] = {}
    for item, rel in zip(inputs, relative):
        key = (rel.parent, stem_of(item, rel))
        stem_count[key] = stem_count.get(key, 0) + 1
    stems = {}
    for item, rel in zip(inputs, relative):
        stem = stem_of(item, rel)
        name = stem if stem_count[(rel.parent, stem)] == 1 else rel.name
        stems[item] = rel.parent / f"{name}_mask"
    return stems


def expected_input(checkpoint: dict) -> tuple[int, int]:
    """(channels, spatial dimensions) the network was built for."""
    return checkpoint["model_args"]["in_channels"], checkpoint["model_args"]["spatial_dims"]


def check_fits(shape: tuple[int, ...], checkpoint: dict, what: str) -> None:
    """Refuse an input of another dimensionality or channel count before any inference, saying what fits."""
    channels, dims = expected_input(checkpoint)
    trained_on = checkpoint["config"].get("domain", "its")
    if len(shape) - 1 != dims:
        raise BadInput(f"{what} a {len(shape) - 1}D image (shape {list(shape)}); the model takes {dims}D images "
                       f"of {channels} channel(s), as in its training data ({trained_on} domain)")
    if shape[0] != channels:
        raise BadInput(f"{what} {shape[0]} channel(s) (shape {list(shape)}); the model takes {channels} "
                       f"channel(s) of {dims}D images, as in its training data ({trained_on} domain)")


class Predictor:
    """The model, its task and domain, and the staging folder outputs go to until the run is complete."""

    def __init__(self, checkpoint_path: Path, device: str, model: str, staging: Path, out_dir: Path):
        self.dev = pick_device(device)
        if checkpoint_path.name == "ensemble.json":
            self.net, self.checkpoint = load_ensemble_file(checkpoint_path, self.dev)
        else:
            self.net, self.checkpoint = load_model(checkpoint_path, self.dev)
        self.cfg = self.checkpoint["config"]
        try:
            self.task = task_module(self.cfg["task"])
        except ValueError as err:
            raise PredictError(f"{model}: {err}") from err
        self.domain = get_domain(self.cfg["domain"])
        self.staging, self.out_dir = staging, out_dir

    def row(self, item: Input, stem: Path) -> list:
        """The predictions.csv row of one input; raises BadInput for an input it cannot take."""
        source = item.path
        try:
            image, meta, _, _, _ = readers.read_row({"image": str(source), "series": item.series},
                                                    self.cfg["source"], digest=False, signal=self.domain.signals)
        except readers.ReadError as err:
            raise BadInput(str(err).removeprefix(f"{source}: ")) from err
        channels, dims = expected_input(self.checkpoint)
        if image.ndim - 1 != dims:  # before preprocessing, which assumes the training data's geometry
            check_fits(image.shape, self.checkpoint, "holds")
        prepared, _, grid = self.domain.preprocess(image, meta, self.cfg["preprocess"])
        check_fits(prepared.shape, self.checkpoint, "preprocessed into")

        def write_mask(mask: np.ndarray) -> Path:
            written = readers.write_mask(mask, source, self.staging / stem, meta, grid, self.cfg.get("mask_values"),
                                         class_names=self.checkpoint["class_names"])
            return self.out_dir / written.relative_to(self.staging)

        return [str(item), *self.task.prediction_row(self.net, prepared, self.checkpoint, self.dev, write_mask)]


def run(model: str, inputs: list[str], out: str, device: str = "auto", tracking_uri: str = "",
        on_bad_input: str = "fail") -> Path:
    if on_bad_input not in ON_BAD_INPUT:
        raise PredictError(f"on_bad_input {on_bad_input!r}: use one of {', '.join(ON_BAD_INPUT)}")
    try:
        checkpoint_path = tracking.checkpoint_path(model, tracking_uri)
    except tracking.ModelURIError as err:
        raise PredictError(str(err)) from err
    out_dir = Path(out)
    # an out folder inside an input folder holds earlier predictions: they are not inputs
    files = [f for f in expand_inputs(inputs) if out_dir.resolve() not in f.path.resolve().parents]
    if not files:
        raise PredictError(f"no input files outside the out folder {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".predict-"))
    try:
        predictor = Predictor(checkpoint_path, device, model, staging, out_dir)
        table, rejected = text_io.StringIO(), []
        writer = csv.writer(table)
        writer.writerow(["file", *predictor.task.prediction_columns(predictor.checkpoint)])
        for source, stem in output_stems(files).items():
            try:
                writer.writerow(predictor.row(source, stem))
            except BadInput as err:
                if on_bad_input == "fail":
                    raise PredictError(f"{source}: {err}; nothing was written (use --on-bad-input skip to "
                                       "predict the other files and list this one in rejected.csv)") from err
                rejected.append((str(source), str(err)))
        if len(rejected) == len(files):
            raise PredictError(f"none of the {len(files)} inputs could be predicted on:"
                               + "".join(f"\n  {p}: {r}" for p, r in rejected))
        promote(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rejected_table = text_io.StringIO()
    csv.writer(rejected_table).writerows([("path", "reason"), *rejected])
    atomic_write_text(out_dir / "rejected.csv", rejected_table.getvalue())
    summary = out_dir / "predictions.csv"
    atomic_write_text(summary, table.getvalue())  # last: its presence says every file it lists is in place
    if rejected:
        log.warning("skipped %d of %d inputs; reasons in %s", len(rejected), len(files), out_dir / "rejected.csv")
    log.info("wrote predictions for %s to %s", model, summary)
    return summary


def promote(staging: Path, out_dir: Path) -> None:
    """Move every staged output to its place under out_dir (same filesystem: each move is a rename)."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = out_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
