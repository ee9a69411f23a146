"""Where a device's predictor files are, found like its tables: the user's folder first, then the shipped one.

One name per device, kind and (for predictors of a search space) space and resolution::

    predictors/DEVICE__SPACE__RES__KIND.json     (calibrated, transfer)
    predictors/DEVICE__kernel.json               (kernel: any model, no space)

below :func:`~hwnas.latency.table.table_folders` (``$HWNAS_DATA/latency_tables``, then the shipped
``latency_tables``). A predictor the user fits or builds for a device is found before the shipped one, as a
table the user profiles is, and a command may prefer one fitted on this machine (:func:`default_predictor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hwnas.spaces import SearchSpace

FOLDER = "predictors"


def predictor_name(device: str, kind: str, space: SearchSpace | None = None) -> str:
    """The file name of ``device``'s predictor of ``kind`` (of ``space``, for the kinds of a space)."""
    if space is None:
        return f"{device}__{kind}.json"
    return f"{device}__{space.name}__{space.resolution}__{kind}.json"


def find_predictor(device: str, kind: str, space: SearchSpace | None = None) -> Path | None:
    """The user's predictor file of that name, else the shipped one, else None."""
    from hwnas.latency.table import find_table_file

    return find_table_file(f"{FOLDER}/{predictor_name(device, kind, space)}")


def user_predictor_path(device: str, kind: str, space: SearchSpace | None = None) -> Path:
    """Where a predictor the user fits for ``device`` is found first (it may not exist yet)."""
    from hwnas.latency.table import user_tables_dir

    return user_tables_dir() / FOLDER / predictor_name(device, kind, space)


def default_predictor(device: str, space: SearchSpace | None,
                      fits_here: Callable[[Path], bool] | None = None) -> Path | None:
    """The predictor a command uses when none is named: for an architecture of ``space``, the device's predictor of
    it (the kinds that refit first: calibrated, then transfer); then a predictor of any model (kernel); None if
    none. With ``fits_here``, the first file it accepts (a predictor of this machine: one shipped from another
    machine gives way to one the user built here), else the first found."""
    candidates = [(kind, space) for kind in space_kinds()] if space is not None else []
    found = [path for kind, of in [*candidates, *((kind, None) for kind in model_kinds())]
             if (path := find_predictor(device, kind, of)) is not None]
    if fits_here is not None:
        return next((path for path in found if fits_here(path)), found[0] if found else None)
    return found[0] if found else None


def space_kinds() -> list[str]:
    """The registered kinds that predict one search space's architectures, those that refit first."""
    from hwnas.latency.predictors.base import SpacePredictor, predictor_class, predictor_kinds

    classes = {kind: predictor_class(kind) for kind in predictor_kinds()}
    kinds = [kind for kind, cls in classes.items() if issubclass(cls, SpacePredictor)]
    return sorted(kinds, key=lambda kind: (not classes[kind].supports_refit, kind))


def model_kinds() -> list[str]:
    """The registered kinds that predict any model (no space of their own)."""
    from hwnas.latency.predictors.base import predictor_kinds

    return [kind for kind in predictor_kinds() if kind not in space_kinds()]
