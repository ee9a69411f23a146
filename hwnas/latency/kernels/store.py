"""Paired kernel measurements on one device, kept in a resumable JSON file, and the loops that fill it.

Every kernel is measured *paired* with the generic reference network (:func:`measure_paired`) through its
single-kernel model (the backend's ``prepare_kernel``: for ORT :mod:`.generators`), so the machine's drift cancels;
a kernel's cost is ``ratio - overhead_ratio`` reference units, where the overhead is the paired ratio of a one-ReLU
model (what any ``run()`` costs). The file is written atomically after every few kernels, so an interrupted build
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.io import now_iso, read_json_file, write_json_atomic
from hwnas.latency.kernels.backends import kernel_backend
from hwnas.latency.kernels.record import Kernel, kernel_from_key
from hwnas.runtimes.base import PreparedModel, Runtime
from hwnas.runtimes.paired import PairedProtocol, PairedStats, measure_paired

STORE_SCHEMA = "hwnas.kernel-measurements/1"


class KernelStore:
    """Paired kernel measurements on one device, kept in an atomic JSON file (resumable).

    ``kernels`` maps a kernel key to ``{"ratio", "ref_ms", "noisy"}``; ``overhead`` is the paired ratio of a
    one-ReLU model; ``networks`` holds whole networks' paired ratios for the network-level correction.
    """

    def __init__(self, path: Path, device: str, runtime: dict[str, Any], block: int,
                 backend: str = "onnxruntime") -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"schema": STORE_SCHEMA, "device": device, "backend": backend,
                                     "runtime": runtime, "block": block, "created": now_iso(), "overhead": None,
                                     "kernels": {}, "networks": {}}
        if self.path.is_file():
            stored = read_json_file(self.path, "kernel measurements")
            if not isinstance(stored, dict) or stored.get("schema") != STORE_SCHEMA:
                raise HwnasError(f"{self.path}: field 'schema': expected {STORE_SCHEMA!r}")
            if stored.get("device") != device or stored.get("block") != block:
                raise HwnasError(f"{self.path}: measured on device {stored.get('device')!r} (block "
                                 f"{stored.get('block')}), not {device!r} (block {block}); use another file")
            self.data = stored
        self.backend = kernel_backend(self.data.get("backend", "onnxruntime"))  # files before LiteRT/torch: ORT

    @property
    def kernels(self) -> dict[str, dict[str, Any]]:
        return self.data["kernels"]

    def add(self, key: str, stats: PairedStats) -> None:
        """Record a measurement; a re-measured kernel keeps the median ratio of all its measurements."""
        entry = self.kernels.get(key)
        if entry is None:
            self.kernels[key] = {"ratio": stats.ratio, "ref_ms": stats.reference.median_ms, "noisy": stats.noisy,
                                 "flagged": stats.noisy}
            return
        ratios = [*entry.get("ratios", [entry["ratio"]]), stats.ratio]
        entry.update(ratio=float(np.median(ratios)), ratios=ratios, noisy=entry["noisy"] and stats.noisy)

    def save(self) -> None:
        self.data["updated"] = now_iso()
        write_json_atomic(self.path, self.data)

    def reference_ms(self) -> float:
        """The reference's level: the median of its medians over every paired measurement (``hwnas bench``'s
        scale at a typical moment, as a measurement set's)."""
        medians = [v["ref_ms"] for v in self.kernels.values()] + [v["ref_ms"] for v in self.data["networks"].values()]
        if not medians:
            raise HwnasError(f"{self.path}: no measurements yet")
        return float(np.median(medians))

    def training_set(self) -> tuple[list[Kernel], np.ndarray]:
        """Measured kernels and their costs in reference units (ratio minus the per-run overhead)."""
        overhead = float(self.data["overhead"]["ratio"]) if self.data.get("overhead") else 0.0
        kernels = [kernel_from_key(key) for key in self.kernels]
        costs = np.asarray([max(v["ratio"] - overhead, 1e-6) for v in self.kernels.values()])
        return kernels, costs


def measure_kernels(
    kernels: Sequence[Kernel],
    runtime: Runtime,
    reference: PreparedModel,
    store: KernelStore,
    protocol: PairedProtocol,
    workdir: Path,
    progress: Callable[[int], None] | None = None,
    save_every: int = 50,
) -> int:
    """Measure the kernels not yet in ``store`` (paired with ``reference``); returns how many were measured."""
    todo = [k for k in kernels if k.key not in store.kernels]
    done = _measure_each(todo, runtime, reference, store, protocol, workdir, progress, save_every)
    store.save()
    return done


def remeasure_noisy(runtime: Runtime, reference: PreparedModel, store: KernelStore, protocol: PairedProtocol,
                    workdir: Path, passes: int = 2, progress: Callable[[int], None] | None = None) -> int:
    """Measure every kernel whose first measurement was noisy ``passes`` more times; its ratio becomes the median
    of all (a burst of background load that hit one measurement is outvoted). Returns how many were measured."""
    done = 0
    for extra_pass in range(1, passes + 1):
        flagged = [kernel_from_key(key) for key, entry in store.kernels.items()
                   if entry.get("flagged", "ratios" in entry)
                   and len(entry.get("ratios", [entry["ratio"]])) <= extra_pass]
        done = _measure_each(flagged, runtime, reference, store, protocol, workdir, progress, 50, done)
    store.save()
    return done


def _measure_each(kernels: Sequence[Kernel], runtime: Runtime, reference: PreparedModel, store: KernelStore,
                  protocol: PairedProtocol, workdir: Path, progress: Callable[[int], None] | None, save_every: int,
                  done: int = 0) -> int:
    """Measure each kernel into ``store``, saving it whenever the running count ``done`` reaches a multiple of
    ``save_every``; returns the running count."""
    for kernel in kernels:
        prepared = store.backend.prepare_kernel(runtime, kernel, workdir / "kernels", store.data["block"])
        try:
            stats = measure_paired({kernel.key: prepared}, reference, protocol)[kernel.key]
        finally:
            prepared.close()
        store.add(kernel.key, stats)
        done += 1
        if progress is not None:
            progress(1)
        if done % save_every == 0:
            store.save()
    return done
