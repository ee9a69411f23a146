"""Resuming an interrupted search (issue #11): the checkpoint after each epoch and closed-loop measurement, a
resumed run against an uninterrupted one with the same seed, a real process interrupted by SIGINT and SIGKILL, and
the refusals (another config in the folder, a complete run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search import checkpoint as checkpoint_module
from hwnas.search.checkpoint import CHECKPOINT_NAME, RunCheckpoint
from hwnas.search.run import SearchConfig, run_search
from hwnas.spaces import get_space
from hwnas.search.aim import aim_on_device
from hwnas.search.decode import fastest_arch, slowest_arch
from tests.test_search_aim import ScriptedMeter, _device_ms, setting  # noqa: F401 - setting is a fixture
from tests.test_search_run import QUICK, measured, tables  # noqa: F401 (tables: the fixture)

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"closed_loop_steps": 0, "measure": False, "search_epochs": 2, "train_epochs": 2}


def _config(out: Path, **overrides: Any) -> SearchConfig:
    return SearchConfig().with_overrides({**QUICK, **OFFLINE, "out": str(out), **overrides})


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, stage: str, epoch: int) -> None:
    """Raise KeyboardInterrupt right after the checkpoint of ``stage`` (``search`` or ``train``) at ``epoch``."""
    save = RunCheckpoint.save

    def save_then_stop(self: RunCheckpoint) -> None:
        save(self)
        state = self.state["search"] if stage == "search" else self.state["train"].get("train")
        if state is not None and state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.RunCheckpoint, "save", save_then_stop)


def _without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("strategy, stage, epoch", [("proxyless", "search", 1), ("proxyless", "search", 2),
                                                     ("proxyless", "train", 1), ("mnas", "search", 2)])
def test_resumed_run_matches_the_uninterrupted_one(tables: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture, strategy: str, stage: str,
                                                   epoch: int) -> None:
    """Closed loop off (its measurements are timing noise): an interruption after epoch k and a rerun give the same
    architecture, epoch history and trained accuracy as a run never interrupted, the independent reference."""
    reference = run_search(_config(tmp_path / "reference", seed=4, strategy=strategy), progress=False)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, stage, epoch)
        with pytest.raises(KeyboardInterrupt, match="rerun with --out"):
            run_search(_config(tmp_path / "run", seed=4, strategy=strategy), progress=False)
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)  # tensors and plain values only
    assert saved["search"]["epoch"] == (epoch if stage == "search" else 3)
    capsys.readouterr()
    resumed = run_search(_config(tmp_path / "run", seed=4, strategy=strategy), progress=False)
    finished = 1 + 2 if stage == "train" else epoch
    assert f"resuming from epoch {finished}" in capsys.readouterr().err
    assert resumed["arch"] == reference["arch"] and resumed["accuracy"] == reference["accuracy"]
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("reference", "run")]
    assert _without_seconds(reports[0]["history"]) == _without_seconds(reports[1]["history"])
    assert reports[0]["train_history"] == reports[1]["train_history"] and reports[0]["probs"] == reports[1]["probs"]
    assert reports[1]["resumed_from"]["epoch"] == finished and reports[0]["resumed_from"] is None
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()  # report.json marks the run complete


@pytest.mark.parametrize("factor", [0.5, 1.6])
def test_closed_loop_replays_its_recorded_measurements(tables: Path, factor: float) -> None:
    """A closed loop interrupted after its first measurement, rerun with the recorded ones: only architectures not
    measured before are measured, and it ends where the uninterrupted loop ends (the reference)."""
    from hwnas.search import closed_loop as loop_module
    from hwnas.search.decode import decode_under_target
    from hwnas.search.supernet import SuperNet

    space = get_space("tiny", 32, 10)
    table = TableEstimator(LatencyTable.load(default_table_path("cpu-torch", "tiny", 32)), space)
    supernet = SuperNet(space)
    with torch.no_grad():
        for alpha in supernet.arch_parameters():
            alpha.normal_(generator=torch.Generator().manual_seed(len(alpha) + 7))
    log_probs = [torch.log_softmax(a.detach().double(), dim=0).tolist() for a in supernet.arch_parameters()]
    fastest, slowest = fastest_arch(space, table), slowest_arch(space, table)
    target = 0.5 * (table.latency_ms(fastest) + table.latency_ms(slowest))
    calls: list[str] = []
    original = loop_module.measure_networks

    def loop(stop_after: int, known: dict[str, Any], record: dict[str, Any]) -> tuple[Any, list[Any]]:
        def scripted(device: Any, nets: dict[str, Any], *args: Any) -> tuple[dict[str, Any], None]:
            if len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append(" ".join(nets["candidate"].arch.choices))
            return {"candidate": measured(factor * table.latency_ms(nets["candidate"].arch))}, None

        loop_module.measure_networks = scripted
        try:
            return loop_module.meet_on_device(
                space, table, target, lambda t: decode_under_target(space, log_probs, table, t), fastest,
                table.latency_ms(decode_under_target(space, log_probs, table, table.latency_ms(slowest))), None,
                SearchConfig(closed_loop_steps=6), known=known, on_measured=record.__setitem__)
        finally:
            loop_module.measure_networks = original

    reference = loop(99, {}, {})
    measured_once, recorded = list(calls), {}
    assert len(measured_once) >= 2
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        loop(1, {}, recorded)
    assert list(recorded) == measured_once[:1]
    calls.clear()
    resumed = loop(99, dict(recorded), recorded)
    assert calls == measured_once[1:] and list(recorded) == measured_once  # measured once in all
    assert resumed == reference


def test_measured_architectures_are_not_measured_again(tables: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run interrupted while training the derived network: the rerun takes the closed loop's measurements from
    the checkpoint and measures nothing before training."""
    from hwnas.search import closed_loop as loop_module, run as run_module
    from hwnas.search.verdict import Verdict

    calls: list[str] = []

    def scripted(device: Any, nets: dict[str, Any], *args: Any, **kwargs: Any) -> tuple[dict[str, Any], None]:
        calls.append(" ".join(nets["candidate"].arch.choices))
        return {"candidate": measured(0.5)}, None

    monkeypatch.setattr(loop_module, "measure_networks", scripted)
    monkeypatch.setattr(run_module, "final_verdict", lambda *args: Verdict("off"))
    overrides = {"measure": True, "closed_loop_steps": 3}
    reference = run_search(_config(tmp_path / "reference", **overrides), progress=False)
    calls.clear()
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "train", 1)
        with pytest.raises(KeyboardInterrupt):
            run_search(_config(tmp_path / "run", **overrides), progress=False)
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["measured"]["derived"]
    assert list(saved) == calls and calls
    calls.clear()
    resumed = run_search(_config(tmp_path / "run", **overrides), progress=False)
    assert calls == [] and resumed["closed_loop"] == reference["closed_loop"] and resumed["arch"] == reference["arch"]


def test_final_measurement_is_not_measured_again(tables: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """A run killed after its final measurement (while it writes the run folder): the rerun takes the verdict from
    the checkpoint, measures nothing, and reports what the first run measured."""
    from hwnas.search import verdict as verdict_module

    calls: list[list[str]] = []

    def scripted(device: Any, nets: dict[str, Any], *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict]:
        calls.append(sorted(nets))
        return {name: measured(0.25 + 0.25 * len(calls)) for name in nets}, {"runtime": "scripted"}

    monkeypatch.setattr(verdict_module, "measure_networks", scripted)
    save = RunCheckpoint.save

    def save_then_stop(self: RunCheckpoint) -> None:
        save(self)
        if self.state["verdict"] is not None:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.RunCheckpoint, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt, match="rerun with --out"):
            run_search(_config(tmp_path / "run", measure=True), progress=False)
    assert calls == [["derived", "derived_untrained"]] and not (tmp_path / "run" / "report.json").exists()
    capsys.readouterr()
    resumed = run_search(_config(tmp_path / "run", measure=True), progress=False)
    assert calls == [["derived", "derived_untrained"]]  # not measured again
    assert "final measurement done" in capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert resumed["measured_ms"] == report["measured_ms"] == 0.5 and report["measurement"].startswith("end to end")
    assert report["measured_untrained"]["median_ms"] == 0.5 and report["versions"]["runtime"] == {"runtime": "scripted"}


def test_another_config_in_the_folder_is_refused_in_one_line(tables: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "search", 1)
        with pytest.raises(KeyboardInterrupt):
            run_search(_config(tmp_path / "run", seed=1), progress=False)
    with pytest.raises(HwnasError, match="field 'seed': 1 there, 2 now") as info:
        run_search(_config(tmp_path / "run", seed=2), progress=False)
    assert "another --out" in str(info.value) and "\n" not in str(info.value)
    config = tmp_path / "quick.json"
    config.write_text(json.dumps({**QUICK, **OFFLINE}))
    assert main(["search", "--config", str(config), "--seed", "3", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "field 'seed'" in err


def test_complete_run_is_refused_in_one_line(tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_search(_config(tmp_path / "run"), progress=False)
    capsys.readouterr()  # the first run's warnings, if any
    report = (tmp_path / "run" / "report.json").read_text()
    config = tmp_path / "quick.json"
    config.write_text(json.dumps({**QUICK, **OFFLINE}))
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "this run is complete" in err and "another --out" in err
    assert (tmp_path / "run" / "report.json").read_text() == report  # untouched


def _command(out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "hwnas.cli", "search", "--config", str(config), "--out", str(out), "--quiet"]


def _interrupt_at_first_checkpoint(command: list[str], out: Path, cwd: Path, env: dict[str, str],
                                   sig: signal.Signals) -> tuple[subprocess.Popen, str]:
    """Start ``command`` in its own process and send it ``sig`` once its first checkpoint exists; its stderr."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()
    process.send_signal(sig)
    return process, process.communicate(timeout=60)[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_real_process_interrupted_then_rerun_continues(tables: Path, tmp_path: Path, sig: signal.Signals) -> None:
    """``hwnas search`` in its own process, stopped by a signal once its first checkpoint exists; the same command
    again continues from the checkpoint's epoch and finishes with a report."""
    config = tmp_path / "search.json"
    config.write_text(json.dumps({**QUICK, "warmup_epochs": 2, "search_epochs": 30, "train_epochs": 2,
                                  "max_per_split": 256, "closed_loop_steps": 2}))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process, err = _interrupt_at_first_checkpoint(_command(out, config), out, tmp_path, env, sig)
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert 1 <= saved["search"]["epoch"] < 32 and not (out / "report.json").exists()
    if sig == signal.SIGINT:
        assert process.returncode == 130
        assert f"interrupted (finished epochs and measurements are saved in {out / CHECKPOINT_NAME}" in err
    else:
        assert process.returncode == -signal.SIGKILL
    rerun = subprocess.run(_command(out, config) + ["--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from epoch {saved['search']['epoch']}" in rerun.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"]["epoch"] == saved["search"]["epoch"]
    assert [h["epoch"] for h in report["history"]] == list(range(1, 33))
    assert json.loads(rerun.stdout)["arch"] == report["arch"] and not (out / CHECKPOINT_NAME).exists()


class _StoppingMeter(ScriptedMeter):
    """The scripted device of tests/test_search_aim.py, ``factor`` x slower (so that the predictor misses at first
    and the loop refits), interrupted at its ``stop_after + 1``-th measurement."""

    def __init__(self, space: Any, table: Any, stop_after: int = 99, factor: float = 1.3) -> None:
        super().__init__(space, table)
        self.stop_after, self.factor = stop_after, factor

    def measure(self, nets: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
        if len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        records = super().measure(nets, source)
        self.calls[-1] *= self.factor
        return {name: {**r, "median_ms": self.factor * r["median_ms"]} for name, r in records.items()}


def test_refitting_loop_replays_its_recorded_measurements(setting: Any) -> None:
    """The predictor's closed loop interrupted after its first measurement and rerun with the recorded ones
    measures only the rest and ends with the uninterrupted loop's architecture and records (its refits replay)."""
    space, estimator, predictor = setting
    gen = torch.Generator().manual_seed(1)
    log_probs = [torch.log_softmax(torch.randn(len(layer.names), generator=gen, dtype=torch.float64), 0).tolist()
                 for layer in space.layers]
    fastest, slowest = (_device_ms(space, estimator, f(space, estimator)) for f in (fastest_arch, slowest_arch))
    target = fastest + 0.4 * (slowest - fastest)
    config = SearchConfig(closed_loop_steps=6, closed_loop_margin=0.03)
    reference_meter = _StoppingMeter(space, estimator)
    arch, log, _ = aim_on_device(space, predictor, target, log_probs, reference_meter, config)
    assert len(reference_meter.calls) >= 2
    recorded: dict[str, Any] = {}
    with pytest.raises(KeyboardInterrupt):
        aim_on_device(space, predictor, target, log_probs, _StoppingMeter(space, estimator, 1), config,
                      on_measured=recorded.__setitem__)
    assert len(recorded) == 1
    meter = _StoppingMeter(space, estimator)
    resumed, resumed_log, _ = aim_on_device(space, predictor, target, log_probs, meter, config, known=dict(recorded),
                                            on_measured=recorded.__setitem__)
    assert meter.calls == reference_meter.calls[1:] and len(recorded) == len(reference_meter.calls)
    assert resumed == arch and resumed_log == log


def test_interrupt_message_of_other_commands_is_unchanged(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """profile and measure resume from their own files: a bare KeyboardInterrupt keeps their message."""
    import hwnas.cli as cli

    def interrupted(args: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_spaces", interrupted)
    assert main(["spaces"]) == 130
    assert capsys.readouterr().err.strip() == "hwnas: interrupted (completed measurements are saved; rerun to resume)"


PREDICTOR_SEARCH = {**QUICK, "warmup_epochs": 0, "search_epochs": 3, "max_per_split": 128, "predictor_networks": 6,
                    "closed_loop_steps": 2, "paired": {"pairs": 6}}  # the default path: a predictor built and used


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_predictor_search_interrupted_after_its_first_epoch_resumes(tables: Path, tmp_path: Path,
                                                                    sig: signal.Signals) -> None:
    """Issue #16: a search with the calibrated predictor (built from measured networks, as the default search does
    where no predictor is shipped) stopped by a real signal after its first search epoch; the same command resumes
    it to the end. Its history held a numpy.float64 (the predictor's latency), which a weights-only load refuses."""
    config = tmp_path / "search.json"
    config.write_text(json.dumps(PREDICTOR_SEARCH))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process, err = _interrupt_at_first_checkpoint(_command(out, config), out, tmp_path, env, sig)
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)  # what the rerun reads
    epoch = saved["search"]["epoch"]
    assert 1 <= epoch < 3 and saved["search"]["history"][0]["phase"] == "search"
    assert type(saved["search"]["history"][0]["argmax_latency_ms"]) is float  # noqa: E721 - the exact type
    assert process.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGINT:
        assert f"interrupted (finished epochs and measurements are saved in {out / CHECKPOINT_NAME}" in err
    rerun = subprocess.run(_command(out, config) + ["--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from epoch {epoch}" in rerun.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["latency_model"]["kind"] == "calibrated" and report["resumed_from"]["epoch"] == epoch
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3] and not (out / CHECKPOINT_NAME).exists()


def test_checkpoint_state_is_made_loadable_or_refused_naming_the_key(tmp_path: Path) -> None:
    """The guard at the write: numpy scalars and str subclasses (torch.__version__) become plain values, anything
    else a weights-only load would refuse is an internal error naming its key path; what is saved loads."""
    import numpy as np

    checkpoint = RunCheckpoint(tmp_path, {"seed": 1})
    checkpoint.state["search"] = {"history": [{"argmax_latency_ms": np.float64(0.5), "n": np.int64(3)}],
                                  "runtime": {"torch": torch.__version__}, "weights": torch.ones(2)}
    checkpoint.save()
    saved = torch.load(checkpoint.path, weights_only=True)
    assert saved["search"]["history"] == [{"argmax_latency_ms": 0.5, "n": 3}]
    assert type(saved["search"]["runtime"]["torch"]) is str and saved["search"]["weights"].tolist() == [1.0, 1.0]
    checkpoint.state["search"]["history"].append({"probs": np.zeros(2)})
    with pytest.raises(TypeError, match=r"state\['search'\]\['history'\]\[1\]\['probs'\]: a numpy.ndarray"):
        checkpoint.save()
    assert torch.load(checkpoint.path, weights_only=True)["search"]["history"][0]["n"] == 3  # the old file stays


def test_unreadable_checkpoint_is_one_clean_line(tmp_path: Path) -> None:
    """A checkpoint a weights-only load refuses (as written before issue #16, with a numpy.float64 in it): one line,
    no terminal escape codes, naming what it holds."""
    import numpy as np

    torch.save({"format": 1, "search": {"history": [{"argmax_latency_ms": np.float64(0.5)}]}},
               tmp_path / CHECKPOINT_NAME)
    with pytest.raises(HwnasError) as info:
        RunCheckpoint.open(tmp_path, {"seed": 1})
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and "cannot read the checkpoint (it holds a numpy" in message
    assert message.endswith("remove it or give another --out")
