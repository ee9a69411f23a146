"""Machine state, shown (issue 18 item 3): other processes' CPU use and the reference's drift, watched at measurement
boundaries, and one warning line saying what was done about them."""

from __future__ import annotations

import json
import os
import random
import sys

import pytest

from hwnas.cli.app import main
from hwnas.runtimes import machine_state
from hwnas.runtimes.machine_state import CpuReading, LinuxCpu, LoadWatcher
from hwnas.runtimes.paired import PairedStats
from hwnas.runtimes.protocol import Stats

REAL_MACHINE_CPU = machine_state.machine_cpu  # tests/conftest.py makes the watcher inert for every other test


class ScriptedCpu:
    """Readings given in advance: (wall s, other processes' cumulative CPU s); this process is given 0.9 core of
    its own, which the watcher must subtract."""

    def __init__(self, other: list[tuple[float, float]], cores: int = 2) -> None:
        self.cores, self._readings = cores, list(other)

    def read(self) -> CpuReading | None:
        wall, other = self._readings.pop(0) if len(self._readings) > 1 else self._readings[0]
        return CpuReading(wall, other + 0.9 * wall, 0.9 * wall)


def paired(reference_ms: float, discarded: int = 0, noisy: bool = False) -> PairedStats:
    net = Stats.from_samples([0.002] * 4, [2.0])
    ref = Stats.from_samples([reference_ms / 1e3] * 4, [reference_ms])
    return PairedStats(2.0 / reference_ms, net, ref, [1.0, 1.0], noisy=noisy, discarded=discarded)


def watch(other: list[tuple[float, float]], notes: list, unit: str = "network") -> LoadWatcher:
    watcher = LoadWatcher(unit, source=ScriptedCpu(other))
    for stats in notes:
        watcher.note(stats)
    return watcher


BUSY = [(0, 0), (1, 1.1), (2, 3.0), (3, 4.2), (4, 5.6)]  # 1.4 cores on average, 1.9 over the second second
QUIET = [(0, 0), (1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]  # 0.1 core throughout


def test_busy_machine_gives_the_exact_line(capsys):
    watcher = watch(BUSY, [paired(1.0, discarded=7), paired(1.23, discarded=5, noisy=True), paired(1.1)])
    state = watcher.warn()
    assert capsys.readouterr().err == (
        "hwnas: warning: the machine was busy while measuring (other processes: 1.4 of 2 cores on average, 1.9 at "
        "peak): 12 interrupted pairs discarded and taken again, 1 of 3 networks noisy\n")  # 23%: under 50%
    assert state.busy and state.other_cores == pytest.approx(1.4) and state.peak_other_cores == pytest.approx(1.9)
    assert state.to_dict()["reference_drift_pct"] == 23.0 and state.to_dict()["discarded_pairs"] == 12
    watcher.warn()
    assert capsys.readouterr().err == ""  # one line per watcher


def test_quiet_machine_says_nothing(capsys):
    watcher = watch(QUIET, [paired(1.0), paired(1.05)])
    state = watcher.warn()
    assert capsys.readouterr().err == "" and watcher.warning_line() is None
    assert not state.busy and state.other_cores == pytest.approx(0.1) and state.peak_other_cores == pytest.approx(0.1)


def test_a_busy_stretch_alone_counts_and_runs_are_counted_as_runs():
    # 0.2 core on average (under the 0.25 threshold), 0.6 over one second: busy at peak
    watcher = watch([(0, 0), (1, 0.6), (3, 0.6)],
                    [Stats.from_samples([0.001] * 3, [1.0], discarded=3), Stats.from_samples([0.001] * 3, [1.0])],
                    unit="op")
    assert watcher.warning_line() == (
        "hwnas: warning: the machine was busy while measuring (other processes: 0.2 of 2 cores on average, 0.6 at "
        "peak): 3 interrupted runs discarded and timed again, 0 of 2 ops noisy")


def test_reference_drift_alone_is_reported():
    line = watch(QUIET, [paired(1.0), paired(1.6)]).warning_line()
    assert line == ("hwnas: warning: the machine changed speed while measuring (other processes: 0.1 of 2 cores on "
                    "average, 0.1 at peak; the reference's clean level moved 60%): no interrupted run detected, 0 of 2 "
                    "networks noisy")
    assert watch(QUIET, [paired(1.0), paired(1.45)]).warning_line() is None  # within 50%: a VM's own drift


def test_too_brief_a_command_gets_no_cpu_verdict():
    state = watch([(0, 0), (0.2, 0.4)], [paired(1.0)]).summary()
    assert state.other_cores is None and not state.busy


def test_inert_without_proc(monkeypatch, capsys, tmp_path):
    watcher = LoadWatcher()  # tests/conftest.py: no source here
    assert watcher.inert
    for stats in (paired(1.0, discarded=9, noisy=True), paired(2.0)):
        watcher.note(stats)
    assert watcher.warn() is None and watcher.warning_line() is None and capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "platform", "darwin")
    assert REAL_MACHINE_CPU() is None
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(machine_state, "PROC_STAT", str(tmp_path / "missing"))
    assert REAL_MACHINE_CPU() is None


def test_parses_scripted_proc_files(tmp_path):
    stat, self_stat = tmp_path / "stat", tmp_path / "self_stat"
    stat.write_text("cpu  300 10 100 5000 40 0 20 5 7 0\ncpu0 150 5 50 2500 20 0 10 3 0 0\n"
                    "cpu1 150 5 50 2500 20 0 10 2 0 0\nintr 1 2 3\n")
    fields = ["S"] + ["0"] * 10 + ["120", "30", "4", "6"] + ["0"] * 30  # utime stime cutime cstime
    self_stat.write_text("4242 (a (weird) name) " + " ".join(fields) + "\n")
    clock = iter([10.0, 11.0])
    source = LinuxCpu(str(stat), str(self_stat), lambda: next(clock))
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    assert source.cores == 2
    assert source.read() == CpuReading(10.0, pytest.approx((300 + 10 + 100 + 20 + 5) * tick),
                                       pytest.approx(160 * tick))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_reads_this_machines_proc():
    source = LinuxCpu()
    first = source.read()
    end = first.wall_s + 0.3
    while machine_state.time.monotonic() < end:  # our own work: counted as own, not as other processes'
        pass
    second = source.read()
    assert 1 <= source.cores <= os.cpu_count()
    assert min(first.busy_s, first.own_s, second.busy_s, second.own_s) >= 0
    assert second.own_s > first.own_s and second.busy_s >= first.busy_s and second.wall_s > first.wall_s
    assert (second.busy_s - second.own_s) - (first.busy_s - first.own_s) <= source.cores * (second.wall_s -
                                                                                              first.wall_s) + 0.1


class ScriptedMachine:
    """Other processes at a constant ``cores`` on a scripted clock that advances 0.5 s per read."""

    def __init__(self, cores: float) -> None:
        self.cores, self._load, self._wall = 2, cores, 0.0

    def read(self) -> CpuReading:
        self._wall += 0.5
        return CpuReading(self._wall, self._load * self._wall, 0.0)


@pytest.mark.parametrize("load, lines", [(1.5, 1), (0.0, 0)])
def test_measure_cli_warns_once_when_busy(tmp_path, capsys, monkeypatch, load, lines):
    monkeypatch.setattr(machine_state, "machine_cpu", lambda: ScriptedMachine(load))
    monkeypatch.setattr(machine_state, "DRIFT_RATIO", 10.0)  # the real reference's drift is not scripted here
    argv = ["measure", "--device", "cpu-onnxruntime", "--space", "tiny", "--n", "4", "--repeat", "0", "--out",
            str(tmp_path / "set.json"), "--quiet", "--protocol", "pairs=4", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "the machine was busy" in line]
    assert len(warnings) == lines and len(captured.err.splitlines()) == lines, captured.err
    machine = json.loads(captured.out)["machine"]
    assert machine["other_cores"] == pytest.approx(load) and machine["busy"] == bool(lines)
    if lines:
        assert warnings[0].startswith("hwnas: warning: the machine was busy while measuring (other processes: 1.5 of "
                                      "2 cores on average, 1.5 at peak") and "of 4 networks noisy" in warnings[0]


def test_bench_cli_warns_once_when_busy(tmp_path, capsys, monkeypatch):
    from hwnas.spaces import get_space

    space = get_space("tiny", 16)
    target = space.random_arch(random.Random(0)).save(tmp_path / "tiny.json")
    monkeypatch.setattr(machine_state, "machine_cpu", lambda: ScriptedMachine(1.5))
    assert main(["bench", "--device", "cpu-onnxruntime", str(target), "--json", "--protocol", "rounds=1",
                 "--protocol", "min_runs=5", "--protocol", "min_time_s=0.005"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert len(err.splitlines()) == 1 and err.startswith(
        "hwnas: warning: the machine was busy while measuring (other processes: 1.5 of 2 cores on average"), err
    assert "of 1 model noisy" in err
    machine = json.loads(captured.out)["machine"]  # what the line says, in the JSON too
    assert machine["busy"] is True and machine["other_cores"] == pytest.approx(1.5) and machine["cores"] == 2


def test_paired_meter_warns_once_on_exit(capsys, monkeypatch):
    from hwnas.devices import load_device
    from hwnas.runtimes.paired import PairedProtocol
    from hwnas.search.measure import PairedMeter
    from hwnas.spaces import get_space

    space = get_space("tiny", 16)
    nets = {f"n{i}": space.build(space.random_arch(random.Random(i))) for i in range(2)}
    monkeypatch.setattr(machine_state, "machine_cpu", lambda: ScriptedMachine(1.5))
    monkeypatch.setattr(machine_state, "DRIFT_RATIO", 10.0)
    with PairedMeter(load_device("cpu-onnxruntime"), space, 1.0, PairedProtocol(pairs=4),
                     "measuring the final verdict") as meter:
        meter.measure(nets, "final (paired)")
        meter.measure(nets, "final (paired)")
        assert capsys.readouterr().err == ""  # nothing while it measures
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(
        "hwnas: warning: the machine was busy while measuring the final verdict (other processes: 1.5 of 2 cores"), err
    assert "of 4 networks noisy" in err


def test_a_search_prints_one_line_for_all_its_meters(capsys, monkeypatch):
    """Inside ``one_warning`` (a search: its closed loop and its verdict measure with meters of their own) the
    meters stay silent and one line covers them all, with their counts added."""
    from hwnas.devices import load_device
    from hwnas.runtimes.paired import PairedProtocol
    from hwnas.search.measure import PairedMeter
    from hwnas.spaces import get_space

    space = get_space("tiny", 16)
    nets = {f"n{i}": space.build(space.random_arch(random.Random(i))) for i in range(2)}
    monkeypatch.setattr(machine_state, "machine_cpu", lambda: ScriptedMachine(1.5))
    monkeypatch.setattr(machine_state, "DRIFT_RATIO", 10.0)
    with machine_state.one_warning("searching"):
        for during in ("measuring the closed loop", "measuring the final verdict"):
            with PairedMeter(load_device("cpu-onnxruntime"), space, 1.0, PairedProtocol(pairs=4), during) as meter:
                meter.measure(nets, "paired")
        assert capsys.readouterr().err == ""  # each meter's exit: nothing yet
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(
        "hwnas: warning: the machine was busy while searching (other processes: 1.5 of 2 cores"), err
    assert "of 4 networks noisy" in err
