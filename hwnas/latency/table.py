"""Latency lookup tables: one human-readable JSON file per (device, space, resolution).

A table holds a schema version, the device profile, a fingerprint of the machine and runtime, the
measurement protocol, dates, the per-invocation overhead of an empty model, and per-op-key statistics.
Every write is atomic (temporary file + ``os.replace``), so an interrupted profile leaves the last complete
table on disk and resumes from it. A save holds a lock on the table file and merges, by op key, what other
processes saved into it meanwhile, so concurrent profiles of the same table lose no entry.

Every JSON file hwnas writes goes through :func:`hwnas.io.write_json_atomic`: strict JSON, a non-finite number
becomes ``null`` rather than the invalid token ``NaN``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from filelock import FileLock

from hwnas.checks import check_finite, check_type, field_error
from hwnas.errors import HwnasError
from hwnas.io import now_iso, write_json_atomic
from hwnas.latency.header import MeasuredFile
from hwnas.locations import lock_file, shipped_dir, user_dir
from hwnas.ops import LinearSpec, spec_from_key
from hwnas.runtimes.protocol import Stats

if TYPE_CHECKING:
    from hwnas.devices import DeviceProfile
    from hwnas.spaces import SearchSpace

SCHEMA = "hwnas.latency_table/1"
MAX_PLAUSIBLE_MS = 1e6  # 1000 s for one op or one empty run: anything above is a corrupt value, not a latency
_LATENCY_FIELDS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms")


@dataclass
class TableEntry:
    """One op's row of a table: its :class:`Stats`, when they were measured and, for a table profiled in pairs,
    the median of the reference network measured in the same rounds (see :meth:`LatencyTable.median_ms`).

    Its JSON is the statistics' keys followed by ``measured_at`` and ``reference_ms`` (each only when set); the
    table keeps entries in that JSON form, and this record is how one is made and checked.
    """

    stats: Stats
    measured_at: str | None = None
    reference_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.stats.to_dict()
        if self.measured_at is not None:
            data["measured_at"] = self.measured_at
        if self.reference_ms is not None:
            data["reference_ms"] = self.reference_ms
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TableEntry:
        """Check and parse an entry's JSON; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: expected an object of statistics")
        stats = Stats.from_dict({k: v for k, v in data.items() if k not in ("measured_at", "reference_ms")}, source)
        measured_at = data.get("measured_at")
        if measured_at is not None:
            check_type(measured_at, str, source, "measured_at")
        if "reference_ms" in data:
            check_finite(data["reference_ms"], source, "reference_ms", strict=True)
        check_plausible(data, source)
        check_plausible(data, source, ("reference_ms",), low=1e-6)
        return cls(stats, measured_at, data.get("reference_ms"))


def check_plausible(stats: dict[str, Any], source: str, names: tuple[str, ...] = _LATENCY_FIELDS,
                    low: float = 0.0) -> None:
    """Latencies are in ``[low, MAX_PLAUSIBLE_MS]`` (a reference that divides: ``low`` a nanosecond): a finite but
    absurd value (1.7e308) would overflow every sum it enters to ``inf``."""
    for name in names:
        value = stats.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # absent or already refused by the type checks
        if not low <= value <= MAX_PLAUSIBLE_MS:
            raise HwnasError(f"{source}: field {name!r}: {value!r}, expected a latency in [{low:g}, "
                             f"{MAX_PLAUSIBLE_MS:g}] ms")


@dataclass
class LatencyTable(MeasuredFile):
    """Per-op latency statistics of one device for one search space at one resolution.

    ``entries`` maps op keys to their :class:`TableEntry` JSON. The classifier is an op like the others, so a
    table holds every head profiled into it (:attr:`heads`); the header's ``num_classes`` is informational: the
    head the table was started for.
    """

    SCHEMA: ClassVar[str] = SCHEMA
    WHAT: ClassVar[str] = "latency table"

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    overhead: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None

    def median_ms(self, key: str) -> float:
        if key not in self.entries:
            spec = spec_from_key(key)
            heads = spec.cout if isinstance(spec, LinearSpec) else None
            raise HwnasError(f"{self.path or 'latency table'}: no entry for op {key}; run "
                             f"`{self.profile_command(heads)}` to measure the missing ops")
        entry = self.entries[key]
        if self.reference and entry.get("reference_ms"):
            # paired while profiled: brought to the table's quiet reference level (a chunk measured while the
            # machine was slow had its reference slow by the same factor)
            return float(entry["median_ms"]) * float(self.reference["median_ms"]) / float(entry["reference_ms"])
        return float(entry["median_ms"])

    @property
    def overhead_ms(self) -> float:
        return float(self.overhead["median_ms"]) if self.overhead else 0.0

    def check_keys(self) -> None:
        """Every entry key is a canonical op key: :func:`~hwnas.ops.spec_from_key` parses it back to a spec whose
        key is the same string (a hand-edited or foreign key would otherwise silently never match an op)."""
        for key in self.entries:
            try:
                spec_from_key(key)
            except HwnasError as error:
                reason = str(error).removeprefix(f"op key {key!r}: ")
                raise HwnasError(f"{self.path or 'latency table'}: entry {key!r}: not a canonical op key "
                                 f"({reason})") from None

    @property
    def heads(self) -> list[int]:
        """The classifier heads profiled (out-features of the table's linear ops): a head is an op like the others,
        so one table serves searches of any number of classes once its head is measured."""
        heads = set()
        for key in self.entries:
            if key.startswith(f"{LinearSpec.kind}-"):
                try:
                    heads.add(spec_from_key(key).cout)
                except HwnasError:
                    continue  # not canonical: check_keys names it where the table is used
        return sorted(heads)

    def missing_keys(self, space: SearchSpace) -> list[str]:
        """The keys of ``space``'s measured ops (its head included) this table lacks, in the space's order."""
        return [spec.key() for spec in space.all_specs() if not spec.is_free and spec.key() not in self.entries]

    def lacks(self, space: SearchSpace) -> str | None:
        """One line naming how many of ``space``'s ops (its head included) this table lacks; None when none."""
        missing = self.missing_keys(space)
        if not missing:
            return None
        return (f"{self.path or 'latency table'}: lacks {len(missing)} of the ops of {space.name}@{space.resolution} "
                f"with {space.num_classes} classes (first: {missing[0]})")

    def profile_command(self, num_classes: int | None = None) -> str:
        """The ``hwnas profile`` command that measures this table's missing ops (those of a space with
        ``num_classes`` outputs; None: the space's default head) into this very file."""
        command = f"hwnas profile --device {self.device_name} --space {self.space} --resolution {self.resolution}"
        if num_classes is not None:
            command += f" --num-classes {num_classes}"
        threads = self.device.get("threads")
        if self.path is not None and self.path.name.endswith(f"__t{threads}.json"):
            command += f" --threads {threads}"
        if self.path is not None and self.path.parent.resolve() not in {f.resolve() for f in table_folders()}:
            command += f" --out {self.path}"  # a table of the user's or a shipped one: profile writes the user's
        return command

    def noisy_keys(self) -> list[str]:
        return [key for key, entry in self.entries.items() if entry.get("noisy")]

    def to_dict(self) -> dict[str, Any]:
        return {**self.header_dict(), "created": self.created, "updated": self.updated, "overhead": self.overhead,
                "reference": self.reference, "entries": self.entries}

    def identity(self) -> tuple[str, str, int]:
        """What makes two tables the same table: device name, space and resolution (the heads are entries)."""
        return self.device_name, self.space, self.resolution

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table atomically while holding its lock file, so two processes profiling one table lose no
        entry. A readable table already at the target with the same :meth:`identity` and fingerprint is merged in
        first: every entry of it that this one lacks is added (this table's own entries win; an entry removed only
        in memory comes back), and its overhead and reference where this one has none. Any other file there is
        replaced."""
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
        """Check a table's JSON (every entry through :meth:`TableEntry.from_dict`); errors name ``source``."""
        header = cls.check_header(data, source, {"entries": dict})
        for key, entry in data["entries"].items():
            TableEntry.from_dict(entry, f"{source}: entry {key!r}")
        overhead = data.get("overhead")
        if overhead is not None:
            Stats.from_dict(overhead, f"{source}: field 'overhead'")
            check_plausible(overhead, f"{source}: field 'overhead'")
        reference = data.get("reference")
        if reference is not None and not (isinstance(reference, dict) and _positive(reference.get("median_ms"))):
            raise field_error(source, "reference", '{"arch", "median_ms" > 0} or null', reference)
        if reference is not None:
            check_plausible(reference, f"{source}: field 'reference'", ("median_ms",), low=1e-6)
        return cls(**header, entries=data["entries"], overhead=overhead, reference=reference)


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


def table_name(device: DeviceProfile | str, space: str, resolution: int) -> str:
    """``<device>__<space>__<resolution>.json``; a device profile whose threads were overridden away from its own
    (``--threads``) gets ``...__t<threads>.json``: the thread count is part of a table's identity."""
    if isinstance(device, str):
        return f"{device}__{space}__{resolution}.json"
    suffix = f"__t{device.threads}" if device.threads_overridden else ""
    return f"{device.name}__{space}__{resolution}{suffix}.json"


def user_table_path(device: DeviceProfile | str, space: str, resolution: int) -> Path:
    """Where a new table of ``device`` (a profile, or a device name) for ``space`` at ``resolution`` is written."""
    return user_tables_dir() / table_name(device, space, resolution)


def default_table_path(device: DeviceProfile | str, space: str, resolution: int) -> Path:
    """The table to read for ``device`` (a profile, or a device name), ``space`` and ``resolution``: the user's,
    else the shipped one, else (none exists) the path where a new one is written (:func:`user_table_path`)."""
    name = table_name(device, space, resolution)
    return find_table_file(name) or user_tables_dir() / name


def foreign_table_note(table: LatencyTable) -> str | None:
    """One line saying how the machine or runtime libraries ``table`` was measured with differ from this one's
    (None when they match or the table does not say): estimates from it may not hold here."""
    from hwnas.runtimes.fingerprint import foreign_differences

    differences = foreign_differences(table.fingerprint)  # the same comparison as a predictor's (predictors.base)
    if not differences:
        return None
    return f"{table.path or 'latency table'}: measured on another machine or runtime ({'; '.join(differences)})"
