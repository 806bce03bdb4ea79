"""FITS (astropy): the format of astronomical and particle-detector frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from sciconv.io import ReadError, claim, register, register_mask_writer, stored_labels

# Header keywords that describe the file, not the instrument: not worth keeping.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO", "BSCALE",
               "PCOUNT", "GCOUNT", "XTENSION", "COMMENT", "HISTORY", "ZIMAGE", "ZBITPIX", "ZCMPTYPE", ""}


def _keywords(header) -> dict:
    return {k: v for k, v in header.items() if k not in _STRUCTURAL and isinstance(v, (int, float, str, bool))}


def parse_section(section: str) -> tuple[slice, slice, bool, bool]:
    """A FITS section '[x1:x2,y1:y2]' (1-based, inclusive; x1 > x2 means read out reversed) as numpy slices."""
    try:
        xs, ys = section.strip().strip("[]").split(",")
        x1, x2 = (int(v) for v in xs.split(":"))
        y1, y2 = (int(v) for v in ys.split(":"))
    except ValueError as err:
        raise ValueError(f"malformed section {section!r}; expected '[x1:x2,y1:y2]'") from err
    return (slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2)), x1 > x2, y1 > y2)


def assemble_amplifiers(hdus: list, path: Path) -> tuple[np.ndarray, dict]:
    """One frame from one HDU per amplifier, each placed at its DETSEC, keeping only its DATASEC.

    Overscan and prescan columns (outside DATASEC) are dropped; an amplifier whose DETSEC runs
    backwards (x1 > x2) was read out from the other side and is flipped into place. AMPSECn
    keywords in the metadata give each amplifier's block of the assembled frame.
    """
    placed = []
    for hdu in hdus:
        rows, cols, flip_x, flip_y = parse_section(hdu.header["DETSEC"])
        data = np.asarray(hdu.data)
        if "DATASEC" in hdu.header:
            data_rows, data_cols, _, _ = parse_section(hdu.header["DATASEC"])
            data = data[data_rows, data_cols]
        if flip_x:
            data = data[:, ::-1]
        if flip_y:
            data = data[::-1, :]
        if data.shape != (rows.stop - rows.start, cols.stop - cols.start):
            raise ReadError(f"{path}: HDU {hdu.name}: data {data.shape} does not fill DETSEC {hdu.header['DETSEC']}")
        placed.append((rows, cols, data, hdu))
    height = max(r.stop for r, *_ in placed)
    width = max(c.stop for _, c, *_ in placed)
    frame = np.zeros((height, width), dtype=np.result_type(*(d.dtype for *_, d, _ in placed)))
    meta = _keywords(hdus[0].header)
    meta["NAMPS"] = len(placed)
    for i, (rows, cols, data, hdu) in enumerate(placed, start=1):
        frame[rows, cols] = data
        meta[f"AMPSEC{i}"] = f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"
        for key in ("GAIN", "RDNOISE"):
            if key in hdu.header:
                meta[f"{key}{i}"] = float(hdu.header[key])
    return frame, meta


def claim_hdu(hdu, path: Path) -> None:
    """An image HDU's header shape checked before astropy reads its data (memmap=False reads it whole)."""
    if not hdu.is_image:
        return
    header = hdu.header
    shape = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    if not shape:
        return
    compressed = isinstance(hdu, fits.CompImageHDU) or str(path).lower().endswith(".gz")
    itemsize = abs(int(header.get("BITPIX", 8))) // 8
    claim(path, shape, max(itemsize, 4), None)  # astropy scales to float32 (or wider) where BSCALE applies
    claim(path, shape, itemsize, None if compressed else path.stat().st_size)


# .pha, .pi: OGIP spectra; .lc: light curves (FITS files by another name)
@register(".fits", ".fit", ".fts", ".fits.gz", ".fits.fz", ".pha", ".pi", ".lc", options=("hdu", "column"))
def read_fits(path: Path, assemble: bool | None = None, hdu: int | str | None = None,
              column: str | list[str] | None = None) -> tuple[np.ndarray, dict]:
    """A frame from a FITS file: the first image HDU, or the amplifiers assembled; or a signal from a
    table's columns.

    assemble=None assembles when there are several image HDUs that all carry DETSEC (one per
    amplifier, as CCD controllers write them); False always takes the first image HDU.
    astropy applies BZERO/BSCALE, so unsigned 16-bit data come back as their true values, and
    tile-compressed HDUs are decompressed. Header keywords are kept as metadata.
    `hdu` (index or EXTNAME) picks the HDU; `column` (one name or several, one channel each) reads
    a binary or ASCII table, as a spectrum's COUNTS in an OGIP PHA file. A file without image data
    but with a table is read as that table (OGIP files put the spectrum in a SPECTRUM extension).
    """
    try:
        with fits.open(path, memmap=False) as hdul:
            for one in hdul:
                claim_hdu(one, path)
            chosen = pick_hdu(hdul, hdu, path) if hdu is not None else None
            images = [(i, h) for i, h in enumerate(hdul) if h.is_image and h.data is not None and h.data.size > 0]
            tables = [(i, h) for i, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
            if column is not None or (chosen is not None and not chosen[1].is_image) or (not images and tables):
                index, table = chosen or (tables[0] if tables else (None, None))
                if table is None or table.is_image:
                    raise ReadError(f"{path}: source.column {column!r} names a table column, but HDU "
                                    f"{index if table is not None else '(none)'} is not a table")
                data, meta = table_columns(table, column, path)
                meta["hdu"] = index
            elif chosen is not None:
                data, meta = np.asarray(chosen[1].data), _keywords(chosen[1].header)
                meta["hdu"] = chosen[0]
            else:
                if not images:
                    raise ReadError(f"{path}: no HDU with image data and no table")
                amplifiers = [h for _, h in images if "DETSEC" in h.header]
                if assemble is not False and len(images) > 1 and len(amplifiers) == len(images):
                    data, meta = assemble_amplifiers(amplifiers, path)
                    meta["hdu"] = "assembled"
                else:
                    index, first = images[0]
                    data, meta = crop_to_datasec(np.asarray(first.data), _keywords(first.header), path)
                    meta["hdu"] = index
    except (OSError, ValueError, TypeError, KeyError) as err:
        if isinstance(err, ReadError):
            raise
        raise ReadError(f"{path}: not a readable FITS file ({err})") from err
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))  # FITS is big-endian; torch and h5py want native
    return (data if meta.get("table_columns") else data[None]), meta


def crop_to_datasec(data: np.ndarray, meta: dict, path: Path) -> tuple[np.ndarray, dict]:
    """A frame read with its overscan: the exposed pixels (DATASEC), and each overscan region's median per
    row (BIASSEC, or BIASSECn per amplifier) as metadata OVERSCAN / OVERSCANn, the pedestal of each row
    that the frame's own pixels, full of charge, cannot give."""
    if "DATASEC" not in meta or data.ndim != 2:
        return data, meta
    rows, cols, _, _ = parse_section(meta["DATASEC"])
    for key in [k for k in meta if k == "BIASSEC" or (k.startswith("BIASSEC") and k[7:].isdigit())]:
        bias_rows, bias_cols, _, _ = parse_section(meta[key])
        if (bias_rows.start, bias_rows.stop) != (rows.start, rows.stop):
            raise ReadError(f"{path}: {key} {meta[key]} covers other rows than DATASEC {meta['DATASEC']}")
        meta["OVERSCAN" + key[7:]] = np.median(data[bias_rows, bias_cols], axis=1).astype(float).tolist()
    return data[rows, cols], meta


def pick_hdu(hdul, hdu: int | str, path: Path):
    """(index, HDU) named by source.hdu: an index, or an EXTNAME (case-insensitive)."""
    names = [h.name or str(i) for i, h in enumerate(hdul)]
    if isinstance(hdu, int) or str(hdu).isdigit():
        index = int(hdu)
        if not 0 <= index < len(hdul):
            raise ReadError(f"{path}: source.hdu {hdu} is out of range; the file has {len(hdul)} HDUs ({', '.join(names)})")
        return index, hdul[index]
    for index, one in enumerate(hdul):
        if one.name.upper() == str(hdu).upper():
            return index, one
    raise ReadError(f"{path}: source.hdu {hdu!r}: no HDU of that EXTNAME; it has {', '.join(names)}")


# The columns a spectrum or light curve is kept in (OGIP PHA: COUNTS or RATE; light curves: RATE,
# FLUX), taken when source.column is not given; an axis column (CHANNEL, TIME, ENERGY) never is.
SIGNAL_COLUMNS = ("COUNTS", "RATE", "FLUX")


def table_columns(table, column: str | list[str] | None, path: Path) -> tuple[np.ndarray, dict]:
    """The named columns of a table HDU as (channels, rows), float; the header keywords as metadata."""
    names = list(table.columns.names)
    if column is None:
        found = [name for name in names if name.upper() in SIGNAL_COLUMNS]
        if not found:
            raise ReadError(f"{path}: table HDU {table.name} has columns {', '.join(names)} and none of "
                            f"{', '.join(SIGNAL_COLUMNS)}; set source.column to the signal's column(s)")
        wanted = found[:1]
    else:
        wanted = [column] if isinstance(column, str) else list(column)
    upper = {name.upper(): name for name in names}
    missing = [name for name in wanted if name.upper() not in upper]
    if missing:
        raise ReadError(f"{path}: table HDU {table.name} has no column {', '.join(missing)} (source.column); "
                        f"its columns: {', '.join(names)}")
    parts = []
    for name in wanted:
        values = np.asarray(table.data[upper[name.upper()]])
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
            raise ReadError(f"{path}: column {name} of HDU {table.name} holds {values.dtype} values of shape "
                            f"{list(values.shape)}; a signal column holds one number per row")
        parts.append(values.astype(np.float64))
    meta = _keywords(table.header) | {"table_columns": [upper[n.upper()] for n in wanted]}
    return np.stack(parts), meta


@register_mask_writer(".fits", ".fit", ".fts", ".fits.gz", ".fits.fz")
def write_fits_mask(mask: np.ndarray, source: Path, meta: dict, grid: dict, target_stem: Path,
                    values: list[int] | None = None, class_names: list[str] | None = None) -> Path:
    """The class map as a FITS image carrying the source's header keywords (exposure, gain, ...), so
    the usual astronomy tools read it beside its frame."""
    stored = stored_labels(mask, values)
    hdu = fits.PrimaryHDU(stored)
    for key, value in meta.items():
        if len(key) <= 8 and key.isupper() and isinstance(value, (int, float, str, bool)) and key not in hdu.header:
            hdu.header[key] = value
    hdu.header["SCMASK"] = (True, "sciconv predicted class per pixel")
    target = target_stem.with_name(target_stem.name + ".fits")
    hdu.writeto(target, overwrite=True)
    return target
