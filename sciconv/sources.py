"""Where a dataset's raw files are: the simulator's manifest, or the user's own files in the layouts
they are published in.

Every layout becomes the same rows, {image, mask?, label?, group?, target?, id?, subset?,
channels?, problem?} with absolute paths, so ingest reads them all one way:
- folders: one subfolder per class; paired: image and mask folders matched by name; manifest: a CSV;
- nnunet: an nnU-Net v2 raw folder (dataset.json, imagesTr/{case}_{XXXX}, labelsTr/{case},
  imagesTs/, labelsTs/) or a Medical Segmentation Decathlon one (dataset.json listing 4D files);
- npz: one NumPy archive holding whole splits ({train,val,test}_images with _labels or _masks).
`channels` (the channel tokens, in order) with `channel_pattern` makes one sample of several files
in the folders and paired layouts. `subset` fixes a row's set (the archive's or the folder's
split), which split.json keeps. `problem` is a reason the row cannot be used, which ingest reports
with the files it cannot read.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections import Counter
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
    return [expanded for row in rows
            for expanded in (expand_series(row) if Path(row["image"]).is_dir() else [row])]


# --------------------------------------------------------------------------- channels in separate files
def _ending(path: Path) -> str:
    """Everything after the stem: .nii.gz, .fits."""
    return path.name[len(file_stem(path)):]


def channel_rows(files: list[Path], channels: list[str], pattern: str) -> list[dict]:
    """Files named by `pattern` ({id} and {channel}) as one row per sample, its channel files in the
    declared order; a sample missing a channel, or a file the pattern does not name, is a problem row."""
    if "{id}" not in pattern or "{channel}" not in pattern:
        raise SourceError(f"source.channel_pattern {pattern!r} must contain {{id}} and {{channel}}")
    regex = re.compile("".join(
        "(?P<id>.+)" if part == "{id}" else
        "(?P<channel>" + "|".join(map(re.escape, sorted(channels, key=len, reverse=True))) + ")" if part == "{channel}"
        else re.escape(part) for part in re.split(r"(\{id\}|\{channel\})", pattern)))
    found: dict[str, dict[str, Path]] = {}
    rows = []
    for path in files:
        match = regex.fullmatch(file_stem(path))
        if match is None:
            rows.append({"image": str(path), "problem": f"its name does not follow source.channel_pattern "
                                                        f"{pattern!r} with channels {', '.join(channels)}"})
            continue
        found.setdefault(match["id"], {})[match["channel"]] = path
    for sample_id, by_channel in sorted(found.items()):
        some = next(iter(by_channel.values()))
        missing = [c for c in channels if c not in by_channel]
        row = {"id": sample_id, "image": str(by_channel.get(channels[0], some)),
               "channels": [str(by_channel[c]) for c in channels if c in by_channel]}
        if missing:
            names = ", ".join(pattern.format(id=sample_id, channel=c) + _ending(some) for c in missing)
            row["problem"] = f"{sample_id}: no channel file {names} in {some.parent}"
        rows.append(row)
    return rows


def _samples(src: dict, folder: Path) -> list[dict]:
    """The image rows of one folder: a row per file, or per sample of channel files, and a row per
    DICOM series in its series folders."""
    files = _files(folder, src["pattern"])
    if src.get("channels"):
        return [row | {"channel_names": src["channels"]}
                for row in channel_rows(files, src["channels"], src["channel_pattern"])] + series_rows(folder)
    return [{"image": str(f)} for f in files] + series_rows(folder)


# --------------------------------------------------------------------------- DICOM series
def sample_name(path: Path | str) -> str:
    """A sample's name from its path: a file's stem (scan.nii.gz -> scan), a series folder's whole name
    (series folders are often named by their UID, 1.2.840...)."""
    return Path(path).name if Path(path).is_dir() else file_stem(path)


def series_rows(folder: Path) -> list[dict]:
    """The DICOM series in the subfolders of `folder` that hold slices: one row per series, so a folder
    exported with a localiser and a scan in it gives two samples, {name}_series1, _series2 in the
    order of their SeriesNumber."""
    from sciconv.io.dicom import is_series_folder

    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if is_series_folder(sub):
            rows += expand_series({"image": str(sub)})
    return rows


def expand_series(row: dict) -> list[dict]:
    """A row whose image is a folder of DICOM slices as one row per series in it."""
    from sciconv.io import ReadError
    from sciconv.io.dicom import series_in

    folder = Path(row["image"])
    try:
        groups = series_in(folder)
    except ReadError as err:
        return [row | {"problem": str(err).removeprefix(f"{folder}: ")}]
    if len(groups) == 1:
        return [row]
    return [row | {"series": uid, "id": f"{row.get('id') or folder.name}_series{n}"}
            for n, uid in enumerate(groups, 1)]


# --------------------------------------------------------------------------- nnU-Net and Decathlon folders
def dataset_json(folder: Path) -> dict:
    """dataset.json as {channels, classes, values, ending, training}: nnU-Net v2's channel_names, labels
    {name: value} and file_ending, or the Decathlon's modality, labels {value: name} and file lists."""
    path = folder / "dataset.json"
    if not path.is_file():
        raise SourceError(f"{folder}: no dataset.json; an nnU-Net or Decathlon raw folder has one beside imagesTr")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: not readable JSON ({err})") from err
    channels = info.get("channel_names", info.get("modality"))
    if not isinstance(channels, dict) or not isinstance(info.get("labels"), dict):
        raise SourceError(f"{path}: needs channel_names (or modality) and labels")
    labels = info["labels"]
    if all(str(k).isdigit() for k in labels) and not all(str(v).isdigit() for v in labels.values()):
        labels = {name: int(value) for value, name in labels.items()}  # the Decathlon's {"0": "background"}
    regions = [name for name, value in labels.items() if not isinstance(value, int)]
    if regions:
        raise SourceError(f"{path}: labels {', '.join(regions)} are region unions (nnU-Net's region training); "
                          "give each label one value and declare the unions under regions: in the dataset YAML")
    ordered = sorted(labels.items(), key=lambda item: item[1])
    return {"path": path, "channels": [channels[k] for k in sorted(channels, key=int)],
            "classes": [name for name, _ in ordered], "values": [value for _, value in ordered],
            "ending": info.get("file_ending", ".nii.gz"), "training": info.get("training"), "test": info.get("test")}


def nnunet_rows(folder: Path) -> tuple[list[dict], list[str]]:
    """Rows of an nnU-Net / Decathlon raw folder, and the imagesTs cases that have no labels (for
    `sciconv predict`). imagesTr is the training pool (split into train and val); imagesTs with
    labelsTs is the test set."""
    info = dataset_json(folder)
    if not (folder / "imagesTr").is_dir():
        raise SourceError(f"{folder}: no imagesTr folder beside dataset.json")
    ending, n_channels = info["ending"], len(info["channels"])
    listed = [entry for entry in info["training"] or [] if isinstance(entry, dict)]
    if listed and all((folder / entry["image"]).is_file() for entry in listed):
        # the Decathlon's own layout: each image one 4D file holding every channel
        rows = [{"id": file_stem(entry["image"]), "image": str((folder / entry["image"]).resolve()),
                 "mask": str((folder / entry["label"]).resolve()), "subset": "train",
                 "channel_names": info["channels"]} for entry in listed]
        tests = [file_stem(t) for t in info["test"] or []]
        return rows, tests
    tokens = [f"{i:04d}" for i in range(n_channels)]
    rows, unlabelled = [], []
    for images, labels, subset in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
        if not (folder / images).is_dir():
            continue
        files = [p for p in _files(folder / images, "*") if p.name.endswith(ending)]
        samples = channel_rows(files, tokens, "{id}_{channel}")
        if subset == "test" and not (folder / labels).is_dir():
            unlabelled += [row["id"] for row in samples if "id" in row]
            continue
        label_files = {p.name[:-len(ending)]: p for p in _files(folder / labels, "*") if p.name.endswith(ending)}
        for row in samples:
            row["subset"], row["channel_names"] = subset, info["channels"]
            label = label_files.pop(row.get("id"), None)
            if label is not None:
                row["mask"] = str(label)
            elif "id" in row and "problem" not in row:
                row["problem"] = f"{row['id']}: no label file {row['id']}{ending} in {folder / labels}"
        rows += samples
        rows += [{"image": str(path), "id": case, "problem": f"a label file with no image (no {case}_0000{ending} "
                                                           f"in {folder / images})"}
                 for case, path in sorted(label_files.items())]
    return rows, unlabelled


def layout_labels(cfg: dict, yaml_path: Path) -> tuple[list[str], list[int], Path] | None:
    """The class names and stored values a layout declares itself (nnU-Net's dataset.json), or None."""
    src = cfg["source"]
    if src.get("kind") != "files" or src.get("layout") != "nnunet" or not src.get("path"):
        return None
    folder = _resolve(yaml_path.resolve().parent, src["path"])[0]
    info = dataset_json(folder)
    return info["classes"], info["values"], info["path"]


# --------------------------------------------------------------------------- NumPy archives of whole splits
def npz_rows(archive: Path) -> list[dict]:
    """One row per item of {split}_images, with its {split}_labels or {split}_masks (by shape: one value
    per item is a label, an image-sized array a mask)."""
    from sciconv.io.arrays import SPLIT_PREFIXES, npz_headers

    if not archive.is_file():
        raise SourceError(f"{archive}: not found (layout npz: source.path is the archive)")
    headers = npz_headers(archive)
    rows = []
    for subset in SPLIT_PREFIXES:
        images = headers.get(f"{subset}_images")
        if images is None:
            continue
        n = images[0][0]
        row = {"image": str(archive), "member": f"{subset}_images", "subset": subset}
        for key in (f"{subset}_masks", f"{subset}_labels"):
            if key not in headers:
                continue
            shape = headers[key][0]
            if shape[0] != n:
                raise SourceError(f"{archive}: {key} holds {shape[0]} items for {n} in {subset}_images")
            if len(shape) == 1 or shape[1:] == (1,):
                row["label_member"] = key
            elif shape[1:] in (images[0][1:], images[0][1:-1]):
                row["mask_member"] = key
            else:
                raise SourceError(f"{archive}: {key} has items of shape {list(shape[1:])}: neither one label per "
                                  f"item nor a mask of the image shape {list(images[0][1:])} (multi-label targets "
                                  "are not supported)")
        rows += [row | {"id": f"{subset}_{i:06d}", "index": i} for i in range(n)]
    if not rows:
        raise SourceError(f"{archive}: holds {', '.join(sorted(headers)) or 'no arrays'}; layout npz reads "
                          "train_images, val_images and test_images, each with _labels or _masks beside it")
    return rows


# --------------------------------------------------------------------------- every layout
def user_rows(ds: DatasetConfig) -> list[dict]:
    return layout_rows(ds.cfg["source"], ds.path.resolve().parent, ds.class_names, str(ds.path))[0]


def layout_rows(src: dict, base: Path, class_names: list[str], where: str) -> tuple[list[dict], list[str]]:
    """The rows of a files source, and the cases listed only for prediction (nnU-Net's imagesTs
    without labelsTs). `where` names the config in errors."""
    layout = src["layout"]
    if layout == "manifest":
        if not src.get("manifest"):
            raise SourceError(f"{where}: key source.manifest: layout manifest needs the CSV's path")
        manifest = _resolve(base, src["manifest"])[0]
        if not manifest.is_file():
            raise SourceError(f"{where}: key source.manifest: {manifest} not found")
        return manifest_rows(manifest), []
    if not src.get("path"):
        raise SourceError(f"{where}: key source.path: layout {layout} needs the data folder")
    if layout == "npz":
        return npz_rows(_resolve(base, src["path"])[0]), []
    folders = [p for p in _resolve(base, src["path"]) if p.is_dir()]
    if not folders:
        raise SourceError(f"{where}: key source.path: no folder matches {src['path']!r} (relative to {base})")
    rows: list[dict] = []
    unlabelled: list[str] = []
    for folder in folders:
        if layout == "nnunet":
            found, left = nnunet_rows(folder)
            rows, unlabelled = rows + found, unlabelled + left
        elif layout == "folders":
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if sub.name not in class_names:
                    raise SourceError(f"{sub}: folder name is not a declared class; classes: {', '.join(class_names)}")
                rows += [row | {"label": str(class_names.index(sub.name))} for row in _samples(src, sub)]
        else:  # paired
            masks = {file_stem(m): m for m in _files(folder / src["masks"], src["pattern"])}
            for row in _samples(src, folder / src["images"]):
                name = row.get("id") or sample_name(row["image"])
                mask = masks.get(name)
                # A missing mask is left for ingest to report with the other bad inputs.
                rows.append(row | ({"mask": str(mask)} if mask else
                                   {"problem": row.get("problem") or
                                    f"no mask named {name}.* in {folder / src['masks']}"}))
    return rows, unlabelled


def input_rows(ds: DatasetConfig) -> list[dict]:
    return simulated_rows(ds) if ds.cfg["source"]["kind"] == "simulate" else user_rows(ds)


# --------------------------------------------------------------------------- sciconv sources PATH
def detect_layout(path: Path) -> dict:
    """A files source for a path nobody has described yet: what its contents look like."""
    if path.is_file() and path.suffix.lower() == ".npz":
        return {"kind": "files", "layout": "npz", "path": str(path)}
    if path.is_file() and path.suffix.lower() == ".csv":
        return {"kind": "files", "layout": "manifest", "manifest": str(path)}
    if not path.is_dir():
        raise SourceError(f"{path}: not found, or neither a folder, an .npz archive nor a CSV manifest")
    if (path / "dataset.json").is_file():
        return {"kind": "files", "layout": "nnunet", "path": str(path)}
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return {"kind": "files", "layout": "paired", "path": str(path)}
    return {"kind": "files", "layout": "folders", "path": str(path)}


def describe(src: dict, base: Path, class_names: list[str] | None, where: str) -> list[str]:
    """What a source holds, as lines: layout, samples per set, channels, classes, problems."""
    if src["layout"] == "folders" and class_names is None:
        class_names = sorted(p.name for p in Path(src["path"]).iterdir() if p.is_dir())
    rows, unlabelled = layout_rows(src, base, class_names or [], where)
    lines = [f"layout: {src['layout']}"]
    if src["layout"] == "nnunet":
        info = dataset_json(_resolve(base, src["path"])[0])
        lines.append(f"channels ({len(info['channels'])}): {', '.join(info['channels'])}")
        lines.append("classes: " + ", ".join(f"{n}={v}" for n, v in zip(info["classes"], info["values"])))
    elif class_names:
        lines.append(f"classes: {', '.join(class_names)}")
    good = [r for r in rows if not r.get("problem")]
    if src.get("channels"):
        lines.append(f"channels ({len(src['channels'])}): {', '.join(src['channels'])}")
    sets = Counter(r.get("subset", "train/val/test by split") for r in good)
    lines.append(f"samples: {len(good)} (" + ", ".join(f"{k}: {v}" for k, v in sorted(sets.items())) + ")")
    if src["layout"] == "folders" and class_names:
        labels = Counter(class_names[int(r["label"])] for r in good)
        lines.append("per class: " + ", ".join(f"{n} {labels[n]}" for n in class_names))
    masks = sum(bool(r.get("mask") or r.get("mask_member")) for r in good)
    if masks:
        lines.append(f"with masks: {masks}")
    suffixes = Counter("DICOM series" if Path(r["image"]).is_dir() else _ending(Path(r["image"])) for r in good)
    lines.append("formats: " + ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(suffixes.items())))
    if unlabelled:
        lines.append(f"imagesTs without labelsTs: {len(unlabelled)} cases left for `sciconv predict`")
    problems = [r for r in rows if r.get("problem")]
    lines.append(f"problems: {len(problems)}")
    for row in problems:  # a problem that names its case stands alone; the others name the file
        named = bool(row.get("id")) and row["problem"].startswith(f"{row['id']}: ")
        lines.append(f"  {row['problem']}" if named else f"  {row['image']}: {row['problem']}")
    return lines
