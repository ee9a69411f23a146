"""The files of a search run: ``arch.json``, ``model.pt``, ``report.json`` (:class:`RunReport`) and
``search.png``."""

from __future__ import annotations

import platform
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

import hwnas
from hwnas.io import atomic_path, write_json_atomic
from hwnas.search.decode import LatencyRange
from hwnas.search.records import AnyMeasurement, LoopStep, Measurement, TrainedNetwork
from hwnas.spaces import Architecture

SUMMARY_KEYS = ("arch", "arch_human", "device", "space", "resolution", "target_ms", "target_note", "estimated_ms",
                "measured_ms", "measured_over_target", "measured", "accuracy", "baseline", "decode", "closed_loop",
                "latency_model", "search_seconds", "train_seconds", "total_seconds", "pareto", "baselines", "memory_mb")
BOUND_KEYS = ("max_memory_mb", "max_params_mb")
"""In the summary when the search was given them (``--max-memory-mb``, ``--max-params-mb``)."""


def _over_target(value: float | None, target_ms: float) -> float | None:
    return None if value is None else value / target_ms


def versions(runtime: dict[str, Any] | None) -> dict[str, Any]:
    """hwnas, torch, numpy and python versions, and the device runtime's description."""
    return {"hwnas": hwnas.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "runtime": runtime}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class BaselineReport:
    """The uniform baseline trained beside the searched network: the report's ``baseline``."""

    trained: TrainedNetwork
    arch_human: str
    estimated_ms: float
    target_ms: float
    closed_loop: list[LoopStep]

    def to_dict(self) -> dict[str, Any]:
        base = self.trained
        return {"arch": base.arch.to_dict(), "arch_human": self.arch_human, "estimated_ms": self.estimated_ms,
                "measured_ms": base.measured_ms, "measured_over_target": _over_target(base.measured_ms, self.target_ms),
                "accuracy": base.accuracy, "train_seconds": base.seconds,
                "closed_loop": [step.to_dict() for step in self.closed_loop],
                "measured": base.measured.to_dict() if base.measured else None}


@dataclass
class RunReport:
    """``report.json``: what was searched, for which target, what came out (estimated and measured), how long it
    took, with which versions and config; :meth:`to_dict` gives its JSON keys in their order."""

    arch: Architecture
    arch_human: str
    device: str
    space: str
    resolution: int
    num_classes: int
    data: dict[str, Any]
    target_ms: float
    target_source: str
    fastest_ms: float
    slowest_ms: float
    estimated_ms: float
    measured: AnyMeasurement | None
    measured_untrained: Measurement | None
    measurement: str
    decode: str
    closed_loop: list[LoopStep]
    closed_loop_drift: float | None
    accuracy: float
    baseline: BaselineReport | None
    search_seconds: float
    train_seconds: float
    measure_seconds: float
    total_seconds: float
    peak_rss_mb: float
    seed: int
    table: str
    overhead_mode: str
    versions: dict[str, Any]
    latency_model: dict[str, Any]
    probs: list[dict[str, float]]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    train_history: list[dict[str, float]]
    files: dict[str, str]
    resumed_from: dict[str, Any] | None
    pareto: str | None = None  # pareto.json: every accuracy-latency point the run evaluated, and their front
    evolution: list[dict[str, Any]] | None = None  # ``evolution``: one record per evolutionary search the loop ran
    baselines: list[dict[str, Any]] | None = None  # the uniform and random baselines: measured / T, accuracy
    memory_mb: dict[str, float] | None = None  # the network's Footprint: params_mb, peak_activation_mb, memory_mb
    max_memory_mb: float | None = None  # the bound on peak activation memory (--max-memory-mb), when given
    max_params_mb: float | None = None  # the bound on parameters (--max-params-mb), when given

    @property
    def target_note(self) -> str | None:
        """Set when T is above the slowest architecture's estimate (see :func:`hwnas.search.aim.aim_target`)."""
        return LatencyRange(self.fastest_ms, self.slowest_ms).target_note(self.target_ms)

    @property
    def measured_ms(self) -> float | None:
        return self.measured.median_ms if self.measured is not None else None

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "measured":
                report["measured_ms"] = self.measured_ms
                report["estimated_over_target"] = self.estimated_ms / self.target_ms
                report["measured_over_target"] = _over_target(self.measured_ms, self.target_ms)
            if name == "closed_loop":
                value = [step.to_dict() for step in value]
            elif hasattr(value, "to_dict"):
                value = value.to_dict()
            report[name] = value
            if name == "target_source":
                report["target_note"] = self.target_note
        return report

    def summary(self, out: Path) -> dict[str, Any]:
        """What :func:`~hwnas.search.run.run_search` returns: :data:`SUMMARY_KEYS`, the :data:`BOUND_KEYS` given,
        ``out`` and ``files``."""
        report = self.to_dict()
        bounds = {key: report[key] for key in BOUND_KEYS if report[key] is not None}
        return {**{key: report[key] for key in SUMMARY_KEYS}, **bounds, "out": str(out), "files": self.files}


def save_model(path: Path, net: nn.Module, arch: Any, config: dict[str, Any], extra: dict[str, Any]) -> Path:
    """``state_dict``, architecture and config as plain tensors, dicts, lists, strings and numbers, so that
    ``torch.load(path, weights_only=True)`` reads it and ``ArchNet.from_config(ckpt["arch"])`` rebuilds the net."""
    checkpoint = {"state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
                  "arch": arch.to_dict(), "config": config, **extra}
    with atomic_path(path) as tmp:  # a kill leaves no half-written model.pt
        torch.save(checkpoint, tmp)
    return path


def write_report(path: Path, report: RunReport | dict[str, Any]) -> Path:
    write_json_atomic(path, report.to_dict() if isinstance(report, RunReport) else report)
    return path


def chosen_probabilities(space: Any, arch: Any, probs: Sequence[Sequence[float]]) -> list[float]:
    """Per layer, the search's final probability of the op the architecture chose."""
    return [float(p[layer.names.index(choice)]) for layer, choice, p in zip(space.layers, arch.choices, probs)]


def plot_search(path: Path, history: list[dict[str, Any]], space: Any, arch: Any, probs: Sequence[Sequence[float]],
                target_ms: float, title: str, table_target_ms: float | None = None) -> Path:
    """Top: expected and argmax latency per epoch (left axis, with T) and the argmax architecture's accuracy on
    the ``arch`` split (right axis). Bottom: the final architecture, one bar per layer coloured by op, its height
    the probability of the chosen op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), gridspec_kw={"height_ratios": [3, 2]})
    epochs = [h["epoch"] for h in history]
    warmup = [h["epoch"] for h in history if h["phase"] == "warmup"]
    if warmup:
        top.axvspan(0.5, max(warmup) + 0.5, color="gray", alpha=0.12, label="warm-up")
    top.plot(epochs, [h["expected_latency_ms"] for h in history], "o-", color="tab:blue", label="E[latency]")
    top.plot(epochs, [h["argmax_latency_ms"] for h in history], "s--", color="tab:cyan", ms=4,
             label="argmax latency")
    top.axhline(target_ms, color="tab:red", lw=1, label=f"target {target_ms:.3g} ms")
    if table_target_ms is not None and abs(table_target_ms - target_ms) > 1e-9:
        top.axhline(table_target_ms, color="tab:red", lw=1, ls=":",
                    label=f"table target after the closed loop {table_target_ms:.3g} ms")
    top.set(xlabel="epoch", ylabel="latency (ms, table)", title=title)
    accuracy_axis = top.twinx()
    accuracy_axis.plot(epochs, [h["argmax_arch_accuracy"] for h in history], "^-", color="tab:green",
                       label="argmax accuracy (arch split)")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1.02)
    lines = top.get_legend_handles_labels()
    more = accuracy_axis.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")

    names = sorted({n for layer in space.layers for n in layer.names})
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    heights = chosen_probabilities(space, arch, probs)
    x = np.arange(len(arch.choices))
    bottom.bar(x, heights, color=[colours[c] for c in arch.choices], edgecolor="black", linewidth=0.4)
    for stage in space.stages[1:]:
        bottom.axvline(stage.layers[0] - 0.5, color="gray", lw=0.6, ls=":")
    bottom.set_xticks(x, arch.choices, rotation=60, fontsize=7)
    bottom.set(ylabel="p(chosen op)", xlabel="searchable layer", ylim=(0, 1.05))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names if n in arch.choices]
    bottom.legend(handles, [n for n in names if n in arch.choices], fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
