"""predict: a trained model on new files, read and preprocessed exactly as in training.

Segmentation masks are written in the input's own format where it has one (FITS keeps the
source header, NIfTI the source file's grid and affine), else as .npy; a CSV lists every file with the pixel
count of each class. Classifiers write class probabilities, the threshold and the decision;
regressors the predicted targets in physical units.
"""

from __future__ import annotations

import csv
import io as text_io
from pathlib import Path

import numpy as np

from sciconv import io as readers
from sciconv import tracking
from sciconv.domains import get_domain
from sciconv.errors import PredictError
from sciconv.inference import load_model
from sciconv.runtime import atomic_write_text, log, pick_device
from sciconv.tasks import task_module

def expand_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not files:
        raise PredictError("no input files")
    return files


def resized_affine(affine, shape, new_shape) -> np.ndarray:
    """The affine of a grid resampled from shape to new_shape over the same extent (voxel centres
    i' map to (i' + 0.5) * old/new - 0.5), for domains whose preprocessing resizes without saying so."""
    scale = np.asarray(shape, float) / np.asarray(new_shape, float)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = (scale - 1) / 2
    return np.asarray(affine, float) @ index_map


def write_mask(mask: np.ndarray, source: Path, meta: dict, grid: dict, out_dir: Path,
               values: list[int] | None = None) -> Path:
    """The class map in the input's format; NIfTI masks go back onto the source file's grid and affine
    (through the preprocessed grid's affine in grid['affine'], whatever resampling or cropping came
    between); values maps class indices to the stored label values (mask_values)."""
    name = source.name.lower()
    stem = source.name.split(".")[0]
    if name.endswith((".nii", ".nii.gz")):
        from sciconv.io.nifti import write_mask_on_source

        affine = grid.get("affine") or resized_affine(meta["affine"], meta["shape"], mask.shape)
        return write_mask_on_source(mask, affine, source, out_dir / f"{stem}_mask.nii.gz", values)
    stored = np.asarray(values, dtype=np.uint8)[mask] if values else mask.astype(np.uint8)
    if name.endswith((".fits", ".fit", ".fts", ".fits.fz", ".fits.gz")):
        from astropy.io import fits

        hdu = fits.PrimaryHDU(stored)
        for key, value in meta.items():
            if len(key) <= 8 and key.isupper() and isinstance(value, (int, float, str, bool)) and key not in hdu.header:
                hdu.header[key] = value
        hdu.header["SCMASK"] = (True, "sciconv predicted class per pixel")
        target = out_dir / f"{stem}_mask.fits"
        hdu.writeto(target, overwrite=True)
    else:
        target = out_dir / f"{stem}_mask.npy"
        np.save(target, stored)
    return target


def run(model: str, inputs: list[str], out: str, device: str = "auto", tracking_uri: str = "") -> Path:
    try:
        checkpoint_path = tracking.checkpoint_path(model, tracking_uri)
    except tracking.ModelURIError as err:
        raise PredictError(str(err)) from err
    dev = pick_device(device)
    net, checkpoint = load_model(checkpoint_path, dev)
    cfg = checkpoint["config"]
    try:
        task = task_module(cfg["task"])
    except ValueError as err:
        raise PredictError(f"{model}: {err}") from err
    domain = get_domain(cfg["domain"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = text_io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", *task.prediction_columns(checkpoint)])
    for source in expand_inputs(inputs):
        try:
            image, meta = readers.read(source)
        except readers.ReadError as err:
            raise PredictError(str(err)) from err
        prepared, _, grid = domain.preprocess(image, meta, cfg["preprocess"])
        meta = {**meta, "shape": list(image.shape[1:])}
        writer.writerow([str(source), *task.prediction_row(
            net, prepared, checkpoint, dev, lambda mask: write_mask(mask, source, meta, grid, out_dir,
                                                                   cfg.get("mask_values")))])
    summary = out_dir / "predictions.csv"
    atomic_write_text(summary, table.getvalue())
    log.info("wrote predictions for %s to %s", model, summary)
    return summary
