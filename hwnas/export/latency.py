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


def resolve_devices(formats: Sequence[str], device: str | None,
                    run_device: str | None = None) -> dict[str, DeviceProfile]:
    """The device profile each format is measured on: ``device`` (``--device``) for the format its backend loads,
    else the run's device (``run_device``, from its report) for the format its backend loads, else
    :data:`~hwnas.export.config.DEFAULT_DEVICES`. A run device that cannot be loaded here, or whose backend loads no
    exported format, is passed over (:func:`device_notes` says which device each figure is from)."""
    chosen = load_device(device) if device else None
    if chosen is not None and BACKEND_FORMATS.get(chosen.backend) not in formats:
        loads = BACKEND_FORMATS.get(chosen.backend)
        raise HwnasError(f"--device {device}: its {chosen.backend} backend "
                         + (f"loads {loads} files, which are not among --format {','.join(formats)}" if loads
                            else "loads no exported file (use onnxruntime, litert, adb or tensorrt devices)"))
    if chosen is None and run_device:
        try:
            chosen = load_device(run_device)
        except HwnasError:
            chosen = None
    return {fmt: chosen if chosen is not None and BACKEND_FORMATS.get(chosen.backend) == fmt
            else load_device(DEFAULT_DEVICES[fmt]) for fmt in formats}


def device_notes(devices: dict[str, DeviceProfile], run_device: str | None, target_ms: float | None) -> list[str]:
    """One note per format measured on another device than the run was searched for: that figure and the target
    do not compare."""
    if not run_device or target_ms is None:
        return []
    try:
        why = f"its {load_device(run_device).backend} backend does not load"
    except HwnasError:
        why = "it is not a device profile known here, so it cannot measure"
    return [f"{fmt}: measured on {d.name}, but the target {target_ms:.3f} ms is for {run_device}, the run's device "
            f"({why} {fmt} files): the figure and the target do not compare"
            for fmt, d in devices.items() if d.name != run_device]


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
    """The table estimate of ``arch`` (overhead counted once): from the user's table when it has every op of the
    space, the head included, else from the shipped ``latency_tables/<device>__<space>__<res>.json``; a table
    measured at another precision or on another machine is still used, with a note saying so."""
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.table import LatencyTable, default_table_path
    from hwnas.runtimes.fingerprint import fingerprint_differences, machine_fingerprint

    from hwnas.latency.lookup import find_tables

    path = default_table_path(device, space.name, space.resolution)
    try:  # the user's table when it has the network's head, else the shipped one that has it
        covering = find_tables(device, space).covering
        path = covering.path if covering is not None and covering.path is not None else path
    except HwnasError:
        pass  # an unreadable table: its load below says so in the estimate's note
    if not path.is_file():
        return Estimate(None, None, f"no latency table {path.name} (make it with `hwnas profile --device "
                                    f"{device.name} --space {space.name} --resolution {space.resolution} "
                                    f"--num-classes {space.num_classes}`)")
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
