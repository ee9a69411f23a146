"""Read end-to-end latency measurements of a search space's networks from a CSV file.

The format is HELP's / HW-NAS-Bench's, converted to CSV: one row per network, a column ``arch`` with the
searchable layers' op names in layer order separated by spaces, an optional ``arch_id`` column, and one column
per device with the network's latency in milliseconds::

    arch_id,arch,1080ti_1,pixel3,...
    0,k5_e6 skip k3_e1_g2 ... k5_e1_g2,10.6153,17.5577,...

Rows are named by their 1-based data row (the header is not counted) in every error.
:func:`write_measurements_csv` writes the same format, e.g. a transfer prior from your own measurement sets.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.io import write_bytes_atomic
from hwnas.spaces import Architecture, SearchSpace

ARCH_COLUMN = "arch"
ID_COLUMN = "arch_id"
_NOT_LATENCY = (ARCH_COLUMN, ID_COLUMN)


def read_measurements(path: str | Path, space: SearchSpace, column: str) -> tuple[list[Architecture], np.ndarray]:
    """The networks of ``path`` and their latencies (ms) in ``column``, in file order."""
    archs, latencies = _read(path, space, columns=[column])
    return archs, latencies[column]


def read_prior(path: str | Path, space: SearchSpace,
               exclude: Iterable[str] = ()) -> tuple[list[Architecture], dict[str, np.ndarray]]:
    """The networks of ``path`` and every latency column but ``exclude`` (the other devices: a transfer prior)."""
    archs, latencies = _read(path, space, columns=None, exclude=tuple(exclude))
    return archs, latencies


def write_measurements_csv(path: str | Path, archs: Sequence[Architecture],
                           latencies_ms: Mapping[str, Sequence[float]]) -> Path:
    """Write ``archs`` (one row each, ``arch_id`` numbering them from 0) and one latency column (ms) per entry of
    ``latencies_ms``, in the format :func:`read_measurements` and :func:`read_prior` read: measurement sets of
    other devices become a ``--prior`` for a transfer predictor. Refuses, in one line, what the readers would."""
    path = Path(path)
    if not archs:
        raise HwnasError(f"{path}: no networks to write")
    if not latencies_ms:
        raise HwnasError(f"{path}: no latency column to write")
    spaces = sorted({f"{a.space}@{a.resolution}" for a in archs})
    if len(spaces) > 1:
        raise HwnasError(f"{path}: networks of {', '.join(spaces)}; a measurements CSV holds one space at one "
                         "resolution")
    columns = {}
    for name, values in latencies_ms.items():
        where = f"{path}: column {name!r}"
        if not name or name != name.strip() or name in _NOT_LATENCY:
            raise HwnasError(f"{where}: expected a device name other than {' and '.join(map(repr, _NOT_LATENCY))}")
        row = [float(v) for v in values]
        if len(row) != len(archs):
            raise HwnasError(f"{where}: {len(row)} latencies, expected {len(archs)} (one per network)")
        if not all(math.isfinite(v) and v > 0 for v in row):
            raise HwnasError(f"{where}: expected positive finite latencies in ms")
        columns[name] = row
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([ID_COLUMN, ARCH_COLUMN, *columns])
    for index, arch in enumerate(archs):
        writer.writerow([index, " ".join(arch.choices), *(repr(columns[name][index]) for name in columns)])
    write_bytes_atomic(path, text.getvalue().encode())
    return path


def latency_columns(path: str | Path) -> list[str]:
    """The device columns of a measurements CSV (every column other than ``arch`` and ``arch_id``)."""
    path = Path(path)
    with _open(path) as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise HwnasError(f"{path}: empty file, expected a header line with an {ARCH_COLUMN!r} column")
    return [name for name in header if name not in _NOT_LATENCY]


def _open(path: Path):
    try:
        return path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such measurements file") from None
    except IsADirectoryError:
        raise HwnasError(f"{path}: is a folder, expected a measurements .csv file") from None


def _read(path: str | Path, space: SearchSpace, columns: Sequence[str] | None,
          exclude: tuple[str, ...] = ()) -> tuple[list[Architecture], dict[str, np.ndarray]]:
    path = Path(path)
    with _open(path) as handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or not any(name.strip() for name in header):
                raise HwnasError(f"{path}: empty file, expected a header line with an {ARCH_COLUMN!r} column")
            header = [name.strip() for name in header]
            wanted = _wanted_columns(path, header, columns, exclude)
            arch_at = header.index(ARCH_COLUMN)
            at = {name: header.index(name) for name in wanted}
            archs: list[Architecture] = []
            values: dict[str, list[float]] = {name: [] for name in wanted}
            for row_number, row in enumerate(reader, start=1):
                if not row or not any(cell.strip() for cell in row):
                    continue
                where = f"{path}: data row {row_number} (line {reader.line_num})"
                if len(row) != len(header):
                    raise HwnasError(f"{where}: {len(row)} fields, expected {len(header)} as in the header")
                archs.append(_arch(row[arch_at], space, where))
                for name, index in at.items():
                    values[name].append(_latency(row[index], name, where))
        except csv.Error as exc:
            raise HwnasError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise HwnasError(f"{path}: not a UTF-8 text CSV file") from None
    if not archs:
        raise HwnasError(f"{path}: empty file, expected data rows after the header")
    return archs, {name: np.asarray(vals, dtype=np.float64) for name, vals in values.items()}


def _wanted_columns(path: Path, header: list[str], columns: Sequence[str] | None,
                    exclude: tuple[str, ...]) -> list[str]:
    """The latency columns to read: ``columns`` (each must be in the header), or all but ``exclude`` (None)."""
    if ARCH_COLUMN not in header:
        raise HwnasError(f"{path}: header: no {ARCH_COLUMN!r} column (columns present: {', '.join(header)})")
    if columns is None:
        wanted = [name for name in header if name not in _NOT_LATENCY and name not in exclude]
        if not wanted:
            raise HwnasError(f"{path}: header: no latency column besides {ARCH_COLUMN!r} "
                             f"(columns present: {', '.join(header)})")
        return wanted
    for name in columns:
        if name not in header or name in _NOT_LATENCY:
            present = ", ".join(c for c in header if c not in _NOT_LATENCY)
            raise HwnasError(f"{path}: header: no latency column {name!r} (latency columns present: "
                             f"{present or 'none'})")
    return list(columns)


def _arch(cell: str, space: SearchSpace, where: str) -> Architecture:
    ops = cell.split()
    if len(ops) != len(space.layers):
        raise HwnasError(f"{where}: column {ARCH_COLUMN!r}: {len(ops)} op names, expected {len(space.layers)} "
                         f"(one per searchable layer of {space.name})")
    for layer, op in zip(space.layers, ops):
        if op not in layer.names:
            raise HwnasError(f"{where}: column {ARCH_COLUMN!r}: layer {layer.index} has no op {op!r} "
                             f"(expected one of {' '.join(layer.names)})")
    return Architecture(space.name, space.resolution, tuple(ops), space.num_classes)


def _latency(cell: str, column: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise HwnasError(f"{where}: column {column!r}: {cell.strip()!r} is not a number, "
                         "expected a latency in ms") from None
    if not math.isfinite(value) or value <= 0:
        raise HwnasError(f"{where}: column {column!r}: {cell.strip()!r}, expected a positive finite latency in ms")
    return value
