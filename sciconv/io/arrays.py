"""Array and picture formats: HDF5, TIFF, PNG/JPEG, NumPy.

Channel convention where the file does not say: a 1D array is one signal (1, L); a 2D array is
one grey image (1, H, W) (or, for a dataset of signals, channels by length: sciconv.io.as_signal);
a 3D TIFF stack or array is a volume (1, D, H, W); an RGB(A) picture's last axis of 3 or 4 is
its channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.io import ReadError, claim, register


def channels_first(array: np.ndarray, path: Path, colour_last: bool = False) -> np.ndarray:
    if array.size == 0:
        raise ReadError(f"{path}: the array is empty (shape {array.shape})")
    if colour_last and array.ndim == 3 and array.shape[-1] in (3, 4):
        return np.moveaxis(array, -1, 0)
    if array.ndim in (1, 2, 3):
        return array[None]
    raise ReadError(f"{path}: {array.ndim}D array of shape {array.shape}; expected a 1D signal, a 2D image or a "
                    "3D volume")


def pick(names: list[str], path: Path, preferred: str = "image") -> str:
    if preferred in names:
        return preferred
    if len(names) == 1:
        return names[0]
    if not names:
        raise ReadError(f"{path}: holds no dataset (an image must be stored as an HDF5 dataset or NumPy array, "
                        "not only groups and attributes)")
    raise ReadError(f"{path}: holds {', '.join(names)}; name the image dataset "
                    f"(expected one called {preferred!r}, or a single one)")


def read_hdf5_dataset(dataset, path: Path) -> np.ndarray:
    """A dataset's values, once its declared shape has been checked against the limit and against what
    is stored: chunks never written read as fill values, so a declared-but-unwritten dataset would
    otherwise allocate its whole claimed size out of a file of a few hundred bytes."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise ReadError(f"{path}: {dataset.name} is a group, not a dataset")
    stored = dataset.id.get_storage_size()
    claim(path, dataset.shape or (), dataset.dtype.itemsize,
          None if dataset.compression or dataset.chunks else stored)
    if stored == 0 and dataset.size > 0:
        raise ReadError(f"{path}: dataset {dataset.name} of shape {list(dataset.shape)} is declared but holds "
                        "no data (never written)")
    return np.asarray(dataset[()])


@register(".h5", ".hdf5", ".hdf")
def read_hdf5(path: Path, dataset: str | None = None) -> tuple[np.ndarray, dict]:
    """The dataset `dataset` (default: 'image', or the file's only dataset), with its attributes."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names: list[str] = []
            handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            key = dataset or pick(names, path)
            if key not in handle:
                raise ReadError(f"{path}: no dataset {key!r}; it holds {', '.join(names) or 'no dataset at all'} "
                                "(set source.hdf5.image to the image's dataset path)")
            array = read_hdf5_dataset(handle[key], path)
            meta = {k: (v.item() if isinstance(v, np.generic) else v.tolist() if isinstance(v, np.ndarray) else
                        v.decode() if isinstance(v, bytes) else v) for k, v in handle[key].attrs.items()}
    except ReadError:
        raise
    except OSError as err:
        raise ReadError(f"{path}: not a readable HDF5 file ({err})") from err
    meta["dataset"] = key
    return channels_first(np.asarray(array), path), meta


@register(".tif", ".tiff")
def read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    """Single pages as images, multi-page stacks as volumes (tifffile)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series or not tif.pages:
                raise ReadError(f"{path}: a TIFF file without any image (no readable page)")
            series = tif.series[0]
            compressed = any(int(page.compression) != 1 for page in tif.pages[:1])
            claim(path, series.shape, series.dtype.itemsize, None if compressed else path.stat().st_size)
            array = tif.asarray()
            pages = len(tif.pages)
    except ReadError:  # already names the file and the reason (and is an OSError)
        raise
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise ReadError(f"{path}: not a readable TIFF file ({err})") from err
    return channels_first(array, path, colour_last=pages == 1), {"pages": pages}


@register(".png", ".jpg", ".jpeg")
def read_picture(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image
    from skimage import io as skio

    try:
        with Image.open(path) as picture:  # the header only: size and mode, nothing decoded yet
            claim(path, (*picture.size, len(picture.getbands())), 2 if picture.mode.startswith("I;16") else 4
                  if picture.mode in ("I", "F") else 1)
        array = skio.imread(path)
    except ReadError:  # already names the file and the reason (and is an OSError)
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise ReadError(f"{path}: not a readable image ({err})") from err
    return channels_first(array, path, colour_last=True), {}


def claim_npz_member(archive, key: str, path: Path) -> None:
    """An .npz member's header, read from the zip before its data are inflated."""
    with archive.zip.open(f"{key}.npy") as member:
        shape, dtype, _ = _npy_header(member, path, key)
    claim(path, shape, dtype.itemsize)


@register(".npy", ".npz")
def read_numpy(path: Path) -> tuple[np.ndarray, dict]:
    """NumPy arrays; object arrays are refused (allow_pickle=False: a data file must not run code)."""
    try:
        if path.suffix.lower() == ".npy":
            # memory-mapped first: its shape is the header's, and numpy refuses a header that claims
            # more than the file holds, before anything is allocated
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            claim(path, mapped.shape, mapped.dtype.itemsize)
            del mapped
        loaded = np.load(path, allow_pickle=False)
    except ReadError:  # already names the file and the reason (and is an OSError)
        raise
    except (OSError, ValueError, EOFError) as err:
        raise ReadError(f"{path}: not a readable NumPy file ({err})") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = pick(list(loaded.files), path)
            claim_npz_member(loaded, key, path)
            return channels_first(loaded[key], path), {"array": key}
    return channels_first(loaded, path), {}


def read_hdf5_sample(path: Path, image: str = "image", mask: str | None = None,
                     label: str | None = None) -> tuple[np.ndarray, dict, np.ndarray | None, object]:
    """Image, metadata, mask and label of one sample stored together in one HDF5 file.

    `mask` names a dataset; `label` names a scalar dataset, or else an attribute of the image
    dataset or of the file.
    """
    import h5py

    array, meta = read_hdf5(path, image)
    mask_array, label_value = None, None
    try:
        with h5py.File(path, "r") as handle:
            if mask:
                if mask not in handle:
                    raise ReadError(f"{path}: no mask dataset {mask!r}")
                mask_array = read_hdf5_dataset(handle[mask], path)
            if label:
                if label in handle and isinstance(handle[label], h5py.Dataset):
                    label_value = handle[label][()]
                elif label in handle[image].attrs:
                    label_value = handle[image].attrs[label]
                elif label in handle.attrs:
                    label_value = handle.attrs[label]
                else:
                    raise ReadError(f"{path}: no label {label!r} (neither a dataset nor an attribute)")
    except ReadError:
        raise
    except OSError as err:
        raise ReadError(f"{path}: not a readable HDF5 file ({err})") from err
    if isinstance(label_value, np.generic):
        label_value = label_value.item()
    if isinstance(label_value, bytes):
        label_value = label_value.decode()
    return array, meta, mask_array, label_value


# --------------------------------------------------------------------------- .npz archives of whole splits
SPLIT_PREFIXES = ("train", "val", "test")


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, bool]]:
    """Each member's (shape, dtype, Fortran order), read from the zip without inflating any data."""
    import zipfile

    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as member:
                    headers[name[:-4]] = _npy_header(member, path, name[:-4])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ReadError(f"{path}: not a readable .npz archive ({err})") from err
    return headers


def _npy_header(member, path: Path, key: str):
    version = np.lib.format.read_magic(member)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise ReadError(f"{path}: member {key} has .npy format version {version}; save it with numpy's default")
    shape, fortran, dtype = read_header(member)
    if dtype.hasobject:
        raise ReadError(f"{path}: member {key} holds Python objects; a data file must hold numbers")
    return tuple(int(s) for s in shape), dtype, bool(fortran)


class _MemberStream:
    """One member's items in order: item i is the i-th block of prod(shape[1:]) values after the header,
    so a whole split is read with one item in memory at a time."""

    def __init__(self, path: Path, key: str):
        import zipfile

        self.archive = zipfile.ZipFile(path)
        self.member = self.archive.open(f"{key}.npy")
        self.shape, self.dtype, fortran = _npy_header(self.member, path, key)
        if fortran or not self.shape:
            raise ReadError(f"{path}: member {key} is stored in Fortran order (or is a scalar); items cannot be "
                            "read one at a time: save it with np.savez(..., np.ascontiguousarray(array))")
        self.item_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.next = 0

    def read(self, index: int) -> np.ndarray:
        """Item `index`, at or after the last one read (zip members are read forwards)."""
        if not 0 <= index < self.shape[0]:
            raise ReadError(f"{self.archive.filename}: item {index} outside the {self.shape[0]} items")
        while self.next < index:  # skipped items are read and dropped: one item in memory at a time
            self.member.read(self.item_bytes)
            self.next += 1
        data = self.member.read(self.item_bytes)
        if len(data) != self.item_bytes:
            raise ReadError(f"{self.archive.filename}: item {index} is truncated; the archive is incomplete")
        self.next += 1
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])

    def close(self) -> None:
        self.member.close()
        self.archive.close()


_STREAMS: dict[tuple[str, str], _MemberStream] = {}


def _item(path: Path, key: str, index: int) -> np.ndarray:
    stream = _STREAMS.get((str(path), key))
    if stream is None or stream.next > index:
        if stream is not None:
            stream.close()
        stream = _STREAMS[(str(path), key)] = _MemberStream(path, key)
    return stream.read(index)


def close_npz_streams() -> None:
    for stream in _STREAMS.values():
        stream.close()
    _STREAMS.clear()


def read_npz_item(path: Path, member: str, index: int, mask_member: str | None = None,
                  label_member: str | None = None) -> tuple[np.ndarray, np.ndarray | None, object]:
    """Item `index` of an archive's split arrays (MedMNIST's train_images, train_labels, ...): the image
    channels first (a trailing axis of 3 or 4 is colour), its mask or its label."""
    try:
        image = _item(path, member, index)
        claim(path, image.shape, image.dtype.itemsize)
        mask = _item(path, mask_member, index).astype(np.int64) if mask_member else None
        label = None
        if label_member:
            value = _item(path, label_member, index).reshape(-1)
            label = value[0].item()
    except ReadError:
        raise
    except (OSError, ValueError, EOFError, KeyError) as err:
        raise ReadError(f"{path}: item {index} of {member} not readable ({type(err).__name__}: {err})") from err
    return channels_first(np.array(image), path, colour_last=True), mask, label
