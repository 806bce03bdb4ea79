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


def claiming_files(folder: Path) -> dict[str, Path]:
    """Per format, small files whose headers claim far more than they hold: declared-but-unwritten
    HDF5 datasets (contiguous and chunked), and headers edited to claim gigabytes or terabytes."""
    import zlib

    import h5py
    import pydicom
    from pydicom.data import get_testdata_file

    files = {}
    for name, kwargs in (("unwritten_contiguous", {}), ("unwritten_chunked", {"chunks": (1000, 1000),
                                                                               "compression": "gzip"})):
        files[name] = folder / f"{name}.h5"
        with h5py.File(files[name], "w") as handle:
            handle.create_dataset("image", shape=(20000, 20000), dtype="f4", **kwargs)  # 1.6 GB, nothing written
    files["terabyte.h5"] = folder / "terabyte.h5"
    with h5py.File(files["terabyte.h5"], "w") as handle:
        handle.create_dataset("image", shape=(10**6, 10**6), dtype="f4", chunks=(100, 100))
    for suffix in (".npy", ".nii", ".fits"):
        files[suffix] = _write(folder / f"huge{suffix}", huge_shape(suffix, VALID[suffix]))
    files["moderate.fits"] = _write(folder / "moderate.fits", VALID[".fits"].replace(
        b"NAXIS1  =                   12", b"NAXIS1  =                 1200", 1))  # 38 kB claimed in 5.8 kB
    files["moderate.nii"] = folder / "moderate.nii"
    data = bytearray(VALID[".nii"])
    struct.pack_into("<8h", data, 40, 3, 1000, 1000, 1000, 1, 1, 1, 1)  # 4 GB of float32, under the limit
    _write(files["moderate.nii"], bytes(data))
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.Rows, ds.Columns = 60000, 60000
    files[".dcm"] = folder / "huge.dcm"
    ds.save_as(files[".dcm"])
    import tifffile

    buffer = bytes_io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((16, 12), np.uint16), metadata=None)  # no shape in the description
    tiff = buffer.getvalue()
    for tag, value in ((256, 12), (257, 16)):  # ImageWidth, ImageLength, as tifffile writes them (LONG)
        tiff = tiff.replace(struct.pack("<HHII", tag, 4, 1, value), struct.pack("<HHII", tag, 4, 1, 60000))
    files[".tif"] = _write(folder / "huge.tif", tiff)
    png = bytearray(VALID[".png"])
    struct.pack_into(">II", png, 16, 60000, 60000)  # IHDR width, height, with its CRC made valid again
    struct.pack_into(">I", png, 29, zlib.crc32(bytes(png[12:29])))
    files[".png"] = _write(folder / "huge.png", bytes(png))
    return files


PEAK_PROBE = """
import json, resource, sys
from sciconv import io
outcomes = {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name, path in json.loads(sys.argv[1]).items():
    try:
        image, _ = io.read(path)
        outcomes[name] = f"read {image.shape}"
    except io.ReadError as err:
        outcomes[name] = str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcomes": outcomes, "peak_growth_mib": (after - before) / 1024}))
"""


def test_files_claiming_more_than_they_hold_are_refused_before_allocation(tmp_path):
    import json
    import subprocess
    import sys

    files = claiming_files(tmp_path)
    assert max(p.stat().st_size for p in files.values()) < 2**20  # each claim rests on a file of under 1 MiB
    probe = subprocess.run([sys.executable, "-c", PEAK_PROBE, json.dumps({k: str(v) for k, v in files.items()})],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.splitlines()[-1])
    for name, outcome in report["outcomes"].items():
        assert str(files[name]) in outcome, f"{name} was read: {outcome}"
    outcomes = report["outcomes"]
    assert "over the 8 GiB limit per image" in outcomes["terabyte.h5"]
    assert "raise source.max_image_gib" in outcomes["terabyte.h5"]
    assert "holds only 0 bytes" in outcomes["unwritten_contiguous"]
    assert "declared but holds no data" in outcomes["unwritten_chunked"]
    for name, shape in (("moderate.nii", "[1000, 1000, 1000]"), ("moderate.fits", "[1200, 16]"), (".tif", "[60000, 60000]")):
        assert f"{files[name]}: declares an array of shape {shape}" in outcomes[name], outcomes[name]
        assert "truncated or its header is corrupt" in outcomes[name] and "not a readable" not in outcomes[name]
    assert "over the 8 GiB limit" in outcomes[".dcm"] and "over the 8 GiB limit" in outcomes[".nii"]
    # imports done before the baseline: what reading all of them added to the process's peak memory
    assert report["peak_growth_mib"] < 256, report


def test_the_size_limit_is_configurable_for_truly_large_images(tmp_path):
    path = tmp_path / "image.npy"
    np.save(path, np.zeros((256, 256), np.float32))  # 256 KiB
    with pytest.raises(io.ReadError, match=r"over the 0.000122 GiB limit"):
        io.read(path, max_gib=2**-13)
    assert io.read(path, max_gib=1)[0].shape == (1, 256, 256)
    image, _, _, _ = io.read_source(path, None, {"format": "auto", "max_image_gib": 1})
    assert image.shape == (1, 256, 256)


def test_a_header_declaring_a_zero_size_is_an_error_not_an_empty_image(tmp_path):
    """Found by the fuzz test: one flipped bit in a NIfTI dim field gave a (1, 0, 7, 5) array."""
    data = bytearray(VALID[".nii"])
    struct.pack_into("<h", data, 42, 0)  # dim[1] = 0
    path = _write(tmp_path / "zero_dim.nii", bytes(data))
    with pytest.raises(io.ReadError, match=r"zero_dim.nii: holds an empty image \(shape \[1, 0, 7, 5\]\)"):
        io.read(path)
