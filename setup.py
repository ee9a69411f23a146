"""Build step that ships the checkout's ``devices/`` and ``latency_tables/`` (every file, by glob) inside the
package as ``hwnas/_data/``, read through importlib.resources (see :mod:`hwnas.locations`). The top-level folders
stay the source of truth; an editable install reads them in place. Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("devices", "latency_tables")


class BuildWithData(build_py):
    """``build_py``, then a copy of every non-hidden file of the shipped folders into ``hwnas/_data/``."""

    def run(self) -> None:
        super().run()
        for name in SHIPPED_FOLDERS:
            source = ROOT / name
            target = Path(self.build_lib) / "hwnas" / "_data" / name
            for path in sorted(source.rglob("*")):
                relative = path.relative_to(source)
                if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / relative)


setup(cmdclass={"build_py": BuildWithData})
