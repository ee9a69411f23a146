"""The ``evolution`` strategy and the Pareto front of a search run, end to end on the tiny space (a synthetic
latency table, the embedded digits, one epoch per phase): the evolution searches the trained supernet under the
closed loop's bound, never evaluates a candidate over it, reproduces with its seed, and every run writes its
accuracy-latency points and their front."""

from __future__ import annotations

import json
from pathlib import Path

from hwnas.cli import main
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.pareto import load_pareto
from hwnas.search.run import run_search
from hwnas.spaces import Architecture, get_space
from test_search_run import _config, tables  # noqa: F401 (the fixture)


def _estimator() -> TableEstimator:
    return TableEstimator(LatencyTable.load(default_table_path("cpu-torch", "tiny", 32)), get_space("tiny", 32, 10))


def test_evolution_searches_under_the_bound_and_reproduces(tables: Path, tmp_path: Path) -> None:
    settings = {"strategy": "evolution", "closed_loop_steps": 0, "seed": 4, "evolution_population": 8,
                "evolution_generations": 3, "reward": "hard"}
    first = run_search(_config(tmp_path / "a", **settings), progress=False)
    second = run_search(_config(tmp_path / "b", **settings), progress=False)
    assert first["arch"] == second["arch"] and first["decode"].startswith("evolutionary")
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["evolution"] and report["evolution"][-1]["evaluated"] > 8  # generations after the first bred
    bound = report["evolution"][-1]["bound_ms"]
    assert first["estimated_ms"] <= bound
    points, front = load_pareto(tmp_path / "a" / "pareto.json")
    estimator = _estimator()
    evaluated = [p for p in points if p.source == "evolution"]
    assert len(evaluated) >= report["evolution"][-1]["evaluated"]
    # never evaluated over the bound it ran under (the loop's only bound here, T)
    assert all(estimator.latency_ms(Architecture.from_dict(p.arch)) <= max(r["bound_ms"] for r in report["evolution"])
               for p in evaluated)
    assert any(p.accuracy_kind == "trained" for p in points) and front


def test_every_strategy_writes_its_pareto_front(tables: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["search", "--device", "cpu-torch", "--space", "tiny", "--strategy", "mnas", "--reward", "abs",
            "--epochs", "1", "--warmup-epochs", "1", "--train-epochs", "1", "--out", str(out), "--quiet", "--json",
            "--set", "max_per_split=192", "--set", "predictor_networks=0", "--set", "closed_loop_steps=2",
            "--set", "retry_pause_s=0",
            "--set", 'protocol={"rounds": 1, "min_runs": 3, "min_time_s": 0.0, "warmup_runs": 1, "warmup_s": 0.0}']
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pareto"] == str(out / "pareto.json") and (out / "pareto.png").stat().st_size > 5_000
    assert json.loads((out / "report.json").read_text())["config"]["reward"] == "abs"
    points, front = load_pareto(out / "pareto.json")
    kinds = {(p.measured, p.accuracy_kind, p.source.split(":")[0]) for p in points}
    assert {(False, "supernet", "mnas"), (True, "supernet", "closed_loop"), (True, "trained", "derived")} <= kinds
    chosen = [points[i] for i in front]
    for p in chosen:  # the front is non-dominated within its group
        group = [q for q in points if (q.measured, q.accuracy_kind) == (p.measured, p.accuracy_kind)]
        assert not any(q.accuracy >= p.accuracy and q.latency_ms <= p.latency_ms
                       and (q.accuracy, q.latency_ms) != (p.accuracy, p.latency_ms) for q in group)


def test_random_baselines_are_measured_in_the_band_trained_and_reported(tables: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    from contextlib import contextmanager

    from hwnas.search import random_baselines
    from test_search_run import measured

    estimator = _estimator()
    calls = []

    @contextmanager
    def scripted(device, space, model, config):  # the device "measures" 1.1x the table: some leave the band
        def measure(arch):
            calls.append(arch.choices)
            return measured(1.1 * estimator.latency_ms(arch), source="closed loop")
        yield measure

    monkeypatch.setattr(random_baselines, "loop_measure", scripted)
    out = tmp_path / "run"
    result = run_search(_config(out, random_baselines=2, random_band=0.7, closed_loop_steps=0, target_ms=1.0),
                        progress=False)
    rows = result["baselines"]
    assert [r["name"] for r in rows] == ["random1", "random2"] and all(r["kind"] == "random" for r in rows)
    points, _ = load_pareto(out / "pareto.json")
    in_loop = [p for p in points if p.source.startswith("closed_loop:random")]
    assert len(in_loop) == 2 and all(0.7 <= p.latency_ms <= 1.0 for p in in_loop)
    assert len(calls) >= 2 and all(0 <= r["accuracy"] <= 1 and r["measured_ms"] > 0 for r in rows)
    assert {tuple(Architecture.from_dict(p.arch).choices) for p in in_loop} <= set(calls)


def test_targets_give_one_network_per_target_from_one_supernet_training(tables: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    from hwnas.search import run as run_module

    trained_for = []
    real = run_module.search_supernet

    def counted(supernet, data, estimator, target_ms, *args, **kwargs):
        trained_for.append(target_ms)
        return real(supernet, data, estimator, target_ms, *args, **kwargs)

    monkeypatch.setattr(run_module, "search_supernet", counted)
    out = tmp_path / "run"
    config = _config(out, targets=[1.0, 0.7, 0.85], closed_loop_steps=0)
    result = run_search(config, progress=False)
    rows = result["targets"]
    assert [r["target_ms"] for r in rows] == [1.0, 0.7, 0.85]
    assert all(r["estimated_ms"] <= r["target_ms"] for r in rows)
    assert (out / "supernet.pt").is_file() and json.loads((out / "targets.json").read_text())["targets"] == rows
    reports = [json.loads((out / f"target-{i}" / "report.json").read_text()) for i in (1, 2, 3)]
    assert trained_for == [0.85]  # trained once, toward the median target, which ran first
    assert reports[0]["history"] == reports[1]["history"] == reports[2]["history"]
    assert all((out / f"target-{i}" / "pareto.json").is_file() for i in (1, 2, 3))
    again = run_search(config, progress=False)  # finished targets are read back, not run again
    assert again["targets"] == rows and trained_for == [0.85]
    import pytest

    from hwnas.errors import HwnasError

    with pytest.raises(HwnasError, match="--target-ms or --targets"):
        run_search(_config(tmp_path / "both", targets=[1.0], target_ms=1.0), progress=False)
