"""Latency lookup tables: one human-readable JSON file per (device, space, resolution).

A table holds a schema version, the device profile, a fingerprint of the machine and runtime, the
measurement protocol, dates, the per-invocation overhead of an empty model, and per-op-key statistics.
Every write is atomic (temporary file + ``os.replace``), so an interrupted profile leaves the last complete
table on disk and resumes from it. A save holds a lock on the table file and merges, by op key, what other
processes saved into it meanwhile, so concurrent profiles of the same table lose no entry.

Every JSON file hwnas writes goes through :func:`write_json_atomic`: strict JSON, a non-finite number becomes
``null`` rather than the invalid token ``NaN``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from hwnas.errors import HwnasError
from hwnas.locations import lock_file, shipped_dir, user_dir

SCHEMA = "hwnas.latency_table/1"
_STAT_FIELDS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "n")


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-inf) replaced by None, so it serializes as strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def dumps_strict(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity`` (they become ``null``)."""
    return json.dumps(finite_json(data), allow_nan=False, **kwargs)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write strict JSON (see :func:`finite_json`) so that readers (and a kill -9) only ever see the old or the
    new complete file."""
    path = Path(path)
    text = dumps_strict(data, indent=1, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a table is an ordinary readable file
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_file(path: Path, what: str) -> Any:
    """The JSON content of ``path``; a missing file, a folder, bytes that are not UTF-8 or invalid JSON raise one
    line naming the file and ``what`` was expected (e.g. ``"latency table"``)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise HwnasError(f"{path}: is a folder, expected a {what} .json file") from None
    except UnicodeDecodeError:
        raise HwnasError(f"{path}: corrupt {what}, not UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwnasError(f"{path}: corrupt {what}, not valid JSON ({exc})") from None


@dataclass
class LatencyTable:
    """Per-op latency statistics of one device for one search space at one resolution."""

    device: dict[str, Any]
    space: str
    resolution: int
    num_classes: int
    fingerprint: dict[str, Any]
    protocol: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    overhead: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    path: Path | None = None

    @property
    def device_name(self) -> str:
        return str(self.device.get("name", "?"))

    def median_ms(self, key: str) -> float:
        if key not in self.entries:
            where = self.path or "latency table"
            raise HwnasError(
                f"{where}: no entry for op {key}; run `hwnas profile --device {self.device_name} --space {self.space} "
                f"--resolution {self.resolution}` to measure the missing ops"
            )
        entry = self.entries[key]
        if self.reference and entry.get("reference_ms"):
            # paired while profiled: brought to the table's quiet reference level (a chunk measured while the
            # machine was slow had its reference slow by the same factor)
            return float(entry["median_ms"]) * float(self.reference["median_ms"]) / float(entry["reference_ms"])
        return float(entry["median_ms"])

    @property
    def overhead_ms(self) -> float:
        return float(self.overhead["median_ms"]) if self.overhead else 0.0

    def noisy_keys(self) -> list[str]:
        return [key for key, entry in self.entries.items() if entry.get("noisy")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "device": self.device,
            "space": self.space,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint,
            "protocol": self.protocol,
            "created": self.created,
            "updated": self.updated,
            "overhead": self.overhead,
            "reference": self.reference,
            "entries": self.entries,
        }

    def identity(self) -> tuple[str, str, int, int]:
        """What makes two tables the same table: device name, space, resolution and the head's classes."""
        return self.device_name, self.space, self.resolution, self.num_classes

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table atomically while holding its lock file; entries that another process saved into the
        same table (same :meth:`identity` and fingerprint) since this one was loaded are merged in by key first
        (this table's own entries win)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise HwnasError("latency table has no path to save to")
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_file(target))):
            self._merge_from(target)
            self.updated = now_iso()
            write_json_atomic(target, self.to_dict())
        self.path = target
        return target

    def _merge_from(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            saved = LatencyTable.load(path)
        except HwnasError:
            return  # not a readable table of ours: replaced, as before
        if saved.identity() != self.identity() or saved.fingerprint != self.fingerprint:
            return
        for key, entry in saved.entries.items():
            self.entries.setdefault(key, entry)
        if self.overhead is None:
            self.overhead = saved.overhead
        if self.reference is None:
            self.reference = saved.reference

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LatencyTable:
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: not a latency table (expected a JSON object)")
        if data.get("schema") != SCHEMA:
            raise HwnasError(f"{source}: field 'schema': expected {SCHEMA!r}, got {data.get('schema')!r}")
        expected = {"device": dict, "space": str, "resolution": int, "num_classes": int, "fingerprint": dict,
                    "protocol": dict, "entries": dict}
        for name, typ in expected.items():
            if name not in data:
                raise HwnasError(f"{source}: missing field {name!r}")
            if not isinstance(data[name], typ):
                raise HwnasError(f"{source}: field {name!r}: expected {typ.__name__}, got {type(data[name]).__name__}")
        for key, entry in data["entries"].items():
            _check_stats(entry, f"{source}: entry {key!r}")
        overhead = data.get("overhead")
        if overhead is not None:
            _check_stats(overhead, f"{source}: field 'overhead'")
        reference = data.get("reference")
        if reference is not None and not (isinstance(reference, dict) and _positive(reference.get("median_ms"))):
            raise HwnasError(f"{source}: field 'reference': expected {{\"arch\", \"median_ms\" > 0}} or null")
        for key, entry in data["entries"].items():
            if "reference_ms" in entry and not _positive(entry["reference_ms"]):
                raise HwnasError(f"{source}: entry {key!r}: field 'reference_ms': expected a positive number")
        return cls(
            device=data["device"], space=data["space"], resolution=data["resolution"],
            num_classes=data["num_classes"], fingerprint=data["fingerprint"], protocol=data["protocol"],
            entries=data["entries"], overhead=overhead, reference=reference, created=str(data.get("created", "")),
            updated=str(data.get("updated", "")),
        )

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        table = cls.from_dict(read_json_file(path, "latency table"), str(path))
        table.path = path
        return table


def _check_stats(stats: Any, where: str) -> None:
    """Statistics are finite non-negative numbers (a NaN or a negative overhead would corrupt every sum)."""
    if not isinstance(stats, dict):
        raise HwnasError(f"{where}: expected an object of statistics")
    for stat in _STAT_FIELDS:
        value = stats.get(stat)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise HwnasError(f"{where}: field {stat!r}: expected a finite non-negative number, got {value!r}")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


TABLES_ENV_VAR = "HWNAS_TABLES"


def tables_dir() -> Path:
    """The folder of shipped tables (and ``predictors/``, ``sets/`` below it): ``$HWNAS_TABLES`` when set, else the
    package's copy in an installed wheel, else the checkout's ``latency_tables/`` (see :mod:`hwnas.locations`).
    Read-only: new tables go to :func:`user_tables_dir`."""
    env = os.environ.get(TABLES_ENV_VAR)
    return Path(env).expanduser() if env else shipped_dir("latency_tables")


def user_tables_dir() -> Path:
    """The user's own tables (``$HWNAS_DATA/latency_tables``), written by ``profile`` and ``search``."""
    return user_dir("latency_tables")


def table_folders() -> list[Path]:
    """Where tables are looked up, first match wins: the user's folder, then :func:`tables_dir`."""
    return [user_tables_dir(), tables_dir()]


def find_table_file(name: str) -> Path | None:
    """The first file ``name`` (relative, e.g. ``predictors/X.json``) in :func:`table_folders`, None if none."""
    for folder in table_folders():
        if (folder / name).is_file():
            return folder / name
    return None


def table_name(device_name: str, space: str, resolution: int) -> str:
    return f"{device_name}__{space}__{resolution}.json"


def user_table_path(device_name: str, space: str, resolution: int) -> Path:
    """Where a new table of ``device_name`` for ``space`` at ``resolution`` is written."""
    return user_tables_dir() / table_name(device_name, space, resolution)


def default_table_path(device_name: str, space: str, resolution: int) -> Path:
    """The table to read for ``device_name``, ``space`` and ``resolution``: the user's, else the shipped one, else
    (none exists) the path where a new one is written (:func:`user_table_path`)."""
    name = table_name(device_name, space, resolution)
    return find_table_file(name) or user_tables_dir() / name


def foreign_table_note(table: LatencyTable) -> str | None:
    """One line saying how the machine or runtime libraries ``table`` was measured with differ from this one's
    (None when they match or the table does not say): estimates from it may not hold here."""
    from importlib import metadata

    from hwnas.runtimes.fingerprint import fingerprint_differences, machine_fingerprint

    differences = []
    stored = table.fingerprint.get("machine")
    if stored:
        differences += fingerprint_differences({"machine": stored}, {"machine": machine_fingerprint()})
    versions = (table.fingerprint.get("runtime") or {}).get("versions") or {}
    for package, version in sorted(versions.items()):
        try:
            installed = metadata.version(package)
        except (metadata.PackageNotFoundError, ValueError):
            continue  # not a distribution name, or not installed here (then the runtime says so when used)
        if str(version) != installed:
            differences.append(f"runtime.versions.{package}: {version!r} -> {installed!r}")
    if not differences:
        return None
    return f"{table.path or 'latency table'}: measured on another machine or runtime ({'; '.join(differences)})"
