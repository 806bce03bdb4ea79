"""Property-based: every reader, fed damaged files, returns an image or raises sciconv's ReadError naming the file.

Each format starts from a valid file written by its own library; hypothesis then truncates it,
flips bytes, overwrites its header, empties it, or declares a huge shape. Any other exception,
a crash of the interpreter or a hang (hypothesis's deadline) fails the test.
"""

from __future__ import annotations

import io as bytes_io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sciconv import io

CASES_PER_FORMAT = 150
tried: dict[str, int] = {}


def valid_files() -> dict[str, bytes]:
    """One small valid file per reader, as bytes, keyed by suffix."""
    import h5py
    import nibabel as nib
    import pydicom
    import tifffile
    from astropy.io import fits
    from pydicom.data import get_testdata_file
    from skimage import io as skio

    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (16, 12)).astype(np.uint16)
    out = {}
    buffer = bytes_io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(image.astype(np.int16))]).writeto(buffer)
    out[".fits"] = buffer.getvalue()
    out[".dcm"] = Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes()
    buffer = bytes_io.BytesIO()
    np.save(buffer, image)
    out[".npy"] = buffer.getvalue()
    nifti = nib.Nifti1Image(rng.normal(size=(6, 7, 5)).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    out[".nii"] = nifti.to_bytes()
    buffer = bytes_io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["image"] = image
    out[".h5"] = buffer.getvalue()
    buffer = bytes_io.BytesIO()
    tifffile.imwrite(buffer, image)
    out[".tif"] = buffer.getvalue()
    buffer = bytes_io.BytesIO()
    skio.imsave(buffer, (image // 4).astype(np.uint8), extension=".png", check_contrast=False)
    out[".png"] = buffer.getvalue()
    assert pydicom  # imported for the sample's reader
    return out


VALID = valid_files()


def huge_shape(suffix: str, original: bytes) -> bytes:
    """The file with its declared shape made enormous where the format has a simple header field."""
    data = bytearray(original)
    if suffix == ".npy":
        return original.replace(b"(16, 12)", b"(99999999, 99999999)", 1)
    if suffix == ".nii":
        struct.pack_into("<8h", data, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[0..7]
        return bytes(data)
    if suffix == ".fits":
        return original.replace(b"NAXIS1  =                   12", b"NAXIS1  =           999999999", 1)
    return original[: len(original) // 3]


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1,
                                        max_size=12)),
    st.tuples(st.just("header"), st.binary(min_size=1, max_size=400)),
    st.tuples(st.just("empty"), st.none()),
    st.tuples(st.just("huge"), st.none()),
)


def damaged(suffix: str, kind: str, arg) -> bytes:
    original = VALID[suffix]
    if kind == "truncate":
        return original[: int(arg * len(original))]
    if kind == "flip":
        data = bytearray(original)
        for where, mask in arg:
            data[int(where * len(data))] ^= mask
        return bytes(data)
    if kind == "header":
        return arg + original[len(arg):]
    if kind == "empty":
        return b""
    return huge_shape(suffix, original)


@pytest.mark.parametrize("suffix", sorted(VALID))
def test_damaged_files_end_in_a_read_error_naming_the_file(suffix, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz{suffix.replace('.', '_')}")
    path = folder / f"sample{suffix}"
    image, _ = io.read(_write(path, VALID[suffix]))  # the undamaged file reads
    assert image.size > 0

    @settings(max_examples=CASES_PER_FORMAT, deadline=5000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(damage)
    def check(case):
        tried[suffix] = tried.get(suffix, 0) + 1
        _write(path, damaged(suffix, *case))
        try:
            result, meta = io.read(path)
        except io.ReadError as err:
            assert str(path) in str(err)
            return
        # a flipped pixel byte can leave a valid file: then it must still be a numeric image
        assert isinstance(result, np.ndarray) and np.issubdtype(result.dtype, np.number) and result.size > 0
        assert isinstance(meta, dict)

    check()
    assert tried[suffix] >= CASES_PER_FORMAT


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
