"""FITS reading: values, scaling keywords, extensions, and clear errors."""

import numpy as np
import pytest
from astropy.io import fits

from sciconv import io


def test_unsigned_16_bit_frame_round_trips_exactly(tmp_path):
    data = np.random.default_rng(0).integers(0, 65535, (20, 30)).astype(np.uint16)
    fits.PrimaryHDU(data, header=fits.Header([("GAIN", 2.5, "ADU/e-")])).writeto(tmp_path / "f.fits")
    # astropy stores uint16 as int16 with BZERO = 32768; the reader must undo it
    assert fits.getheader(tmp_path / "f.fits")["BZERO"] == 32768
    image, meta = io.read(tmp_path / "f.fits")
    assert image.shape == (1, 20, 30)
    np.testing.assert_array_equal(image[0], data)
    assert meta["GAIN"] == 2.5
    assert "BZERO" not in meta


def test_bscale_bzero_are_applied(tmp_path):
    hdu = fits.PrimaryHDU(np.array([[0, 10], [20, 30]], dtype=np.int16))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.writeto(tmp_path / "scaled.fits")
    image, _ = io.read(tmp_path / "scaled.fits")
    np.testing.assert_allclose(image[0], [[100, 105], [110, 115]])


def test_image_in_an_extension_and_tile_compressed(tmp_path):
    data = np.arange(64 * 64, dtype=np.int32).reshape(64, 64)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, compression_type="RICE_1")]).writeto(
        tmp_path / "c.fits.fz")
    image, meta = io.read(tmp_path / "c.fits.fz")
    np.testing.assert_array_equal(image[0], data)
    assert meta["hdu"] == 1


def test_big_endian_data_come_back_native(tmp_path):
    fits.PrimaryHDU(np.ones((4, 4), dtype=">f4")).writeto(tmp_path / "be.fits")
    image, _ = io.read(tmp_path / "be.fits")
    assert image.dtype.isnative


def test_mask_must_hold_integers(tmp_path):
    fits.PrimaryHDU(np.array([[0.5, 1.0]], dtype=np.float32)).writeto(tmp_path / "m.fits")
    with pytest.raises(io.ReadError, match="integer class labels"):
        io.read_mask(tmp_path / "m.fits")


def test_truncated_file_gives_a_read_error_naming_it(tmp_path):
    fits.PrimaryHDU(np.ones((100, 100), dtype=np.float32)).writeto(tmp_path / "t.fits")
    (tmp_path / "t.fits").write_bytes((tmp_path / "t.fits").read_bytes()[:3000])
    with pytest.raises(io.ReadError, match="t.fits"):
        io.read(tmp_path / "t.fits")


def test_unknown_suffix_lists_what_is_readable(tmp_path):
    (tmp_path / "x.xyz").write_text("hello")
    with pytest.raises(io.ReadError, match=r"no reader .*\.fits"):
        io.read(tmp_path / "x.xyz")


def test_one_hdu_per_amplifier_is_assembled_into_one_frame(tmp_path):
    """Two amplifiers, each with 2 overscan columns; the right one read out from the right edge."""
    left = np.arange(4 * 6, dtype=np.uint16).reshape(4, 6)
    right = (1000 + np.arange(4 * 6)).astype(np.uint16).reshape(4, 6)
    hdus = [fits.PrimaryHDU()]
    for name, data, detsec in (("AMP1", left, "[1:4,1:4]"), ("AMP2", right, "[8:5,1:4]")):
        header = fits.Header([("EXTNAME", name), ("DETSEC", detsec), ("DATASEC", "[1:4,1:4]"), ("GAIN", 2.0)])
        hdus.append(fits.ImageHDU(data, header=header))
    fits.HDUList(hdus).writeto(tmp_path / "amps.fits")
    image, meta = io.read(tmp_path / "amps.fits")
    assert image.shape == (1, 4, 8)
    np.testing.assert_array_equal(image[0, :, :4], left[:, :4])  # overscan (last 2 columns) dropped
    np.testing.assert_array_equal(image[0, :, 4:], right[:, :4][:, ::-1])  # reversed readout flipped
    assert meta["NAMPS"] == 2 and meta["AMPSEC2"] == "[5:8,1:4]" and meta["GAIN1"] == 2.0
    first, meta = io.reader_for("x.fits")(tmp_path / "amps.fits", assemble=False)
    assert first.shape == (1, 4, 4) and meta["hdu"] == 1  # the first amplifier alone: its DATASEC
