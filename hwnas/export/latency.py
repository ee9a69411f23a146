"""Latency of each artifact on its device profile, next to the latency table's estimate for the architecture.

Each format is timed on one device: the one ``--device`` names when its backend loads that format, else
:data:`~hwnas.export.config.DEFAULT_DEVICES`. Timing goes through the runtime's ``prepare_file`` and
:func:`hwnas.runtimes.protocol.measure` with the device profile's protocol, as ``hwnas bench`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hwnas.devices import DeviceProfile, device_protocol, load_device
from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.export.config import BACKEND_FORMATS, DEFAULT_DEVICES
from hwnas.io import first_line
from hwnas.runtimes import get_runtime
from hwnas.runtimes.protocol import Stats, measure
from hwnas.spaces import Architecture, SearchSpace


@dataclass(frozen=True)
class Estimate:
    """The table's estimate (None with the reason when there is none) and caveats about it."""

    ms: float | None
    table: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"estimated_ms": self.ms, "table": self.table, "note": self.note}


def resolve_devices(formats: Sequence[str], device: str | None) -> dict[str, DeviceProfile]:
    """The device profile each format is measured on (see the module docstring)."""
    chosen = load_device(device) if device else None
    if chosen is not None and BACKEND_FORMATS.get(chosen.backend) not in formats:
        loads = BACKEND_FORMATS.get(chosen.backend)
        raise HwnasError(f"--device {device}: its {chosen.backend} backend "
                         + (f"loads {loads} files, which are not among --format {','.join(formats)}" if loads
                            else "loads no exported file (use onnxruntime, litert, adb or tensorrt devices)"))
    return {fmt: chosen if chosen is not None and BACKEND_FORMATS[chosen.backend] == fmt
            else load_device(DEFAULT_DEVICES[fmt]) for fmt in formats}


def measure_artifact(path: Path, device: DeviceProfile, overrides: dict[str, Any],
                     workdir: Path) -> tuple[Stats | None, str | None]:
    """Time one artifact on ``device``; (None, reason) when its runtime is unavailable here or refuses the file."""
    try:
        runtime = get_runtime(device.backend, device.runtime_config(), workdir)
        prepared = runtime.prepare_file(path)
    except RuntimeUnavailable as error:
        return None, f"not measured on {device.name}: {first_line(error)}"
    except (HwnasError, NotImplementedError) as error:
        return None, f"not measured on {device.name}: {first_line(error)}"
    try:
        return measure({"artifact": prepared}, device_protocol(device, overrides))["artifact"], None
    finally:
        prepared.close()


def table_estimate(space: SearchSpace, arch: Architecture, device: DeviceProfile, batch: int,
                   precision: str) -> Estimate:
    """The shipped table's estimate ``latency_tables/<device>__<space>__<res>.json`` (overhead counted once)."""
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.table import LatencyTable, default_table_path
    from hwnas.runtimes.fingerprint import fingerprint_differences, machine_fingerprint

    path = default_table_path(device, space.name, space.resolution)
    if not path.is_file():
        return Estimate(None, None, f"no latency table {path.name} (make it with `hwnas profile --device "
                                    f"{device.name} --space {space.name} --resolution {space.resolution}`)")
    if batch != 1:
        return Estimate(None, str(path), f"the table holds batch-1 op latencies; this export has batch {batch}")
    try:
        table = LatencyTable.load(path)
        ms = TableEstimator(table, space).latency_ms(arch)
    except HwnasError as error:
        return Estimate(None, str(path), first_line(error))
    notes = []
    table_precision = table.device.get("precision", "fp32")
    if table_precision != precision:
        notes.append(f"table measured {table_precision} ops, artifact is {precision}")
    differences = fingerprint_differences({"machine": table.fingerprint.get("machine", {})},
                                          {"machine": machine_fingerprint()})
    if differences:
        notes.append(f"table measured on another machine ({'; '.join(differences)})")
    return Estimate(ms, str(path), "; ".join(notes) or None)
