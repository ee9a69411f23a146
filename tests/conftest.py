"""Shared test setup: converted-model caches go to a temporary folder, never the user's ~/.cache, and each test
has its own empty user data folder (tables and devices it writes never reach ~/.local/share or other tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["HWNAS_CACHE"] = str(tmp_path_factory.mktemp("hwnas-cache"))


@pytest.fixture(autouse=True)
def _isolated_user_data(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("hwnas-data")
    monkeypatch.setenv("HWNAS_DATA", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _inert_load_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine-state warning (hwnas/runtimes/machine_state.py) off by default: on a busy test machine it would
    add a line to the stderr that tests count; tests/test_machine_state.py scripts its own readings."""
    monkeypatch.setattr("hwnas.runtimes.machine_state.machine_cpu", lambda: None)


@pytest.fixture(scope="session")
def litert_pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two zoo networks and one ProxylessNAS architecture at 64, each exported to ``.onnx`` and converted to
    ``.tflite`` once for the session (litert-torch takes seconds a conversion; the LiteRT splitter's tests share
    them)."""
    pytest.importorskip("litert_torch")
    import random

    from hwnas.runtimes.converters import cached_onnx, cached_tflite
    from hwnas.spaces import get_space
    from hwnas.zoo import build_zoo

    directory = tmp_path_factory.mktemp("litert-pairs")
    space = get_space("proxyless", 224)
    modules = {"mobilenet_v3_large": build_zoo("mobilenet_v3_large"), "shufflenet_v2": build_zoo("shufflenet_v2"),
               "proxyless": space.build(space.random_arch(random.Random(3))).eval()}
    shape = (1, 3, 64, 64)
    return {name: (cached_onnx(module, shape, directory, name), cached_tflite(module, shape, directory, name))
            for name, module in modules.items()}
