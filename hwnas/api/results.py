"""What :func:`hwnas.search` and :func:`hwnas.export` return: typed, frozen records built from the summary the search
run returns (:meth:`~hwnas.search.run_report.RunReport.summary`) and the content of ``export.json``, which each keeps
whole as ``summary`` / ``raw`` for the fields not lifted out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hwnas.spaces import Architecture


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _paths(files: Mapping[str, Any]) -> dict[str, Path | None]:
    return {name: None if value is None else Path(value) for name, value in files.items()}


@dataclass(frozen=True)
class SearchResult:
    """One search run.

    Attributes:
        arch: the searched architecture (``space.build(arch)`` makes the network; ``model.pt`` in ``out`` holds its
            trained weights).
        arch_human: one line per stage, e.g. ``ir_r2_k5_s2_e6_c40``.
        target_ms: the latency target T; estimated_ms: the latency model's estimate of ``arch``.
        measured_ms: its latency measured on the device (None: measuring was off).
        accuracy: the trained network's accuracy on the test split.
        latency_model: what the search aimed with (kind, path, why, rows).
        out: the run folder; files: the files in it (``arch``, ``model``, ``report``, ``plot``, ...).
        summary: what the search run returned, whole (baseline, closed loop, timings, ...).
    """

    arch: Architecture
    arch_human: str
    device: str
    space: str
    resolution: int
    target_ms: float
    estimated_ms: float
    measured_ms: float | None
    accuracy: float
    latency_model: dict[str, Any]
    out: Path
    files: dict[str, Path | None]
    summary: dict[str, Any] = field(repr=False)

    @property
    def measured_over_target(self) -> float | None:
        return None if self.measured_ms is None else self.measured_ms / self.target_ms

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> SearchResult:
        """From :func:`~hwnas.search.run.run_search`'s answer."""
        return cls(arch=Architecture.from_dict(summary["arch"], "search summary: arch"),
                   arch_human=str(summary["arch_human"]), device=str(summary["device"]), space=str(summary["space"]),
                   resolution=int(summary["resolution"]), target_ms=float(summary["target_ms"]),
                   estimated_ms=float(summary["estimated_ms"]), measured_ms=_float(summary["measured_ms"]),
                   accuracy=float(summary["accuracy"]), latency_model=dict(summary["latency_model"]),
                   out=Path(summary["out"]), files=_paths(summary["files"]), summary=dict(summary))


@dataclass(frozen=True)
class ExportReport:
    """One export: per format (``onnx``, ``tflite``, ``tensorrt``) its file, numerics and latency.

    Attributes:
        arch: the exported architecture; trained: whether it carries trained weights (else seeded random ones).
        out: the output folder; files: per format its file (None: not built, see ``notes``), and ``report``
            (``export.json``).
        devices: per format the device profile it was measured on; measured_ms: its measured latency there (None:
            not measured); estimated_ms: the table's estimate (None: no table).
        within_bounds: per format whether its outputs match PyTorch's within the precision's bounds.
        target_ms, accuracy: the search's target and test accuracy when the source was a search run, else None.
        notes: what a reader should know (random weights, an engine not built, an estimate's table, ...).
        raw: ``export.json``, whole.
    """

    arch: Architecture
    trained: bool
    out: Path
    files: dict[str, Path | None]
    devices: dict[str, str | None]
    measured_ms: dict[str, float | None]
    estimated_ms: dict[str, float | None]
    within_bounds: dict[str, bool | None]
    target_ms: float | None
    accuracy: float | None
    notes: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, result: Mapping[str, Any], out: str | Path) -> ExportReport:
        """From :func:`~hwnas.export.export_model`'s answer (the content of ``export.json``)."""
        source = result["source"]
        search = source.get("search") or {}
        return cls(arch=Architecture.from_dict(source["arch"], "export report: source.arch"),
                   trained=bool(source["trained"]), out=Path(out), files=_paths(result["files"]),
                   devices=dict(result["devices"]),
                   measured_ms={k: _float(v) for k, v in result["measured_ms"].items()},
                   estimated_ms={k: _float(v) for k, v in result["estimated_ms"].items()},
                   within_bounds=dict(result["within_bounds"]), target_ms=_float(result.get("target_ms")),
                   accuracy=_float(search.get("accuracy")), notes=tuple(result["notes"]), raw=dict(result))
