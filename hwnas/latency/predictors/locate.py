"""Where a device's predictor files are, found like its tables: the user's folder first, then the shipped one.

One name per device, kind and (for predictors of a search space) space and resolution::

    predictors/DEVICE__SPACE__RES__KIND.json     (calibrated, transfer)
    predictors/DEVICE__kernel.json               (kernel: any model, no space)

below :func:`~hwnas.latency.table.table_folders` (``$HWNAS_DATA/latency_tables``, then the shipped
``latency_tables``). A predictor the user fits or builds for a device is found before the shipped one, as a
table the user profiles is.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.spaces import SearchSpace

FOLDER = "predictors"
SPACE_KINDS = ("calibrated", "transfer")


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


def default_predictor(device: str, space: SearchSpace | None) -> Path | None:
    """The predictor a command uses when none is named: for an architecture of ``space``, the device's calibrated
    predictor of it, else its transfer predictor; then (any model) the device's kernel predictor; None if none."""
    candidates = [(kind, space) for kind in SPACE_KINDS] if space is not None else []
    for kind, of in [*candidates, ("kernel", None)]:
        found = find_predictor(device, kind, of)
        if found is not None:
            return found
    return None
