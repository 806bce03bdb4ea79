"""FITS (astropy): the format of astronomical and particle-detector frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from sciconv.io import ReadError, register

# Header keywords that describe the file, not the instrument: not worth keeping.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE",
               "PCOUNT", "GCOUNT", "XTENSION", "COMMENT", "HISTORY", ""}


@register(".fits", ".fit", ".fts", ".fits.gz", ".fits.fz")
def read_fits(path: Path) -> tuple[np.ndarray, dict]:
    """The first HDU holding an image (primary or extension, tile-compressed included).

    astropy applies BZERO/BSCALE, so unsigned 16-bit detector data come back as
    their true values. Header keywords are kept as metadata.
    """
    try:
        with fits.open(path, memmap=False) as hdul:
            for index, hdu in enumerate(hdul):
                if hdu.is_image and hdu.data is not None and hdu.data.size > 0:
                    data = np.asarray(hdu.data)
                    meta = {k: v for k, v in hdu.header.items() if k not in _STRUCTURAL
                            and isinstance(v, (int, float, str, bool))}
                    meta["hdu"] = index
                    break
            else:
                raise ReadError(f"{path}: no HDU with image data")
    except (OSError, ValueError, TypeError) as err:
        if isinstance(err, ReadError):
            raise
        raise ReadError(f"{path}: not a readable FITS file ({err})") from err
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))  # FITS is big-endian; torch and h5py want native
    return data[None], meta
