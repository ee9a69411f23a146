"""Fingerprints of the machine and runtime a latency table was measured on (and a predictor fitted on).

A table is only valid on the hardware and software it was measured with: :func:`fingerprint_differences`
compares the fields that identify them (CPU model, cores, OS, architecture, GPU; runtime name, library
versions, device, threads, precision, options) and ignores the ones that do not change latencies
(kernel release, Python/numpy versions of the measuring process, ...), which are stored for the record.
:func:`foreign_differences` says how a stored fingerprint differs from *this* machine (its caches and the CPU
instructions kernels use too, where both sides record them) and the runtime libraries installed here: the one
comparison behind the warning for a table or a predictor from elsewhere.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any, Mapping

from hwnas.runtimes.base import Runtime

# CPU features that select the kernels runtimes run (oneDNN/MLAS/XNNPACK dispatch on them): x86, then ARM
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
             "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme")

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
    """CPU model, logical cores, OS and kernel, architecture, Python/numpy/torch versions, the GPU (or None), the
    per-core caches and the kernel-relevant CPU features (``isa``)."""
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
        "isa": cpu_isa(),
    }


def cpu_isa() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU has (``/proc/cpuinfo``'s x86 ``flags`` or ARM ``Features``); empty where the
    OS does not say. Two machines sold under one model name (a VM's "Intel Xeon Processor") can differ here."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    flags.update(value.split())
                    break
    except OSError:
        pass
    return [flag for flag in ISA_FLAGS if flag in flags]


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


def machine_differences(stored: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> list[str]:
    """How the ``machine`` section ``stored`` differs from ``current`` (default: this machine): its identity fields
    (:data:`IDENTITY_FIELDS`), then its caches and CPU features where both sides record them (older files do not)."""
    current = machine_fingerprint() if current is None else current
    differences = fingerprint_differences({"machine": stored}, {"machine": current})
    for name in ("caches", "isa"):
        old, new = stored.get(name), current.get(name)
        if old and new and old != new:
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                differences += [f"machine.caches.{key}: {old.get(key)!r} -> {new.get(key)!r}"
                                for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
            else:
                lost, gained = sorted(set(old) - set(new)), sorted(set(new) - set(old))
                differences.append(f"machine.isa: {' '.join(['-' + f for f in lost] + ['+' + f for f in gained])}")
    return differences


def installed_version_differences(versions: Mapping[str, Any] | None) -> list[str]:
    """``runtime.versions.PKG: 'old' -> 'installed'`` for each library of ``versions`` installed here in another
    version (one not installed, or not a distribution name, is skipped: the runtime says so when it is used)."""
    from importlib import metadata

    differences = []
    for package, version in sorted((versions or {}).items()):
        try:
            installed = metadata.version(package)
        except (metadata.PackageNotFoundError, ValueError):
            continue
        if str(version) != installed:
            differences.append(f"runtime.versions.{package}: {version!r} -> {installed!r}")
    return differences


def foreign_differences(fingerprint: Mapping[str, Any]) -> list[str]:
    """How the machine and runtime libraries of a stored ``fingerprint`` differ from this machine's and the ones
    installed here (empty when they match or the fingerprint does not say): the one comparison behind the warning
    for a table measured, or a predictor fitted, elsewhere."""
    machine = fingerprint.get("machine")
    differences = machine_differences(machine) if machine else []
    return differences + installed_version_differences((fingerprint.get("runtime") or {}).get("versions"))


def runtime_library(runtime: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(package, version)`` of the runtime's own library in a fingerprint's ``runtime`` section (the one named as
    the runtime, else the first listed: ``onnxruntime``, ``ai-edge-litert``, ``torch``; TensorRT's own field);
    None where it records none (adb)."""
    name, versions = runtime.get("runtime"), runtime.get("versions")
    if isinstance(versions, Mapping) and versions:
        package = name if name in versions else next(iter(versions))
        return (str(package), str(versions[package])) if versions[package] is not None else None
    if isinstance(name, str) and isinstance(runtime.get(name), str):
        return name, runtime[name]
    return None


def version_family(version: str) -> str | None:
    """The release line whose kernels a version shares: its major version (``'1.32.0'`` -> ``'1'``), or major.minor
    below 1.0 (``'0.10.0'`` -> ``'0.10'``, where minor releases change freely); None when it is not a version."""
    numbers = re.findall(r"\d+", version.split("+")[0])[:2]
    if not numbers:
        return None
    return numbers[0] if numbers[0] != "0" or len(numbers) < 2 else f"0.{numbers[1]}"


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
