"""Fingerprints of the machine and runtime a latency table was measured on.

A table is only valid on the hardware and software it was measured with: :func:`fingerprint_differences`
compares the fields that identify them (CPU model, cores, OS, architecture, GPU; runtime name, library
versions, device, threads, precision, options) and ignores the ones that do not change latencies
(kernel release, Python/numpy versions of the measuring process, ...), which are stored for the record.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Mapping

from hwnas.runtimes.base import Runtime

# (section, field) pairs that identify where a latency was measured; the rest is informational.
IDENTITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("machine", "cpu_model"),
    ("machine", "logical_cores"),
    ("machine", "system"),
    ("machine", "arch"),
    ("machine", "gpu"),
    ("runtime", "runtime"),
    ("runtime", "versions"),
    ("runtime", "device"),
    ("runtime", "threads"),
    ("runtime", "precision"),
    ("runtime", "options"),
)


def machine_fingerprint() -> dict[str, Any]:
    """CPU model, logical cores, OS and kernel, architecture, Python/numpy/torch versions and the GPU (or None)."""
    import numpy
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "gpu": gpu,
        "caches": cache_sizes(),
    }


def cache_sizes() -> dict[str, int]:
    """Per-core data/unified cache sizes in bytes by level (``{"L1": ..., "L2": ..., "L3": ...}``) from Linux sysfs;
    empty where the OS does not say. Informational in a fingerprint; predictors compare weight bytes with them."""
    from pathlib import Path

    sizes: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text().strip())
            raw = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(raw[-1:], 1)
        try:
            sizes[f"L{level}"] = int(raw.rstrip("KMG")) * scale
        except ValueError:
            continue
    return sizes


def full_fingerprint(runtime: Runtime) -> dict[str, Any]:
    """``{"machine": machine_fingerprint(), "runtime": runtime.describe()}``, stored with a latency table."""
    return {"machine": machine_fingerprint(), "runtime": runtime.describe()}


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per identity field that differs, e.g. ``"machine.cpu_model: 'A' -> 'B'"``; empty when they match.

    A section absent from both fingerprints is not compared (e.g. comparing machines only). Library versions
    are compared per library, so the line names the library that changed.
    """
    differences = []
    for section, name in IDENTITY_FIELDS:
        if section not in stored and section not in current:
            continue
        old, new = stored.get(section, {}).get(name), current.get(section, {}).get(name)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            for key in sorted(set(old) | set(new), key=str):
                if old.get(key) != new.get(key):
                    differences.append(f"{section}.{name}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
        elif old != new:
            differences.append(f"{section}.{name}: {old!r} -> {new!r}")
    return differences


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 ``model name``, ARM ``Hardware``/``Model``), else platform."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    for name in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        if fields.get(name):
            return fields[name]
    return platform.processor() or platform.machine() or "unknown"
