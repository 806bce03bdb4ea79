"""The HDF5 layout of ingested.h5 and preprocessed.h5, read and written only here.

    /                       attrs: domain, task, class_names (JSON list), sciconv_version, stage, ...
    /samples/<id>/image     float or int array, channels first (C, *spatial), chunked + gzip
    /samples/<id>/mask      optional, (*spatial), integer class per pixel/voxel
    /samples/<id>           attrs: source (path), sha256, label and/or target, meta (JSON)

Writers stream one sample at a time (memory flat in the number of samples) and
write to a temporary name that is renamed only when the file is complete, so an
interrupted step never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from sciconv import __version__
from sciconv.runtime import storage_problem


class StoreError(OSError):
    """A store file is missing, unwritable or not in sciconv's layout."""


@dataclass
class Sample:
    id: str
    image: np.ndarray
    mask: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self):
        return self.attrs.get("label")


JSON_ATTRS = "_json_attrs"


def _attr_value(value):
    """h5py stores scalars and strings; anything nested goes in as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if value is None:
        return "null"
    return value


def _from_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class StoreWriter:
    """Context manager: `with StoreWriter(path, domain=..., ...) as w: w.add(sample)`."""

    def __init__(self, path: Path | str, **file_attrs):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.file_attrs = {"sciconv_version": __version__, **file_attrs}
        self.count = 0

    def __enter__(self) -> "StoreWriter":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(self.tmp, "w")
        except OSError as err:
            reason = storage_problem(err) or (f"cannot write here ({err.strerror or err}); check that the "
                                             "results folder exists, is writable and has free space")
            raise StoreError(f"{self.path}: {reason}") from err
        self.samples = self.file.create_group("samples")
        return self

    def add(self, sample: Sample) -> None:
        group = self.samples.create_group(sample.id)
        group.create_dataset("image", data=sample.image, chunks=True, compression="gzip",
                             compression_opts=4, shuffle=True)
        if sample.mask is not None:
            group.create_dataset("mask", data=sample.mask, chunks=True, compression="gzip",
                                 compression_opts=4, shuffle=True)
        nested = sorted(k for k, v in sample.attrs.items() if isinstance(v, (dict, list, tuple)))
        for key, value in sample.attrs.items():
            group.attrs[key] = _attr_value(value)
        if nested:  # which attributes to decode again on reading (lists such as a grid's spacing or affine)
            group.attrs[JSON_ATTRS] = json.dumps(nested)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for key, value in self.file_attrs.items():
                self.file.attrs[key] = _attr_value(value)
            self.file.attrs["n_samples"] = self.count
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class StoreReader:
    """Read access: `ids`, `attrs` (file attributes) and `sample(id)`."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: not found; run the step that writes it first")
        self.file = h5py.File(self.path, "r")
        if "samples" not in self.file:
            raise StoreError(f"{self.path}: not a sciconv store (no 'samples' group)")
        self.attrs = {k: _from_attr(v) for k, v in self.file.attrs.items()}
        self.class_names = json.loads(self.attrs.get("class_names", "[]"))

    @property
    def ids(self) -> list[str]:
        return sorted(self.file["samples"].keys())

    def sample_attrs(self, sample_id: str) -> dict:
        attrs = {k: _from_attr(v) for k, v in self.file["samples"][sample_id].attrs.items()}
        for key in json.loads(attrs.pop(JSON_ATTRS, "[]")):
            attrs[key] = json.loads(attrs[key])
        if "meta" in attrs:
            attrs["meta"] = json.loads(attrs["meta"])
        return attrs

    def stored(self, sample_id: str, key: str, dtype, cache: "ArrayCache") -> "StoredArray | None":
        """The sample's image or mask as a StoredArray (read when indexed), or None if it has none."""
        group = self.file["samples"][sample_id]
        if key not in group:
            return None
        dataset = group[key]
        shape = dataset.shape if key == "image" else (1, *dataset.shape)
        return StoredArray(self.path, f"samples/{sample_id}/{key}", shape, np.dtype(dtype), cache)

    def sample(self, sample_id: str) -> Sample:
        group = self.file["samples"][sample_id]
        mask = group["mask"][()] if "mask" in group else None
        return Sample(sample_id, group["image"][()], mask, self.sample_attrs(sample_id))

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.ids:
            yield self.sample(sample_id)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayCache:
    """Whole arrays read from stores, least recently used dropped first, at most max_bytes in all."""

    def __init__(self, max_bytes: int):
        from collections import OrderedDict

        self.max_bytes, self.bytes, self.arrays = max_bytes, 0, OrderedDict()
        self.handles: dict[Path, h5py.File] = {}

    def handle(self, path: Path) -> h5py.File:
        if path not in self.handles:  # one open file per store: opening costs about a millisecond
            self.handles[path] = h5py.File(path, "r")
        return self.handles[path]

    def get(self, key, load):
        if key in self.arrays:
            self.arrays.move_to_end(key)
            return self.arrays[key]
        array = load()
        if array.nbytes <= self.max_bytes:
            self.arrays[key] = array
            self.bytes += array.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self.arrays.popitem(last=False)
                self.bytes -= dropped.nbytes
        return array


class StoredArray:
    """A sample's image (C, *spatial) or mask (1, *spatial) left in its HDF5 store until indexed.

    For datasets larger than memory (train.cache: store): indexing with slices reads only the
    chunks the slice touches (a training crop), np.asarray reads the whole array through a
    bounded ArrayCache.
    """

    def __init__(self, path: Path, name: str, shape: tuple, dtype: np.dtype, cache: ArrayCache):
        self.path, self.name, self.shape, self.dtype, self.cache = Path(path), name, tuple(shape), dtype, cache
        self.is_mask = name.endswith("/mask")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _read(self, key=()):
        dataset = self.cache.handle(self.path)[self.name]
        if self.is_mask:  # stored without the channel axis
            key = key if isinstance(key, tuple) else (key,)
            if key and key[0] not in (slice(None), 0):
                raise IndexError("a mask has one channel")
            values = dataset[key[1:] if key else ()].astype(self.dtype)
            return values if key and key[0] == 0 else values[None]
        return dataset[key].astype(self.dtype)

    def __getitem__(self, key):
        return self._read(key)

    def __array__(self, dtype=None, copy=None):
        array = self.cache.get((self.path, self.name), self._read)
        return array.astype(dtype) if dtype is not None else array
