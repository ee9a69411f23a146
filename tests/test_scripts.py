"""The scripts around the package: every tool and benchmark still imports against today's hwnas (they run by hand,
so nothing else notices a renamed function), benchmarks run as modules and as plain scripts, and
tools/build_tables.sh with .ci/gpu_check.sh build exactly the shipped tables."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("tools/*.py"), *ROOT.glob("benchmarks/*.py")])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_imports(path, monkeypatch):
    """Executes the module's top level (its imports and constants), not its ``main``."""
    spec = importlib.util.spec_from_file_location(f"_script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.__doc__, f"{path.name}: say in a docstring what it does and how to run it"


def test_benchmarks_run_as_modules_and_as_scripts():
    for argv in (["-m", "benchmarks.bench_search_memory", "--help"], ["benchmarks/bench_search_memory.py", "--help"]):
        done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_table_scripts_build_exactly_the_shipped_tables():
    built = {f"{device}__{space}__{resolution}.json" for device, space, resolution in
             re.findall(r"^profile (\S+) (\S+) (\d+)", (ROOT / "tools" / "build_tables.sh").read_text(), re.M)}
    gpu_check = (ROOT / ".ci" / "gpu_check.sh").read_text()
    built |= {f"cuda-torch__proxyless__{r}.json" for r in re.findall(r"profile --device \S+ --space proxyless "
                                                                       r"--resolution (\d+)", gpu_check)}
    assert built == {path.name for path in (ROOT / "latency_tables").glob("*.json")}
