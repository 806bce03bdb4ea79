"""Delimited text (CSV, TSV): signals kept as columns, one row per bin or time step.

A header row (any cell that is not a number) names the columns; without one, columns are named by
their 0-based position. `source.column` picks one column or several (one channel each); left out,
every numeric column is a channel except an axis column (channel, bin, energy, time, wavelength:
where the samples lie, not what was measured), so a two-column `energy_kev,counts` file is one
counts signal.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from sciconv.io import ReadError, claim, register

AXIS_COLUMNS = {"channel", "bin", "index", "energy", "energy_kev", "kev", "time", "t", "time_s", "mjd",
                "wavelength", "frequency", "x"}


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


@register(".csv", ".tsv", options=("column",))
def read_table(path: Path, column: str | list[str] | None = None) -> tuple[np.ndarray, dict]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # a text file's values take at least two bytes each (a digit and a separator): what its size can hold
    claim(path, (path.stat().st_size // 2,), 8)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle, delimiter=delimiter) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ReadError(f"{path}: no rows")
    has_header = any(_number(cell) is None for cell in rows[0])
    names = [cell.strip() for cell in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise ReadError(f"{path}: a header and no values")
    wanted = _columns(names, column, path)
    values = np.full((len(wanted), len(body)), np.nan)
    for r, row in enumerate(body, start=2 if has_header else 1):
        for c, index in enumerate(wanted):
            cell = row[index].strip() if index < len(row) else ""
            number = _number(cell) if cell else math.nan
            if number is None:
                raise ReadError(f"{path}: line {r}, column {names[index]}: {cell!r} is not a number")
            values[c, r - (2 if has_header else 1)] = number
    return values, {"table_columns": [names[i] for i in wanted], "rows": len(body)}


def _columns(names: list[str], column: str | list[str] | None, path: Path) -> list[int]:
    if column is None:
        chosen = [i for i, name in enumerate(names) if name.lower() not in AXIS_COLUMNS]
        if not chosen:
            raise ReadError(f"{path}: every column ({', '.join(names)}) is an axis; set source.column")
        return chosen
    wanted = [column] if isinstance(column, str) else list(column)
    lookup = {name.lower(): i for i, name in enumerate(names)}
    missing = [name for name in wanted if str(name).lower() not in lookup]
    if missing:
        raise ReadError(f"{path}: no column {', '.join(map(str, missing))} (source.column); its columns: "
                        f"{', '.join(names)}")
    return [lookup[str(name).lower()] for name in wanted]
