"""File readers, one per format, each returning (array, metadata), chosen by suffix; mask writers beside them.

A reader module registers itself with `register(suffixes)`; `read(path)` picks
the reader from the file name. Every reader returns images channels first,
`(C, *spatial)`; `read_mask` drops the channel and checks for integer classes.
`read_source` reads one input as a dataset's `source` settings say (forced format,
HDF5 dataset paths), the one way ingest and predict both read. A format that can hold
a predicted mask registers a writer with `register_mask_writer`; `write_mask` falls
back to .npy for the rest.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

Reader = Callable[[Path], "tuple[np.ndarray, dict]"]
_READERS: dict[str, Reader] = {}
# (mask, source file, source metadata, preprocessed-grid attrs, target path without suffix, stored label
# values, class names) -> path written
MaskWriter = Callable[[np.ndarray, Path, dict, dict, Path, "list[int] | None", "list[str] | None"], Path]
_MASK_WRITERS: dict[str, tuple[MaskWriter, bool]] = {}
SERIES_FOLDER = "<dicom series folder>"  # (lower case, as suffixes are kept) the key a writer for sources that are folders of slices registers
# A format named in a dataset's source.format picks the reader of one of its suffixes.
FORMAT_SUFFIX = {"dicom": ".dcm", "nifti": ".nii", "fits": ".fits", "hdf5": ".h5", "tiff": ".tif",
                 "image": ".png", "npy": ".npy", "csv": ".csv", "tsv": ".tsv"}
# The most channels a signal may have: a 2D array read for a dataset of 1D signals is (channels,
# length) when its first axis is at most this long, and an image (refused) otherwise.
MAX_SIGNAL_CHANNELS = 16
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class ReadError(OSError):
    """A file could not be read; the message names the file and the reason."""


# The most bytes one image may claim before a reader allocates it: a header is untrusted, and a
# corrupt or hostile one that claims terabytes must be refused, not obeyed. 8 GiB holds a float32
# volume of 1290^3; a truly larger image raises it with source.max_image_gib (or the environment's
# SCICONV_MAX_IMAGE_GIB for sciconv predict).
DEFAULT_MAX_IMAGE_GIB = 8.0
_max_image_bytes: contextvars.ContextVar[int | None] = contextvars.ContextVar("max_image_bytes", default=None)


@contextlib.contextmanager
def size_limit(max_gib: float | None):
    """Within the block, readers refuse images claiming more than max_gib (None: the default)."""
    token = _max_image_bytes.set(int(max_gib * 2**30) if max_gib else None)
    try:
        yield
    finally:
        _max_image_bytes.reset(token)


def max_image_bytes() -> int:
    limit = _max_image_bytes.get()
    if limit is not None:
        return limit
    return int(float(os.environ.get("SCICONV_MAX_IMAGE_GIB", DEFAULT_MAX_IMAGE_GIB)) * 2**30)


def claim(path: Path, shape, itemsize: int, stored_bytes: int | None = None) -> None:
    """Check what a header declares before anything is allocated for it.

    Refuses a shape whose bytes exceed the size limit, and, where the data are stored uncompressed
    (stored_bytes: what the file can hold for them), one that claims more than the file holds: a
    declared-but-unwritten HDF5 dataset, a NIfTI or FITS header edited to claim more voxels.
    """
    shape = [int(s) for s in shape]
    claimed = math.prod(shape) * int(itemsize)
    limit = max_image_bytes()
    if claimed > limit:
        raise ReadError(f"{path}: declares an array of shape {shape} ({claimed / 2**30:.3g} GiB), over the "
                        f"{limit / 2**30:.3g} GiB limit per image; if the image truly is that large, raise "
                        "source.max_image_gib (or SCICONV_MAX_IMAGE_GIB)")
    if stored_bytes is not None and claimed > stored_bytes:
        raise ReadError(f"{path}: declares an array of shape {shape} ({claimed:,} bytes) but holds only "
                        f"{stored_bytes:,} bytes of data; the file is truncated or its header is corrupt")


def register(*suffixes: str, options: tuple[str, ...] = ()):
    """options: the source keys the reader takes as keyword arguments (which HDU, which columns)."""
    def wrap(func: Reader) -> Reader:
        func.options = tuple(options)
        for suffix in suffixes:
            _READERS[suffix.lower()] = func
        return func
    return wrap


def register_mask_writer(*suffixes: str, onto_source_grid: bool = False):
    """onto_source_grid: the writer puts the mask back onto the source file's own grid (through its
    affine), so a predicted mask overlays the source in any viewer however preprocessing resampled it."""
    def wrap(func: MaskWriter) -> MaskWriter:
        for suffix in suffixes:
            _MASK_WRITERS[suffix.lower()] = (func, onto_source_grid)
        return func
    return wrap


def _suffix(path: Path, known=None) -> str:
    name = path.name.lower()
    for suffix in sorted(known if known is not None else _READERS, key=len, reverse=True):
        if name.endswith(suffix):  # longest first: .fits.fz before .fz
            return suffix
    return path.suffix.lower()


def format_suffix(fmt: str | None) -> str | None:
    """The suffix whose reader a source.format value names; None for auto (each file's own suffix)."""
    return None if fmt in (None, "auto") else FORMAT_SUFFIX[fmt]


def file_stem(path: Path | str) -> str:
    """The name without any suffix: scan.nii.gz -> scan."""
    return Path(path).name.split(".")[0]


def reader_for(path: Path | str) -> Reader:
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in _READERS:
        raise ReadError(f"{path}: no reader for files ending in {suffix!r}; "
                        f"readable: {', '.join(sorted(_READERS))}")
    return _READERS[suffix]


def read(path: Path | str, as_suffix: str | None = None, max_gib: float | None = None,
         options: dict | None = None) -> tuple[np.ndarray, dict]:
    """(image, metadata) with the image channels first; as_suffix forces a format (e.g. '.dcm' for
    files with none); max_gib bounds what one image may claim (default DEFAULT_MAX_IMAGE_GIB);
    options are the source keys that say where in a file the data are (source.hdu, source.column)."""
    with size_limit(max_gib):
        return _read(Path(path), as_suffix, {k: v for k, v in (options or {}).items() if v is not None})


def _read(path: Path, as_suffix: str | None, options: dict) -> tuple[np.ndarray, dict]:
    if path.is_dir():
        # A folder is a DICOM series: one slice per file, assembled into a volume.
        from sciconv.io.dicom import read_dicom_series

        return read_dicom_series(path)
    if not path.is_file():
        raise ReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ReadError(f"{path}: the file is empty (0 bytes); it was not written completely, or copied wrongly")
    reader = reader_for(Path(f"file{as_suffix}") if as_suffix else path)
    taken = getattr(reader, "options", ())
    unused = [f"source.{key}" for key in options if key not in taken]
    if unused:
        raise ReadError(f"{path}: {' and '.join(unused)} name a part of a file, which {_suffix(path)} files do not "
                        f"have; {'they apply' if len(unused) > 1 else 'it applies'} to FITS tables and CSV/TSV files only")
    try:
        image, meta = reader(path, **options)
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
    if image.size == 0:  # a header whose dimension is 0 (NIfTI dim[i] = 0) reads as an empty array
        raise ReadError(f"{path}: holds an empty image (shape {list(image.shape)}); its header declares a zero size")
    return image, meta


# header keys that name the subject a file belongs to (a patient), registered by the format readers
GROUP_KEYS: list[str] = []


def group_of(meta: dict) -> str | None:
    """The subject id a file's header gives (DICOM's PatientID), which keeps a subject's files in one set."""
    for key in GROUP_KEYS:
        if meta.get(key):
            return str(meta[key])
    return None


def read_source(image_path: Path | str, mask_path: Path | str | None, source: dict):
    """(image, metadata, mask or None, label stored in the file or None) for one input, read as the
    dataset's source settings say: source.format forces a reader, source.hdf5 names where an HDF5
    file keeps the image, its mask and its label. A mask file given beside the image wins over one
    stored in it."""
    image_path = Path(image_path)
    as_suffix, max_gib = format_suffix(source.get("format")), source.get("max_image_gib")
    hdf5_keys = source.get("hdf5")
    if hdf5_keys and (as_suffix or image_path.suffix).lower() in HDF5_SUFFIXES:
        from sciconv.io.arrays import read_hdf5_sample

        with size_limit(max_gib):
            image, meta, mask, label = read_hdf5_sample(image_path, hdf5_keys.get("image", "image"),
                                                        hdf5_keys.get("mask"), hdf5_keys.get("label"))
        if mask is not None and not mask_path:
            return image, meta, mask.astype(np.int64), label
    else:
        (image, meta), label = read(image_path, as_suffix, max_gib, part_options(source)), None
    return image, meta, read_mask(mask_path, as_suffix, max_gib) if mask_path else None, label


def part_options(source: dict) -> dict:
    """The source keys that say which part of a file holds the data (a FITS HDU, table columns)."""
    return {"hdu": source.get("hdu"), "column": source.get("column")}


def as_signal(image: np.ndarray, path: Path | str) -> np.ndarray:
    """An array read for a dataset of 1D signals as (channels, length): a vector is one channel, a 2D
    array (read as one image) is channels by length when it has at most MAX_SIGNAL_CHANNELS rows."""
    spatial = image.shape[1:]
    if len(spatial) == 1:
        return image
    if len(spatial) == 2 and image.shape[0] == 1 and spatial[0] <= MAX_SIGNAL_CHANNELS < spatial[1]:
        return image[0]
    raise ReadError(f"{path}: holds a {len(spatial)}D image of {' x '.join(map(str, spatial))} "
                    f"({image.shape[0]} channel(s)); this dataset's domain takes 1D signals: a vector, or "
                    f"(channels, length) with at most {MAX_SIGNAL_CHANNELS} channels")


def read_channels(paths: list[Path | str], as_suffix: str | None = None,
                  max_gib: float | None = None) -> tuple[np.ndarray, dict]:
    """One sample kept as one file per channel (MRI contrasts, photometric filters, CCD amplifiers), in
    the declared order: each file read by its own reader, all on one grid, stacked as channels. The
    metadata are the first file's, with every file listed."""
    parts, first_meta = [], None
    for path in map(Path, paths):
        image, meta = read(path, as_suffix, max_gib)
        if parts and image.shape[1:] != parts[0].shape[1:]:
            raise ReadError(f"{path}: channel of shape {list(image.shape[1:])}, but {paths[0]} has "
                            f"{list(parts[0].shape[1:])}; a sample's channel files must share one grid")
        if first_meta is not None and "affine" in meta and not np.allclose(meta["affine"], first_meta["affine"],
                                                                           atol=1e-3):
            raise ReadError(f"{path}: its affine differs from {paths[0]}'s; the channels of a sample must be on "
                            "one grid: register (resample) them onto one another before ingest")
        parts.append(image)
        first_meta = meta if first_meta is None else first_meta
    return np.concatenate(parts, 0), first_meta | {"channel_files": [str(p) for p in paths]}


def read_row(row: dict, source: dict, digest: bool = True,
             signal: bool = False) -> tuple[np.ndarray, dict, np.ndarray | None, object, str]:
    """(image, metadata, mask or None, label stored with it or None, content hash) of one row a layout
    lists: one file, one file per channel (row["channels"]), one item of an archive's split arrays
    (row["member"]), or one DICOM series among several in a folder (row["series"]). The hash is what
    the duplicate check compares (None without `digest`); the channel names a layout declares
    (row["channel_names"]) join the metadata. `signal`: the dataset holds 1D signals (as_signal)."""
    import hashlib

    from sciconv.runtime import sha256_file

    image, meta, mask, label, hashed = _read_row(row, source)
    if signal:
        image = as_signal(image, row["image"])
    if row.get("channel_names"):
        meta["channel_names"] = list(row["channel_names"])
    if not digest:
        return image, meta, mask, label, None
    if isinstance(hashed, np.ndarray):
        return image, meta, mask, label, hashlib.sha256(np.ascontiguousarray(hashed).tobytes()).hexdigest()
    if len(hashed) == 1:
        return image, meta, mask, label, sha256_file(hashed[0])
    return image, meta, mask, label, hashlib.sha256("".join(sha256_file(f) for f in hashed).encode()).hexdigest()


def _read_row(row: dict, source: dict):
    """What read_row returns, with what the hash covers in place of the hash: the array itself, or the files."""
    as_suffix, max_gib = format_suffix(source.get("format")), source.get("max_image_gib")
    if row.get("member"):
        from sciconv.io.arrays import read_npz_item

        with size_limit(max_gib):
            image, mask, label = read_npz_item(Path(row["image"]), row["member"], int(row["index"]),
                                               row.get("mask_member"), row.get("label_member"))
        meta = {"archive": row["image"], "member": row["member"], "index": int(row["index"])}
        return image, meta, mask, label, image
    if row.get("channels"):
        image, meta = read_channels(row["channels"], as_suffix, max_gib)
        mask = read_mask(row["mask"], as_suffix, max_gib) if row.get("mask") else None
        return image, meta, mask, None, [Path(f) for f in row["channels"]]
    path = Path(row["image"])
    if path.is_dir():  # a DICOM series: the folder's only one, or row["series"] among several
        from sciconv.io.dicom import read_dicom_series, series_files

        with size_limit(max_gib):
            image, meta = read_dicom_series(path, row.get("series"))
        mask = read_mask(row["mask"], None, max_gib) if row.get("mask") else None
        return image, meta, mask, None, series_files(path, row.get("series"))
    image, meta, mask, label = read_source(path, row.get("mask"), source)
    return image, meta, mask, label, [path]


def stored_labels(mask: np.ndarray, values: list[int] | None) -> np.ndarray:
    """Class indices as the label values a mask file stores (mask_values, e.g. BraTS 0, 1, 2, 4), uint8."""
    return np.asarray(values, dtype=np.uint8)[mask] if values else mask.astype(np.uint8)


def write_mask(mask: np.ndarray, source: Path | str, target_stem: Path, meta: dict | None = None,
               grid: dict | None = None, values: list[int] | None = None,
               onto_source_grid_only: bool = False, class_names: list[str] | None = None) -> Path | None:
    """A predicted class map (on the preprocessed grid) written in the source's own format where that
    format has a mask writer, else as .npy; target_stem is the path without suffix. meta is the
    source's metadata, grid the preprocessing attrs (its affine), values maps class index -> stored
    label value, class_names names the classes (a DICOM SEG labels its segments). With
    onto_source_grid_only, only writers that map back onto the source grid write, and None says
    there was none."""
    source = Path(source)
    key = SERIES_FOLDER if source.is_dir() else _suffix(source, _MASK_WRITERS)
    writer, onto_source_grid = _MASK_WRITERS.get(key, (None, False))
    if onto_source_grid_only and not onto_source_grid:
        return None
    target_stem.parent.mkdir(parents=True, exist_ok=True)
    if writer is None:
        target = target_stem.with_name(target_stem.name + ".npy")
        np.save(target, stored_labels(mask, values))
        return target
    return writer(mask, source, meta or {}, grid or {}, target_stem, values, class_names)


def read_mask(path: Path | str, as_suffix: str | None = None, max_gib: float | None = None) -> np.ndarray:
    """A label mask: the spatial array with integer classes."""
    image, _ = read(path, as_suffix, max_gib)
    mask = image[0] if image.shape[0] == 1 else image
    if not np.all(np.equal(np.mod(mask, 1), 0)):
        raise ReadError(f"{path}: a mask must hold integer class labels, found fractional values")
    return mask.astype(np.int64)


# Readers register on import.
from sciconv.io import arrays, dicom, dicom_seg, fits, nifti, tables  # noqa: E402,F401
