"""DICOM (pydicom): single images, multi-frame images, and the pixel conventions that vary by scanner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import ReadError, register

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
    pixels = decode_pixels(ds, path)
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if samples > 1:
        # Colour: pydicom gives (..., H, W, 3); channels first. No modality LUT applies to RGB.
        image = np.moveaxis(np.asarray(pixels, dtype=np.float32), -1, 0)
    else:
        image = to_monochrome2(pixels, ds)[None]
    meta = {k: _json_value(getattr(ds, k)) for k in KEPT_KEYWORDS if k in ds and getattr(ds, k) not in (None, "")}
    meta["TransferSyntaxUID"] = str(ds.file_meta.TransferSyntaxUID)
    meta["converted_to"] = "MONOCHROME2" if samples == 1 else meta.get("PhotometricInterpretation")
    return image, meta
