"""The README's tour, run as written: each command of the ```bash block under "## A tour of the CLI" through the
installed ``hwnas``, in a fresh data folder, cache and working folder, so the README cannot drift from the code.

The files the tour needs come from the README itself (``my-cpu.toml``: its ```toml block) or from earlier tour
commands, and ``new.csv``/``others.csv`` from the fixture the README names, made as it says. The only additions
are the small settings the README's own sentence names ("made small by appending `...` to it") for ``search``.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIXTURE = ROOT / "tests" / "fixtures" / "fbnet_latency" / "fbnet_latency_300.csv"


def _tour_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## A tour of the CLI")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def tour_commands() -> list[list[str]]:
    """The tour's commands, each split as a shell would (comments dropped); the first ```bash block of the section."""
    block = re.search(r"```bash\n(.*?)```", _tour_section(), re.S)
    assert block, "README: no ```bash block under '## A tour of the CLI'"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [command for command in commands if command]


def device_file() -> str:
    """The ```toml block of the tour: the device file ``my-cpu.toml`` the tour adds."""
    block = re.search(r"```toml\n(.*?)```", _tour_section(), re.S)
    assert block, "README: no ```toml block (my-cpu.toml) under '## A tour of the CLI'"
    return block.group(1)


def small_settings() -> list[str]:
    """The flags the README says the test appends to ``search`` (quoted from its own sentence)."""
    match = re.search(r"made small by appending `([^`]+)` to it", " ".join(_tour_section().split()))
    assert match, "README: the tour must say which small settings the test appends to search"
    return shlex.split(match.group(1))


def _write_csvs(folder: Path, rows: int = 20, column: str = "pixel3") -> None:
    """``new.csv`` (20 rows of the fixture's ``pixel3`` column as ``dev``) and ``others.csv`` (the other columns)."""
    with FIXTURE.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    others = [name for name in table[0] if name != column]
    with (folder / "others.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, others, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    with (folder / "new.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "dev"])
        writer.writerows([row["arch"], row[column]] for row in table[:rows])


def _hwnas() -> list[str]:
    script = Path(sys.executable).with_name("hwnas")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hwnas.cli"]


def test_tour_parses() -> None:
    commands = tour_commands()
    assert len(commands) >= 15 and all(command[0] == "hwnas" for command in commands)
    assert any(command[:2] == ["hwnas", "search"] for command in commands) and small_settings()
    assert 'name = "my-cpu"' in device_file()


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "my-cpu.toml").write_text(device_file())
    _write_csvs(work)
    env = {**os.environ, "HWNAS_DATA": str(tmp_path / "data"), "HWNAS_CACHE": str(tmp_path / "cache"),
           "PYTHONUNBUFFERED": "1"}
    for name in ("HWNAS_TABLES", "HWNAS_DEVICES"):
        env.pop(name, None)
    timings = []
    for command in tour_commands():
        argv = _hwnas() + command[1:] + (small_settings() if command[1] == "search" else [])
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        timings.append(f"{time.perf_counter() - start:5.1f}s {shlex.join(command)}")
        assert proc.returncode == 0, (f"README tour: `{shlex.join(command)}` exited {proc.returncode}\n"
                                      f"{proc.stderr[-3000:]}")
    print("\n".join(timings))
