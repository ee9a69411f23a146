"""SIGTERM (what ``timeout``, ``kill`` and service managers send) stops a command as Ctrl-C does (issue #16): its
context managers and ``finally`` blocks run, so no ``hwnas-*`` temporary folder is left behind, and one
``hwnas: interrupted by SIGTERM (...)`` line explains it, exit status 143 (130 for Ctrl-C). Real processes, real
signals, with ``TMPDIR`` set to a fresh folder so that whatever is left there is seen."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]


def _stop_once_working(command: list[str], tmp_path: Path, working: str, sig: signal.Signals) -> tuple[int, str, Path]:
    """Run ``hwnas command`` with a fresh TMPDIR, send ``sig`` once ``working`` exists (a temporary folder's name
    prefix in TMPDIR, or a file the command writes when it starts measuring); returns the exit status, stderr and
    the TMPDIR. Not there within 120 s: the test fails (the signal would not reach the measurement)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)}
    process = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *command], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120

    def started() -> bool:
        return Path(working).is_file() or any(p.name.startswith(working) for p in tmpdir.iterdir())

    while not started():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{working} did not appear within 120 s"
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the measurement
    assert process.poll() is None, process.communicate()
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    return process.returncode, err, tmpdir


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_measure_stopped_by_a_signal_says_so_and_leaves_no_temporary_folder(tmp_path: Path, sig: signal.Signals,
                                                                           status: int) -> None:
    command = ["measure", "--device", "cpu-torch", "--space", "tiny", "--resolution", "32", "--n", "3",
               "--out", str(tmp_path / "set.json"), "--quiet", "--protocol", "pairs=100000"]
    code, err, tmpdir = _stop_once_working(command, tmp_path, str(tmp_path / "set.json"), sig)  # saved, planned
    by = " by SIGTERM" if sig == signal.SIGTERM else ""
    assert code == status and err.strip().splitlines()[-1] == (
        f"hwnas: interrupted{by} (completed measurements are saved; rerun to resume)"), err
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("hwnas-")] == []


def test_bench_stopped_by_sigterm_says_so_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    arch = get_space("tiny", 32).random_arch(random.Random(0)).save(tmp_path / "arch.json")
    command = ["bench", str(arch), "--device", "cpu-torch", "--protocol", "rounds=1", "--protocol", "min_time_s=600"]
    code, err, tmpdir = _stop_once_working(command, tmp_path, "hwnas-bench-", signal.SIGTERM)
    assert code == 143 and err.strip().splitlines()[-1] == (
        "hwnas: interrupted by SIGTERM (bench keeps no partial measurement; rerun it to measure)"), err
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("hwnas-")] == []


def test_sigterm_handler_is_restored_after_the_command(capsys: pytest.CaptureFixture) -> None:
    """``main`` called in-process (tests, notebooks) leaves the caller's SIGTERM handler as it was."""
    def caller_handler(signum: int, frame: object) -> None:
        raise AssertionError("not expected to be called")

    previous = signal.signal(signal.SIGTERM, caller_handler)
    try:
        assert main(["spaces"]) == 0
        assert signal.getsignal(signal.SIGTERM) is caller_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    capsys.readouterr()
