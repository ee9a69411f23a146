"""One network per latency target from one supernet training: ``hwnas search --targets T1,T2,...``.

The targets run one after the other, each as a whole search run in its own folder ``OUT/target-<i>`` (closed loop,
training from scratch, verdict, report, Pareto front), in this order: the median target first, then the others in
the order given. The first run trains the supernet (for ``proxyless`` and ``mnas`` toward the median target: the
distribution is then decoded under each target by the closed loop; ``evolution`` does not depend on the target
while training) and saves it to ``OUT/supernet.pt``; the others load it instead of training. They also aim with the
latency model the first run used or built (a predictor built from measured networks is built once). A rerun of the
same command resumes: finished targets are read back, the unfinished one resumes from its checkpoint.
``OUT/targets.json`` lists every target's result.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

from hwnas.errors import HwnasError
from hwnas.io import write_json_atomic
from hwnas.outputs import check_run_folder, mark_run_folder
from hwnas.search.run_config import SearchConfig

SUPERNET_FILE = "supernet.pt"
KEPT = ("target_ms", "arch_human", "estimated_ms", "measured_ms", "measured_over_target", "accuracy", "baselines",
        "pareto", "memory_mb", "out")


def target_order(targets: list[float]) -> list[int]:
    """Indices of ``targets`` in run order: the median one (the lower middle for an even count) first."""
    middle = sorted(range(len(targets)), key=lambda i: targets[i])[(len(targets) - 1) // 2]
    return [middle] + [i for i in range(len(targets)) if i != middle]


def run_targets(config: SearchConfig, out: Path, one_run: Callable[..., dict[str, Any]], progress: bool,
                latency_model: Any = None) -> dict[str, Any]:
    """Run ``config.targets`` (see the module docstring) with ``one_run(config, progress, latency_model=...,
    supernet_file=...)`` (:func:`~hwnas.search.run.run_search`); returns ``{"targets": [...], "out", "files"}``."""
    targets = list(config.targets)
    if config.target_ms is not None:
        raise HwnasError("search: give --target-ms or --targets, not both")
    check_run_folder(out)
    mark_run_folder(out)
    results: dict[int, dict[str, Any]] = {}
    base = config.with_overrides({"targets": [], "out": None})
    for i in target_order(targets):
        folder = out / f"target-{i + 1}"
        done = folder / "report.json"
        if done.is_file() and json.loads(done.read_text()).get("target_ms") == targets[i]:
            results[i] = _summary(json.loads(done.read_text()), folder)
        else:
            sub = base.with_overrides({"target_ms": targets[i], "out": str(folder)}, "--targets")
            summary = one_run(sub, progress, latency_model=latency_model, supernet_file=out / SUPERNET_FILE)
            results[i] = {key: summary.get(key) for key in KEPT}
        if latency_model is None and base.predictor == "auto":
            latency_model = _model_of(folder)
    rows = [results[i] for i in range(len(targets))]
    write_json_atomic(out / "targets.json", {"targets": rows, "supernet": str(out / SUPERNET_FILE),
                                             "median_target_ms": statistics.median(targets)})
    return {"targets": rows, "out": str(out), "files": {"targets": str(out / "targets.json"),
                                                        "supernet": str(out / SUPERNET_FILE)}}


def _summary(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {**{key: report.get(key) for key in KEPT if key != "out"}, "out": str(folder)}


def _model_of(folder: Path) -> Any:
    """The latency model the first target's run aimed with, for the others: its predictor file (refitted with its
    closed loop's measurements) when it used one, else None (the others choose as it did)."""
    predictor = folder / "predictor.json"
    if predictor.is_file():
        from hwnas.latency.predictors import load_predictor

        return load_predictor(predictor)
    return None


def save_supernet(path: Path, supernet: Any, history: list[dict[str, Any]], config: SearchConfig) -> None:
    """The trained supernet (weights and architecture parameters) and its epoch history, atomically, with what it
    was trained for (space, resolution, classes, strategy) so another run refuses one of another kind."""
    import torch

    from hwnas.io import atomic_path

    space = supernet.space
    with atomic_path(path) as tmp:
        torch.save({"state_dict": supernet.state_dict(), "history": history, "kind": _kind(space, config)}, tmp)


def load_supernet(path: Path, supernet: Any, config: SearchConfig) -> list[dict[str, Any]]:
    """Load :func:`save_supernet`'s file into ``supernet``; returns its history. One line when it was trained for
    another space, resolution, head or strategy."""
    import torch

    saved = torch.load(path, weights_only=True)
    expected = _kind(supernet.space, config)
    if saved.get("kind") != expected:
        raise HwnasError(f"{path}: a supernet trained for {saved.get('kind')}, not {expected}; remove it or use "
                         "another --out")
    supernet.load_state_dict(saved["state_dict"])
    return list(saved["history"])


def _kind(space: Any, config: SearchConfig) -> dict[str, Any]:
    return {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
            "strategy": config.strategy, "seed": config.seed}
