"""What ``hwnas export`` exports: a search run folder, a ``model.pt`` written by search, or an architecture JSON.

Anything else is refused with one line that says what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas.io import first_line
from hwnas.spaces import Architecture, ArchNet, SearchSpace, get_space

_DATA_KEYS = ("data", "seed", "arch_fraction", "test_fraction", "max_per_split")  # SearchConfig fields
EXPECTED = "expected a search run folder (arch.json, model.pt, report.json), a model.pt written by `hwnas search` " \
           "or an architecture .json"


@dataclass
class Source:
    """A network ready to export.

    Attributes:
        module: the network in eval mode (trained weights, or random ones for an architecture JSON).
        arch, space: its architecture and search space.
        kind: ``run``, ``model`` or ``architecture``.
        trained: whether the weights come from a checkpoint.
        meta: what the run says about itself: ``data`` (the data set spec the model was trained on, with its
            split settings), ``mean``/``std`` (the input normalisation), ``target_ms``, ``device``,
            ``estimated_ms``/``measured_ms`` (the search's figures), ``accuracy``.
    """

    path: Path
    module: ArchNet
    arch: Architecture
    space: SearchSpace
    kind: str
    trained: bool
    meta: dict[str, Any] = field(default_factory=dict)


def load_source(path: str | Path, seed: int = 0, random_weights: bool = False) -> Source:
    """Load SOURCE; random weights (seeded) for an architecture JSON, and for a run folder without ``model.pt``
    only when ``random_weights`` says so (exporting an untrained network by mistake loses nothing visible)."""
    path = Path(path)
    if path.is_dir():
        return _load_run(path, seed, random_weights)
    if not path.exists():
        raise HwnasError(f"{path}: no such file or folder; {EXPECTED}")
    if path.suffix in (".pt", ".pth"):
        return _from_checkpoint(path, _read_checkpoint(path), "model", {})
    if path.suffix == ".json":
        try:
            arch = Architecture.load(path)
        except HwnasError as error:
            raise HwnasError(f"{first_line(error)} ({EXPECTED})") from None
        return _from_arch(path, arch, seed, "architecture", {})
    raise HwnasError(f"{path}: not an architecture or a search run ({path.suffix or 'no suffix'}); {EXPECTED}")


def _load_run(folder: Path, seed: int, random_weights: bool) -> Source:
    arch_path, model_path, report_path = folder / "arch.json", folder / "model.pt", folder / "report.json"
    if not arch_path.is_file() and not model_path.is_file():
        raise HwnasError(f"{folder}: not a search run folder (no arch.json or model.pt); {EXPECTED}")
    meta = _read_report(report_path) if report_path.is_file() else {}
    if model_path.is_file():
        source = _from_checkpoint(folder, _read_checkpoint(model_path), "run", meta)
        if arch_path.is_file() and Architecture.load(arch_path) != source.arch:
            raise HwnasError(f"{folder}: arch.json and model.pt describe different architectures")
        return source
    if not random_weights:
        raise HwnasError(f"{folder}: no model.pt (trained weights) in the run folder; pass --random-weights to export "
                         "its arch.json with random weights")
    return _from_arch(folder, Architecture.load(arch_path), seed, "run", meta)


def _from_arch(path: Path, arch: Architecture, seed: int, kind: str, meta: dict[str, Any]) -> Source:
    space = get_space(arch.space, arch.resolution, arch.num_classes)
    space.validate(arch, str(path))
    with torch.random.fork_rng():  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        module = ArchNet(space, arch).eval()
    return Source(path, module, arch, space, kind, trained=False, meta=meta)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a zip/pickle, or a pickle with arbitrary objects
        raise HwnasError(f"{path}: not a model.pt written by `hwnas search` ({type(error).__name__}: "
                         f"{first_line(error)})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "arch"} <= set(checkpoint):
        raise HwnasError(f"{path}: not a model.pt written by `hwnas search` (expected a dict with state_dict and arch)")
    return checkpoint


def _from_checkpoint(path: Path, checkpoint: dict[str, Any], kind: str, meta: dict[str, Any]) -> Source:
    arch = Architecture.from_dict(checkpoint["arch"], source=f"{path}: arch")
    space = get_space(arch.space, arch.resolution, arch.num_classes)
    module = ArchNet(space, arch)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError) as error:
        raise HwnasError(f"{path}: weights do not fit the architecture: {first_line(error)}") from None
    _check_finite_weights(path / "model.pt" if path.is_dir() else path, checkpoint["state_dict"])
    meta = dict(meta)
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    meta.setdefault("data", {k: config[k] for k in _DATA_KEYS if k in config} if "data" in config else None)
    for key in ("mean", "std", "accuracy", "classes"):
        if key in checkpoint:
            meta.setdefault(key, checkpoint[key])
    return Source(path, module.eval(), arch, space, kind, trained=True, meta=meta)


def _check_finite_weights(path: Path, state: dict[str, Any]) -> None:
    """Refuse NaN or inf in the weights: a diverged training exports to files that output NaN, and a comparison of
    NaN with NaN verifies nothing."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise HwnasError(f"{path}: weight {name!r} holds {bad} NaN or inf value(s) of {tensor.numel()} (a "
                                 "diverged training?); expected finite weights")


def _read_report(path: Path) -> dict[str, Any]:
    """The figures of a run's report.json that export reports next to its own."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HwnasError(f"{path}: unreadable run report ({first_line(error)})") from None
    if not isinstance(report, dict):
        raise HwnasError(f"{path}: not a run report (expected a JSON object)")
    meta = {k: report[k] for k in ("target_ms", "device", "estimated_ms", "measured_ms", "accuracy") if k in report}
    config = report.get("config") if isinstance(report.get("config"), dict) else {}
    if "data" in config:
        meta["data"] = {k: config[k] for k in _DATA_KEYS if k in config}
    return meta

