"""Shared test setup: converted-model caches go to a temporary folder, never the user's ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["HWNAS_CACHE"] = str(tmp_path_factory.mktemp("hwnas-cache"))
