"""Where a dataset's raw files are: the simulator's manifest, or the user's own files in one of three layouts.

Every layout becomes the same rows: {image, mask?, label?, group?, target?} with absolute
paths, so ingest reads them all one way.
"""

from __future__ import annotations

import csv
import glob
from pathlib import Path

from sciconv.config import DatasetConfig
from sciconv.io import file_stem
from sciconv.paths import DatasetPaths

class SourceError(ValueError):
    """The configured source cannot be listed; the message says what is missing."""


def _resolve(base: Path, pattern: str) -> list[Path]:
    """Paths relative to base (or absolute), with glob patterns expanded, sorted for a stable order."""
    full = pattern if Path(pattern).is_absolute() else str(base / pattern)
    return sorted(Path(p) for p in glob.glob(full)) if glob.has_magic(full) else [Path(full)]


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


def simulated_rows(ds: DatasetConfig) -> list[dict]:
    paths = DatasetPaths(ds.results_dir)
    if not paths.manifest.is_file():
        raise SourceError(f"{paths.manifest}: not found; run `sciconv simulate {ds.name}` first")
    return manifest_rows(paths.manifest)


def manifest_rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "image" not in rows[0]:
        raise SourceError(f"{manifest}: needs a column 'image' (and optionally mask, label, group, target); "
                          f"it has {', '.join(rows[0])}")
    for row in rows:
        for key in ("image", "mask"):
            if row.get(key):
                row[key] = str(_resolve(manifest.parent, row[key])[0])
    return rows


def user_rows(ds: DatasetConfig) -> list[dict]:
    src = ds.cfg["source"]
    base = ds.path.resolve().parent
    layout = src["layout"]
    if layout == "manifest":
        if not src.get("manifest"):
            raise SourceError(f"{ds.path}: key source.manifest: layout manifest needs the CSV's path")
        manifest = _resolve(base, src["manifest"])[0]
        if not manifest.is_file():
            raise SourceError(f"{ds.path}: key source.manifest: {manifest} not found")
        return manifest_rows(manifest)
    if not src.get("path"):
        raise SourceError(f"{ds.path}: key source.path: layout {layout} needs the data folder")
    folders = [p for p in _resolve(base, src["path"]) if p.is_dir()]
    if not folders:
        raise SourceError(f"{ds.path}: key source.path: no folder matches {src['path']!r} (relative to {base})")
    rows: list[dict] = []
    for folder in folders:
        if layout == "folders":
            class_names = ds.class_names
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if sub.name not in class_names:
                    raise SourceError(f"{sub}: folder name is not a declared class; classes: {', '.join(class_names)}")
                rows += [{"image": str(f), "label": str(class_names.index(sub.name))} for f in _files(sub, src["pattern"])]
        else:  # paired
            masks = {file_stem(m): m for m in _files(folder / src["masks"], src["pattern"])}
            for image in _files(folder / src["images"], src["pattern"]):
                mask = masks.get(file_stem(image))
                # A missing mask is left for ingest to report with the other bad inputs.
                rows.append({"image": str(image), "mask": str(mask) if mask else "",
                             "missing_mask": "" if mask else f"no mask named {file_stem(image)}.* in {folder / src['masks']}"})
    return rows


def input_rows(ds: DatasetConfig) -> list[dict]:
    return simulated_rows(ds) if ds.cfg["source"]["kind"] == "simulate" else user_rows(ds)
