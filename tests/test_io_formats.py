"""Readers against files other tools wrote: the samples pydicom and nibabel ship, and files written here."""

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sciconv import io


def sample(name):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm", "image_dfl.dcm", "MR_small_RLE.dcm",
                                  "JPEG2000.dcm"])
def test_dicom_transfer_syntaxes_match_pydicom(name):
    from pydicom.pixels import apply_modality_lut

    path = sample(name)
    ds = pydicom.dcmread(path)
    image, meta = io.read(path)
    assert image.shape == (1, *ds.pixel_array.shape)
    np.testing.assert_allclose(image[0], apply_modality_lut(ds.pixel_array, ds))
    assert meta["TransferSyntaxUID"] == str(ds.file_meta.TransferSyntaxUID)
    assert image.dtype.isnative


def test_dicom_rescale_is_applied():
    path = sample("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image, meta = io.read(path)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    np.testing.assert_allclose(image[0], ds.pixel_array * slope + intercept)
    assert meta["PixelSpacing"] == [float(v) for v in ds.PixelSpacing]


def test_monochrome1_is_inverted_onto_the_same_range(tmp_path):
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    image, meta = io.read(tmp_path / "m1.dcm")
    bits = int(ds.BitsStored)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1  # MR_small stores signed values
    np.testing.assert_allclose(image[0], lo + hi - ds.pixel_array.astype(np.float32))
    assert meta["converted_to"] == "MONOCHROME2"


def test_unsupported_codec_names_the_syntax_and_the_extra():
    """Without the dicom-codecs extra (its modules hidden in a fresh interpreter) the error says what to install."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('pylibjpeg', 'libjpeg', 'openjpeg', 'jpeg_ls', 'gdcm', 'pylibjpeg_rle'):\n"
        "    sys.modules[name] = None\n"
        "from sciconv import io\n"
        f"io.read({str(sample('MR_small_jpeg_ls_lossless.dcm'))!r})\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "ReadError" in run.stderr and "JPEG-LS Lossless" in run.stderr
    assert "pip install sciconv[dicom-codecs]" in run.stderr


@pytest.mark.parametrize("compressed", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_jpeg_family_with_the_codecs_extra_equals_the_uncompressed_file(compressed):
    pytest.importorskip("pylibjpeg", reason="the dicom-codecs extra is not installed")
    reference = "MR_small.dcm"
    image, meta = io.read(sample(compressed))
    expected, _ = io.read(sample(reference))
    np.testing.assert_array_equal(image, expected)
    assert meta["TransferSyntaxUID"] != str(pydicom.dcmread(sample(reference)).file_meta.TransferSyntaxUID)


def test_dicom_without_pixels_and_non_dicom(tmp_path):
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(io.ReadError, match="without pixel data"):
        io.read(tmp_path / "nopix.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(io.ReadError, match="junk.dcm"):
        io.read(tmp_path / "junk.dcm")


def test_nifti_reoriented_to_ras_with_scaling(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    # LPS-like orientation: x and y flipped, anisotropic 1 x 1 x 3 mm voxels
    affine = np.diag([-1.0, -1.0, 3.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, tmp_path / "v.nii.gz")
    image, meta = io.read(tmp_path / "v.nii.gz")
    assert meta["original_orientation"] == "LPS" and meta["orientation"] == "RAS"
    assert image.shape == (1, 4, 5, 6)
    np.testing.assert_allclose(image[0], (data * 2.0 + 10.0)[::-1, ::-1, :])
    assert meta["spacing"] == [1.0, 1.0, 3.0]
    assert np.allclose(np.array(meta["affine"])[:3, :3], np.diag([1.0, 1.0, 3.0]))


def test_nifti_4d_gives_channels_and_matches_nibabel_on_its_own_sample():
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    if not path.exists():
        pytest.skip("nibabel's example4d.nii.gz is not installed")
    image, _ = io.read(path)
    expected = nib.as_closest_canonical(nib.load(path)).get_fdata(dtype=np.float32)
    assert image.shape == (expected.shape[-1], *expected.shape[:3])
    np.testing.assert_allclose(image, np.moveaxis(expected, -1, 0))


def test_hdf5_tiff_picture_and_numpy(tmp_path):
    import tifffile
    from skimage import io as skio

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (3, 8, 9)).astype(np.uint16)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("scan/image", data=volume).attrs["spacing"] = [1.0, 0.5, 0.5]
    image, meta = io.read(tmp_path / "a.h5")
    np.testing.assert_array_equal(image[0], volume)
    assert meta["dataset"] == "scan/image" and meta["spacing"] == [1.0, 0.5, 0.5]

    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack")  # three grey pages
    image, meta = io.read(tmp_path / "stack.tif")
    assert image.shape == (1, 3, 8, 9) and meta["pages"] == 3
    np.testing.assert_array_equal(image[0], volume)

    rgb = rng.integers(0, 255, (8, 9, 3)).astype(np.uint8)
    skio.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    image, _ = io.read(tmp_path / "c.png")
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0))

    np.savez(tmp_path / "x.npz", image=volume[0], other=volume[1])
    image, meta = io.read(tmp_path / "x.npz")
    np.testing.assert_array_equal(image[0], volume[0])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(io.ReadError, match="obj.npy"):
        io.read(tmp_path / "obj.npy")  # pickled objects are refused


def test_dicom_series_assembled_by_position_not_by_name(tmp_path):
    template = pydicom.dcmread(sample("MR_small.dcm"))
    series = tmp_path / "series"
    series.mkdir()
    rng = np.random.default_rng(1)
    planes = {}
    for z in (2.5, 0.0, 5.0):  # written out of order, under names that sort the wrong way
        ds = template.copy()
        values = rng.integers(0, 1000, template.pixel_array.shape).astype(np.int16)
        ds.PixelData = values.tobytes()
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.save_as(series / f"slice_{int(10 - z)}.dcm")
        planes[z] = values * float(ds.RescaleSlope) + float(ds.RescaleIntercept) if "RescaleSlope" in ds else values
    image, meta = io.read(series)
    # read in RAS order, as a NIfTI volume is: columns (DICOM +x, toward the left) reversed to run to
    # the right, rows (+y, posterior) reversed to run anterior, slices (+z) superior, as written
    rows, columns = template.pixel_array.shape
    assert image.shape == (1, columns, rows, 3) and meta["orientation"] == "RAS"
    for index, z in enumerate(sorted(planes)):
        np.testing.assert_allclose(image[0, :, :, index], planes[z][::-1, ::-1].T)
    row_mm, column_mm = (float(v) for v in template.PixelSpacing)
    assert meta["spacing"] == [column_mm, row_mm, 2.5]
    # the affine maps each array index to where DICOM puts that voxel (column i, row j: IPP + i X + j Y)
    affine = np.asarray(meta["affine"])
    i, j, k = 4, 3, 2
    lps = np.array([i * column_mm, j * row_mm, 2.5 * k])
    np.testing.assert_allclose(affine @ [columns - 1 - i, rows - 1 - j, k, 1], [-lps[0], -lps[1], lps[2], 1])


@pytest.mark.parametrize("damage, message", [("missing", "a slice is missing between positions 2.5 and 7.5 mm"),
                                             ("duplicate", "two slices share the position 5 mm")])
def test_a_damaged_dicom_series_names_the_gap_or_the_duplicate(tmp_path, damage, message):
    template = pydicom.dcmread(sample("MR_small.dcm"))
    positions = {"missing": (0.0, 2.5, 7.5, 10.0), "duplicate": (0.0, 2.5, 5.0, 5.0)}[damage]
    for index, z in enumerate(positions):
        ds = template.copy()
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.save_as(tmp_path / f"slice_{index}.dcm")
    with pytest.raises(io.ReadError, match=message):
        io.read(tmp_path)


def test_dicom_multiframe_is_a_volume(tmp_path):
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    frames = np.stack([ds.pixel_array + i for i in range(4)]).astype(np.int16)
    ds.NumberOfFrames = 4
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "multi.dcm")
    image, meta = io.read(tmp_path / "multi.dcm")
    assert image.shape == (1, 4, *ds.pixel_array.shape[1:]) and meta["NumberOfFrames"] == 4
    np.testing.assert_allclose(image[0, 3], frames[3])


def test_astropy_sample_fits_files_read_like_astropy():
    from astropy.io import fits
    import astropy

    data_dir = Path(astropy.__file__).parent / "io" / "fits" / "tests" / "data"
    checked = 0
    for path in sorted(data_dir.glob("*.fits")):
        try:
            with fits.open(path) as hdul:
                first = next((h for h in hdul if h.is_image and h.data is not None and h.data.size > 0), None)
                expected = None if first is None else np.asarray(first.data)
                several = sum(1 for h in hdul if h.is_image and h.data is not None and h.data.size > 0) > 1
        except (OSError, ValueError, TypeError, KeyError, IndexError):  # astropy ships deliberately broken files
            continue
        if expected is None or several or expected.ndim != 2 or not np.issubdtype(expected.dtype, np.number):
            continue
        image, _ = io.read(path)
        np.testing.assert_array_equal(image[0], expected)
        checked += 1
    assert checked >= 5, f"only {checked} astropy sample files were comparable"
