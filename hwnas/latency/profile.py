"""Profile a device: measure every op of a search space on the device's runtime into a latency table.

Resumable: the table is saved atomically after every measured op, and a rerun measures only the keys the
table lacks. The classifier head is an op like the others: profiling a table for another number of classes measures
just that head into it. A table measured on another machine or runtime, or with another protocol, is refused rather
than mixed. The folders a profile writes (the table's, the cache) are checked first. Saves lock the table and
merge by op key, so two profiles of the same table lose no entry.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hwnas.devices import DeviceProfile, device_protocol
from hwnas.errors import HwnasError
from hwnas.io import now_iso
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.latency.table import LatencyTable, TableEntry, user_table_path, user_tables_dir
from hwnas.locations import CACHE_ENV_VAR, DATA_ENV_VAR, cache_dir
from hwnas.ops import OpSpec, build_op
from hwnas.outputs import check_env_folder
from hwnas.runtimes import get_runtime
from hwnas.runtimes.fingerprint import fingerprint_differences, full_fingerprint
from hwnas.runtimes.machine_state import LoadWatcher
from hwnas.runtimes.protocol import Protocol, Stats, measure, measure_overhead
from hwnas.spaces import Architecture, SearchSpace


@dataclass(frozen=True)
class ProfileConfig:
    """Options of ``hwnas profile``.

    Attributes:
        chunk: ops converted and measured together; their rounds are interleaved (a larger chunk spreads a
            noise burst over more ops; at most one chunk of work is lost on a kill).
        protocol_overrides: fields of :class:`~hwnas.runtimes.protocol.Protocol` to change (after the
            device profile's own overrides).
        progress: show a progress bar (rate and ETA) on stderr.

    Converted models go to :func:`artifacts_dir` and are reused by content hash, so a resumed profile does not
    convert again.
    """

    chunk: int = 12
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass(frozen=True)
class ProfileResult:
    table: Path
    entries: int
    measured: int
    reused: int
    noisy: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"table": str(self.table), "entries": self.entries, "measured": self.measured,
                "reused": self.reused, "noisy": self.noisy, "seconds": round(self.seconds, 2)}


def artifacts_dir(device: DeviceProfile) -> Path:
    """The per-device cache of converted models."""
    return cache_dir() / "artifacts" / device.name


def build_measured_op(spec: OpSpec) -> torch.nn.Module:
    """The eval-mode module of an op with weights seeded by its key, so a rebuilt op converts to the same file."""
    with torch.random.fork_rng():
        torch.manual_seed(zlib.crc32(spec.key().encode()))
        return build_op(spec).eval()


def open_table(path: Path, device: DeviceProfile, space: SearchSpace, fingerprint: dict[str, Any],
               protocol: Protocol) -> LatencyTable:
    """Load the table at ``path`` to measure into (checking it matches), or start a new one (its informational
    ``num_classes`` is the head it is started for; any other head is measured into it as one more op)."""
    if not path.exists():
        return LatencyTable(device=device.to_dict(), space=space.name, resolution=space.resolution,
                            num_classes=space.num_classes, fingerprint=fingerprint, protocol=protocol.to_dict(),
                            path=path)
    table = LatencyTable.load(path)
    if (table.space, table.resolution) != (space.name, space.resolution):
        raise HwnasError(f"{path}: table is for {table.space}@{table.resolution}, not {space.name}@{space.resolution}")
    if table.device_name != device.name:
        raise HwnasError(f"{path}: table is for device {table.device_name!r}, not {device.name!r}")
    differences = fingerprint_differences(table.fingerprint, fingerprint)
    if differences:
        raise HwnasError(f"{path}: refusing to measure into a table from another machine or runtime "
                         f"({'; '.join(differences)}); pass --out to start a new table")
    _check_protocol(path, table.protocol, protocol)
    return table


def _check_protocol(path: Path, recorded: dict[str, Any], protocol: Protocol) -> None:
    """Refuse to add entries measured with another protocol than the table's (its header names one protocol for
    all of them). A field the table does not record is taken at its default (tables from before it existed)."""
    stored = {**Protocol().to_dict(), **recorded}
    for name, value in protocol.to_dict().items():
        if stored.get(name) != value:
            raise HwnasError(f"{path}: table was measured with protocol {name}={stored.get(name)!r}, not {value!r} "
                             f"(from --protocol or the device's [protocol]); give --protocol {name}="
                             f"{stored.get(name)} to complete it, or pass --out to start a new table")


def check_folders(device: DeviceProfile, out: Path | None) -> None:
    """The folders a profile writes can be written (the user's tables folder when ``out`` is None, the cache's lock
    and artifact folders), checked before any work; a message names the environment variable that sets each."""
    if out is None:
        check_env_folder(user_tables_dir(), DATA_ENV_VAR)
    check_env_folder(cache_dir() / "locks", CACHE_ENV_VAR)
    check_env_folder(artifacts_dir(device), CACHE_ENV_VAR)


REFERENCE_KEY = "reference-network"


def _record_reference(table: LatencyTable, keys: list[str], stats: Stats, arch: Architecture) -> None:
    """Pair a chunk's entries with the reference network measured in the same interleaved rounds: each entry gets
    the reference's median of its chunk (``reference_ms``), the table the quiet level over all chunks (the 10th
    percentile), so op latencies can be brought to one machine state (see :meth:`LatencyTable.median_ms`)."""
    for key in keys:
        table.entries[key]["reference_ms"] = stats.median_ms
    levels = [e["reference_ms"] for e in table.entries.values() if "reference_ms" in e]
    table.reference = {"arch": " ".join(arch.choices), "median_ms": float(np.percentile(levels, 10))}
    table.save()


def profile_device(device: DeviceProfile, space: SearchSpace, out: Path | None = None,
                   config: ProfileConfig = ProfileConfig()) -> ProfileResult:
    """Measure every op of ``space`` that the table at ``out`` lacks; return what was done."""
    start = time.perf_counter()
    check_folders(device, out)
    path = Path(out) if out is not None else user_table_path(device, space.name, space.resolution)
    protocol = device_protocol(device, config.protocol_overrides)
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    table = open_table(path, device, space, full_fingerprint(runtime), protocol)
    specs: list[OpSpec] = [s for s in space.all_specs() if not s.is_free]
    missing = [s for s in specs if s.key() not in table.entries]
    if table.overhead is None:
        table.overhead = measure_overhead(runtime, protocol).to_dict()  # saved with the first op: no empty table
        if not missing and table.entries:
            table.save()
    bar = tqdm(total=len(specs), initial=len(specs) - len(missing), unit="op", disable=not config.progress,
               desc=f"profile {device.name} {space.name}@{space.resolution}", dynamic_ncols=True)
    noisy: list[str] = []
    watcher = LoadWatcher("op")  # other processes' load and the reference's level: one line at the end

    def record(key: str, stats: Stats) -> None:
        table.entries[key] = TableEntry(stats, measured_at=now_iso()).to_dict()
        table.save()
        bar.update(1)
        watcher.note(stats)
        if stats.noisy:
            noisy.append(key)

    module, shape, reference_arch = reference_module(space)
    reference = prepare_reference(runtime, module, shape) if missing else None
    try:
        for i in range(0, len(missing), max(1, config.chunk)):
            chunk = missing[i:i + config.chunk]
            bar.set_postfix_str(f"converting {len(chunk)} ops")
            prepared = runtime.prepare_many([(s.key(), build_measured_op(s), s.input_shape) for s in chunk])
            bar.set_postfix_str("measuring")
            try:
                stats = measure({**prepared, REFERENCE_KEY: reference}, protocol,
                                on_done=lambda key, st: key != REFERENCE_KEY and record(key, st))
            finally:
                for model in prepared.values():
                    model.close()
            _record_reference(table, [s.key() for s in chunk], stats[REFERENCE_KEY], reference_arch)
            watcher.note_reference(stats[REFERENCE_KEY].median_ms)
    finally:
        bar.close()
        if reference is not None:
            reference.close()
    watcher.warn()  # after the bar is closed, so the line is not mangled
    return ProfileResult(path, len(table.entries), len(missing), len(specs) - len(missing), len(noisy),
                         time.perf_counter() - start)
