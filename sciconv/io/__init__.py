"""File readers, one per format, each returning (array, metadata), chosen by suffix.

A reader module registers itself with `register(suffixes)`; `read(path)` picks
the reader from the file name. Every reader returns images channels first,
`(C, *spatial)`; `read_mask` drops the channel and checks for integer classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

Reader = Callable[[Path], "tuple[np.ndarray, dict]"]
_READERS: dict[str, Reader] = {}


class ReadError(OSError):
    """A file could not be read; the message names the file and the reason."""


def register(*suffixes: str):
    def wrap(func: Reader) -> Reader:
        for suffix in suffixes:
            _READERS[suffix.lower()] = func
        return func
    return wrap


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_READERS, key=len, reverse=True):  # longest first: .fits.fz before .fz
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def reader_for(path: Path | str) -> Reader:
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in _READERS:
        raise ReadError(f"{path}: no reader for files ending in {suffix!r}; "
                        f"readable: {', '.join(sorted(_READERS))}")
    return _READERS[suffix]


def read(path: Path | str, as_suffix: str | None = None) -> tuple[np.ndarray, dict]:
    """(image, metadata) with the image channels first; as_suffix forces a format (e.g. '.dcm' for files with none)."""
    path = Path(path)
    if path.is_dir():
        # A folder is a DICOM series: one slice per file, assembled into a volume.
        from sciconv.io.dicom import read_dicom_series

        return read_dicom_series(path)
    if not path.is_file():
        raise ReadError(f"{path}: file not found")
    reader = reader_for(Path(f"file{as_suffix}") if as_suffix else path)
    try:
        image, meta = reader(path)
    except ReadError:
        raise
    except MemoryError as err:
        raise ReadError(f"{path}: declares an array larger than this machine's memory; "
                        "the header is corrupt or the file needs a machine with more memory") from err
    except Exception as err:  # noqa: BLE001 - the boundary with third-party parsers of untrusted bytes
        # A damaged file makes pydicom, nibabel, astropy, h5py or numpy raise whatever their parser
        # meets (struct.error, zlib.error, KeyError, IndexError, ...); the user gets one error naming the file.
        raise ReadError(f"{path}: not readable as {reader.__name__.removeprefix('read_')} "
                        f"({type(err).__name__}: {err})") from err
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.number):
        raise ReadError(f"{path}: holds no numeric image (found {getattr(image, 'dtype', type(image))})")
    return image, meta


# header keys that name the subject a file belongs to (a patient), registered by the format readers
GROUP_KEYS: list[str] = []


def group_of(meta: dict) -> str | None:
    """The subject id a file's header gives (DICOM's PatientID), which keeps a subject's files in one set."""
    for key in GROUP_KEYS:
        if meta.get(key):
            return str(meta[key])
    return None


def read_mask(path: Path | str, as_suffix: str | None = None) -> np.ndarray:
    """A label mask: the spatial array with integer classes."""
    image, _ = read(path, as_suffix)
    mask = image[0] if image.shape[0] == 1 else image
    if not np.all(np.equal(np.mod(mask, 1), 0)):
        raise ReadError(f"{path}: a mask must hold integer class labels, found fractional values")
    return mask.astype(np.int64)


# Readers register on import.
from sciconv.io import arrays, dicom, fits, nifti  # noqa: E402,F401
