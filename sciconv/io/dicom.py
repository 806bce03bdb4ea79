"""DICOM (pydicom): single images, multi-frame images, and the pixel conventions that vary by scanner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import GROUP_KEYS, ReadError, claim, register

GROUP_KEYS.append("PatientID")  # one patient's images stay in one set

# Keywords worth keeping as metadata: geometry, photometry and what a domain may need.
KEPT_KEYWORDS = ("Modality", "SOPClassUID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "PixelSpacing",
                 "SliceThickness", "ImagePositionPatient", "ImageOrientationPatient", "PhotometricInterpretation",
                 "BitsStored", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                 "ImageLaterality", "Laterality", "ViewPosition", "NumberOfFrames", "Rows", "Columns")
CODECS_EXTRA = "sciconv[dicom-codecs]"


def _json_value(value):
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        return [_json_value(v) for v in value]
    if isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def decode_pixels(ds, path: Path) -> np.ndarray:
    """The stored pixel values; compressed transfer syntaxes through pydicom's plugins."""
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as err:
        syntax = ds.file_meta.TransferSyntaxUID
        if getattr(syntax, "is_compressed", False):
            raise ReadError(f"{path}: cannot decode transfer syntax {syntax.name} ({syntax}); install the "
                            f"optional codecs with `pip install {CODECS_EXTRA}` (pylibjpeg, openjpeg)") from err
        raise ReadError(f"{path}: unreadable pixel data ({err})") from err


def to_monochrome2(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality LUT (RescaleSlope/Intercept), then MONOCHROME1 inverted so that higher means brighter.

    MONOCHROME1 stores "bright" as low values (common on mammography and CR units). The
    inversion maps the full stored range onto itself: x -> lo + hi - x, where [lo, hi] is the
    range of stored values after rescaling, so both conventions give comparable numbers.
    """
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        bits = int(getattr(ds, "BitsStored", 16))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
        lo, hi = np.sort(apply_modality_lut(stored, ds).astype(np.float32))
        values = lo + hi - values
    return values


@register(".dcm", ".dicom")
def read_dicom(path: Path) -> tuple[np.ndarray, dict]:
    """(C, *spatial): grey images (1, H, W), multi-frame (1, frames, H, W), colour (3, H, W)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise ReadError(f"{path}: not a readable DICOM file ({err})") from err
    if "PixelData" not in ds:
        raise ReadError(f"{path}: DICOM file without pixel data (SOP class {getattr(ds, 'SOPClassUID', '?')})")
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    shape = (int(getattr(ds, "NumberOfFrames", 1) or 1), int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0)),
             samples)
    compressed = getattr(ds.file_meta.TransferSyntaxUID, "is_compressed", False)
    claim(path, shape, 4, None)  # decoded to float32 below
    claim(path, shape, max(1, int(getattr(ds, "BitsAllocated", 8)) // 8), None if compressed else len(ds.PixelData))
    pixels = decode_pixels(ds, path)
    if samples > 1:
        # Colour: pydicom gives (..., H, W, 3); channels first. No modality LUT applies to RGB.
        image = np.moveaxis(np.asarray(pixels, dtype=np.float32), -1, 0)
    else:
        image = to_monochrome2(pixels, ds)[None]
    meta = {k: _json_value(getattr(ds, k)) for k in KEPT_KEYWORDS if k in ds and getattr(ds, k) not in (None, "")}
    meta["TransferSyntaxUID"] = str(ds.file_meta.TransferSyntaxUID)
    meta["converted_to"] = "MONOCHROME2" if samples == 1 else meta.get("PhotometricInterpretation")
    return image, meta


def _header(path: Path):
    """The file's header without its pixels (listing a series reads no pixel data); None for a file that
    is not DICOM (a README or a thumbnail beside the slices)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError):
        return None


def is_series_folder(folder: Path) -> bool:
    """Whether a folder holds DICOM slices (and no subfolders): one or more series to read as volumes."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    files = [p for p in entries if p.is_file()]
    if not files or len(files) != len(entries):
        return False
    return _header(sorted(files)[0]) is not None


def series_in(folder: Path) -> dict[str, list[Path]]:
    """The folder's DICOM files grouped by SeriesInstanceUID (scanner exports often mix a localiser,
    the scan and its reformats in one folder), in the order of their SeriesNumber."""
    groups: dict[str, list[Path]] = {}
    numbers: dict[str, float] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        header = _header(path)
        if header is None:
            raise ReadError(f"{path}: not a readable DICOM file in series folder {folder}")
        uid = str(getattr(header, "SeriesInstanceUID", ""))
        groups.setdefault(uid, []).append(path)
        numbers.setdefault(uid, float(getattr(header, "SeriesNumber", None) or 0))
    if not groups:
        raise ReadError(f"{folder}: no DICOM files")
    return {uid: groups[uid] for uid in sorted(groups, key=lambda u: (numbers[u], u))}


def series_files(folder: Path, series: str | None = None) -> list[Path]:
    """The files of one series in the folder: the named SeriesInstanceUID, else the folder's only one."""
    groups = series_in(folder)
    if series is None:
        if len(groups) > 1:
            raise ReadError(f"{folder}: holds {len(groups)} series (SeriesInstanceUID "
                            f"{', '.join(groups)}); list the folder through a layout, which makes each series "
                            "a sample, or put each series in its own folder")
        return next(iter(groups.values()))
    if series not in groups:
        raise ReadError(f"{folder}: no series with SeriesInstanceUID {series}; it holds {', '.join(groups)}")
    return groups[series]


def read_dicom_series(folder: Path, series: str | None = None) -> tuple[np.ndarray, dict]:
    """One DICOM series (a folder of single-slice files, or the series `series` among several in it) as a
    volume (1, X, Y, Z) reoriented to the closest RAS+ orientation, exactly as NIfTI volumes are read.

    Slices are ordered by their position along the slice normal (ImagePositionPatient projected
    on the cross product of the ImageOrientationPatient row and column directions), not by file
    name or InstanceNumber, which scanners do not always keep in order; the slice spacing comes from
    those positions (SliceThickness is not the spacing where slices overlap or leave gaps).
    """
    import pydicom

    files = series_files(folder, series)
    name = f"series {series} in {folder}" if series else f"series {folder}"
    of = f" of series {series}" if series else ""  # the messages below start with the folder
    slices = []
    for path in files:
        ds = pydicom.dcmread(path)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise ReadError(f"{path}: no ImagePositionPatient/ImageOrientationPatient; cannot place it in {name}")
        slices.append((path, ds))
    orientation, positions = slice_positions([ds for _, ds in slices])
    order = np.argsort(positions, kind="stable")
    first = slices[order[0]][1]
    claim(folder, (len(slices), int(first.Rows), int(first.Columns)), 4, None)
    steps = np.diff(positions[order])
    if len(steps) and np.any(steps <= 1e-3):
        shared = float(positions[order][1:][steps <= 1e-3][0])
        raise ReadError(f"{folder}: two slices{of} share the position {shared:g} mm along the slice normal; "
                        "a slice is duplicated (or two acquisitions were copied into one folder)")
    if len(steps) > 1 and np.any(steps > 1.5 * np.median(steps)):
        gap = int(np.argmax(steps))
        raise ReadError(f"{folder}: a slice{of} is missing between positions {positions[order][gap]:g} and "
                        f"{positions[order][gap + 1]:g} mm (the step is {steps[gap]:g} mm, the series' "
                        f"{np.median(steps):g} mm); copy the whole series")
    planes = []
    for index in order:
        path, ds = slices[index]
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=float), orientation, atol=1e-4):
            raise ReadError(f"{path}: its ImageOrientationPatient differs from the rest of {name}; "
                            "a series with tilted slices cannot be one volume")
        plane = to_monochrome2(decode_pixels(ds, path), ds)
        if planes and plane.shape != planes[0].shape:
            raise ReadError(f"{path}: slice shape {plane.shape} differs from {planes[0].shape} in {name}")
        planes.append(plane)
    _, affine = series_grid([ds for _, ds in slices])
    volume, canonical, original_codes = closest_canonical(np.stack(planes), affine)
    meta = {k: _json_value(getattr(first, k)) for k in KEPT_KEYWORDS if k in first and k != "ImagePositionPatient"}
    meta.update({"affine": canonical.tolist(), "spacing": np.sqrt((canonical[:3, :3] ** 2).sum(0)).tolist(),
                 "orientation": "RAS", "original_orientation": original_codes, "n_slices": len(planes),
                 "first_position": [float(v) for v in first.ImagePositionPatient]})
    return volume[None], meta


def slice_positions(datasets) -> tuple[np.ndarray, np.ndarray]:
    """The series' ImageOrientationPatient and each slice's position (mm) along the slice normal."""
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return orientation, np.array([np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)) for ds in datasets])


def series_grid(datasets) -> tuple[list, np.ndarray]:
    """The slices in volume order and the RAS affine of their (slice, row, column) array."""
    orientation, positions = slice_positions(datasets)
    order = np.argsort(positions, kind="stable")
    ordered = [datasets[i] for i in order]
    steps = np.diff(positions[order])
    row_spacing, column_spacing = (float(v) for v in getattr(ordered[0], "PixelSpacing", [1.0, 1.0]))
    slice_step = float(np.median(steps)) if len(steps) else float(getattr(ordered[0], "SliceThickness", 1.0) or 1.0)
    return ordered, series_affine(orientation, [float(v) for v in ordered[0].ImagePositionPatient],
                                  [slice_step, row_spacing, column_spacing])


def closest_canonical(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The volume with its axes permuted and flipped to the closest RAS+ orientation, its new affine,
    and the orientation it had: nibabel's as_closest_canonical, which the NIfTI reader applies."""
    import nibabel as nib
    from nibabel import orientations

    ornt = orientations.io_orientation(affine)
    reoriented = orientations.apply_orientation(volume, ornt)
    new_affine = affine @ orientations.inv_ornt_aff(ornt, volume.shape)
    return np.ascontiguousarray(reoriented), new_affine, "".join(nib.aff2axcodes(affine))


def series_affine(orientation: np.ndarray, first_position, spacing) -> np.ndarray:
    """The RAS affine of the (slice, row, column) array of a series: DICOM places column i, row j of slice k at
    IPP + i * dcol * X + j * drow * Y + k * dslice * N in LPS (X, Y: ImageOrientationPatient's row and
    column directions, N their cross product); RAS flips the first two axes."""
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    slice_step, row_spacing, column_spacing = spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = normal * slice_step, column_direction * row_spacing, row_direction * column_spacing
    lps[:3, 3] = first_position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
