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


def read_dicom_series(folder: Path) -> tuple[np.ndarray, dict]:
    """A folder of single-slice DICOM files as one volume (1, Z, H, W), slices in spatial order.

    Slices are ordered by their position along the slice normal (ImagePositionPatient projected
    on the cross product of the ImageOrientationPatient row and column directions), not by file
    name or InstanceNumber, which scanners do not always keep in order. The spacing is
    (slice step, row spacing, column spacing) in mm.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
            raise ReadError(f"{path}: not a readable DICOM file in series {folder} ({err})") from err
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise ReadError(f"{path}: no ImagePositionPatient/ImageOrientationPatient; cannot place it in the series")
        slices.append((path, ds))
    if not slices:
        raise ReadError(f"{folder}: no DICOM files")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise ReadError(f"{folder}: holds {len(series)} series; put each series in its own folder")
    orientation = np.array(slices[0][1].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)) for _, ds in slices])
    order = np.argsort(positions, kind="stable")
    planes = []
    for index in order:
        path, ds = slices[index]
        plane = to_monochrome2(decode_pixels(ds, path), ds)
        if planes and plane.shape != planes[0].shape:
            raise ReadError(f"{path}: slice shape {plane.shape} differs from {planes[0].shape} in the series")
        planes.append(plane)
    steps = np.diff(positions[order])
    if len(steps) and np.any(steps <= 1e-3):
        shared = float(positions[order][1:][steps <= 1e-3][0])
        raise ReadError(f"{folder}: two slices share the position {shared:g} mm along the slice normal; "
                        "a slice is duplicated (or two acquisitions were copied into one folder)")
    if len(steps) > 1 and np.any(steps > 1.5 * np.median(steps)):
        gap = int(np.argmax(steps))
        raise ReadError(f"{folder}: a slice is missing between positions {positions[order][gap]:g} and "
                        f"{positions[order][gap + 1]:g} mm (the step is {steps[gap]:g} mm, the series' "
                        f"{np.median(steps):g} mm); copy the whole series")
    meta = {k: _json_value(getattr(slices[0][1], k)) for k in KEPT_KEYWORDS
            if k in slices[0][1] and k != "ImagePositionPatient"}
    row_spacing, col_spacing = (float(v) for v in getattr(slices[0][1], "PixelSpacing", [1.0, 1.0]))
    meta["spacing"] = [float(np.median(steps)) if len(steps) else float(getattr(slices[0][1], "SliceThickness", 1.0)),
                       row_spacing, col_spacing]
    meta["n_slices"] = len(planes)
    meta["first_position"] = [float(v) for v in slices[order[0]][1].ImagePositionPatient]
    meta["affine"] = series_affine(orientation, meta["first_position"], meta["spacing"]).tolist()
    return np.stack(planes)[None], meta


def series_affine(orientation: np.ndarray, first_position, spacing) -> np.ndarray:
    """The RAS affine of the (slice, row, column) array: DICOM places column i, row j of slice k at
    IPP + i * dcol * X + j * drow * Y + k * dslice * N in LPS (X, Y: ImageOrientationPatient's row and
    column directions, N their cross product); RAS flips the first two axes."""
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    slice_step, row_spacing, column_spacing = spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = normal * slice_step, column_direction * row_spacing, row_direction * column_spacing
    lps[:3, 3] = first_position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
