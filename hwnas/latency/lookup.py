"""Which latency table answers for a device and a space: the user's, else the shipped one, each only when it covers
the space's ops, the classifier head included.

The head is an op like the others, so a table can lack just the head a command needs (profiled for 1000 classes,
searched with 10). A user's table never makes a command fail where the shipped one would answer: a lookup that does
not measure (``estimate``, ``measure``, ``export``) passes over a table that lacks ops to the next one that covers
the space, with one note saying how to complete it; the search first completes the user's table by profiling the
missing ops when it can (same machine, runtime and protocol), else it does the same. Every hint names a command
that measures what is missing (:meth:`~hwnas.latency.table.LatencyTable.profile_command`).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwnas.devices import DeviceProfile, device_protocol
from hwnas.errors import HwnasError
from hwnas.latency.profile import ProfileConfig, open_table, profile_device
from hwnas.latency.table import LatencyTable, find_table_file, table_folders, table_name, user_table_path
from hwnas.runtimes import get_runtime, runtime_class
from hwnas.runtimes.fingerprint import full_fingerprint
from hwnas.spaces import SearchSpace


@dataclass
class Lookup:
    """The tables found for a device and a space, the user's first.

    Attributes:
        tables: every table found (the user's, then the shipped one).
        covering: the first of them that has every op of the space, None when none does.
        note: one line when a table found first lacks ops and a later one answers instead.
    """

    tables: list[LatencyTable]
    covering: LatencyTable | None
    note: str | None

    @property
    def first(self) -> LatencyTable | None:
        return self.tables[0] if self.tables else None


def find_tables(device: DeviceProfile | str, space: SearchSpace) -> Lookup:
    """The tables of ``device`` (a profile, or a device name) for ``space``: the user's, then the shipped one."""
    name = table_name(device, space.name, space.resolution)
    tables = [LatencyTable.load(folder / name) for folder in table_folders() if (folder / name).is_file()]
    covering = next((table for table in tables if not table.missing_keys(space)), None)
    note = None
    if covering is not None and covering is not tables[0]:
        note = f"{tables[0].lacks(space)}; using {covering.path} (run `{_command(tables[0], space)}` to complete it)"
    return Lookup(tables, covering, note)


def table_file(text: str) -> Path:
    """A ``--table`` argument: a file, else the name of a table in the user's or the shipped folder as ``hwnas
    tables`` lists it (``DEVICE__SPACE__RES.json``), so a command can name a table without knowing where it lives."""
    path = Path(text)
    if path.is_file() or len(path.parts) != 1:
        return path
    return find_table_file(text) or path


def covering_table(device: DeviceProfile | str, space: SearchSpace) -> LatencyTable:
    """The first table of ``device`` that covers ``space`` (a note on stderr when the user's is passed over); else
    a one-line error naming the command that measures what is missing."""
    lookup = find_tables(device, space)
    if lookup.covering is None:
        raise missing_table_error(device, space, lookup.first)
    if lookup.note:
        print(f"hwnas: note: {lookup.note}", file=sys.stderr)
    return lookup.covering


def missing_table_error(device: DeviceProfile | str, space: SearchSpace, table: LatencyTable | None,
                        why: str = "") -> HwnasError:
    """The error for no table that covers ``space``: ``table`` (the one found first, if any) lacks ops, or none
    exists; ``why`` says why it was not measured now (empty: nothing tried)."""
    why = f" and {why}" if why else ""
    if table is not None:
        return HwnasError(f"{table.lacks(space)}{why}; run `{_command(table, space)}` to measure them")
    name = table_name(device, space.name, space.resolution)
    device_name = device if isinstance(device, str) else device.name
    threads = f" --threads {device.threads}" if isinstance(device, DeviceProfile) and device.threads_overridden else ""
    return HwnasError(f"latency table {name} does not exist in {' or '.join(map(str, table_folders()))}{why}; run "
                      f"`hwnas profile "
                      f"--device {device_name} --space {space.name} --resolution {space.resolution} --num-classes "
                      f"{space.num_classes}{threads}`")


def table_for_search(device: DeviceProfile, space: SearchSpace, path: str | Path | None = None,
                     profile_missing: bool = True, progress: bool = False) -> LatencyTable:
    """The table a search of ``space`` on ``device`` uses: ``path`` when given, else the user's (completed by
    profiling its missing ops, the head included, when it can be), else the shipped one when it covers the space,
    else a new user table profiled now. Raises a one-line error naming the command to run when none can be had."""
    if path is not None:
        path = Path(path)
        table = LatencyTable.load(path) if path.is_file() else None
        return table if table is not None and not table.missing_keys(space) else _fill(
            device, space, path, table, profile_missing, progress, fallback=None)
    lookup = find_tables(device, space)
    user = user_table_path(device, space.name, space.resolution)
    if lookup.first is not None and lookup.first.path == user:  # the user's table: it wins when it covers or can
        if lookup.covering is lookup.first:
            return lookup.first
        return _fill(device, space, user, lookup.first, profile_missing, progress, fallback=lookup.covering)
    if lookup.covering is not None:
        return lookup.covering
    return _fill(device, space, user, None, profile_missing, progress, fallback=None, found=lookup.first)


def _fill(device: DeviceProfile, space: SearchSpace, path: Path, table: LatencyTable | None, profile_missing: bool,
          progress: bool, fallback: LatencyTable | None, found: LatencyTable | None = None) -> LatencyTable:
    """Profile the ops the table at ``path`` lacks (all of them for a new table) when that can be done here; else
    use ``fallback`` (a table that covers the space) with a note, else raise naming what to run."""
    why = _cannot_measure_into(device, space, path, table, profile_missing)
    if why is not None:
        if fallback is not None:
            print(f"hwnas: note: {table.lacks(space) if table else path} and {why}; using {fallback.path}",
                  file=sys.stderr)
            return fallback
        raise missing_table_error(device, space, table or found, why)
    what = f"lacks {len(table.missing_keys(space))} of its ops" if table is not None else "does not exist"
    print(f"hwnas: latency table {path} {what} for {space.name}@{space.resolution} with {space.num_classes} classes; "
          "profiling them now", file=sys.stderr)
    profile_device(device, space, path, ProfileConfig(progress=progress))
    return LatencyTable.load(path)


def _cannot_measure_into(device: DeviceProfile, space: SearchSpace, path: Path, table: LatencyTable | None,
                         profile_missing: bool) -> str | None:
    """Why the missing ops cannot be profiled into ``path`` here (None: they can): profiling is off, the runtime
    is unavailable, or the table was measured on another machine, runtime or protocol (:func:`open_table`)."""
    if not profile_missing:
        return "profiling is off"
    reason = runtime_class(device.backend).unavailable_reason(device.runtime_config())
    if reason is not None:
        return f"the {device.backend} runtime is unavailable here ({reason})"
    if table is None:
        return None
    with tempfile.TemporaryDirectory(prefix="hwnas-fp-") as tmp:
        fingerprint = full_fingerprint(get_runtime(device.backend, device.runtime_config(), Path(tmp)))
    try:
        open_table(path, device, space, fingerprint, device_protocol(device, {}))
    except HwnasError as error:
        return f"cannot be measured into here ({str(error).removeprefix(f'{path}: ').split('; ')[0]})"
    return None


def _command(table: LatencyTable, space: SearchSpace) -> str:
    return table.profile_command(space.num_classes)
