"""The search run end to end on the tiny space: a synthetic latency table, the embedded digits, the torch runtime
with a short measurement protocol, one epoch per phase."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.runtimes.protocol import Stats
from hwnas.search import closed_loop, measure as measure_module
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.records import Attempt, LoopStep, Measurement, arch_id
from hwnas.search.run import SearchConfig, baseline_arch, baseline_candidates, default_target_ms, run_search
from hwnas.search.run_supernet import untrained_note
from hwnas.search.strategies import strategy_names
from hwnas.spaces import Architecture, ArchNet, get_space

QUICK = {"device": "cpu-torch", "space": "tiny", "resolution": 32, "warmup_epochs": 1, "search_epochs": 1,
         "train_epochs": 1, "max_per_split": 192, "num_threads": 1, "retry_pause_s": 0.0, "predictor_networks": 0,
         "protocol": {"rounds": 1, "min_runs": 3, "min_time_s": 0.0, "warmup_runs": 1, "warmup_s": 0.0}}


def _stats(ms: float) -> dict[str, Any]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 10}


def measured(ms: float, noisy: bool = False, source: str = "final") -> Measurement:
    """A scripted measurement of one network: ``ms`` in every statistic, one attempt."""
    return Measurement(_e2e_stats(ms, noisy), source, [Attempt(ms, noisy, source)])


def write_synthetic_table(path: Path, space_name: str = "tiny", resolution: int = 32, num_classes: int = 10,
                          device: str = "cpu-torch") -> LatencyTable:
    """A table whose op latency grows with the op's MACs (0.05 ms + 1 ms per MMAC), overhead 0.01 ms."""
    space = get_space(space_name, resolution, num_classes)
    entries = {s.key(): _stats(0.05 + s.macs() / 1e6) for s in space.all_specs() if not s.is_free}
    table = LatencyTable(device={"name": device}, space=space_name, resolution=resolution, num_classes=num_classes,
                         fingerprint={}, protocol={}, entries=entries, overhead=_stats(0.01))
    table.save(path)
    return table


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tables"
    monkeypatch.setenv("HWNAS_TABLES", str(folder))
    write_synthetic_table(default_table_path("cpu-torch", "tiny", 32))
    return folder


def _estimator() -> TableEstimator:
    space = get_space("tiny", 32, 10)
    return TableEstimator(LatencyTable.load(default_table_path("cpu-torch", "tiny", 32)), space)


def _config(out: Path, **overrides: Any) -> SearchConfig:
    return SearchConfig().with_overrides({**QUICK, "out": str(out), **overrides})


def test_seeded_runs_give_the_same_architecture_and_files_load(tables: Path, tmp_path: Path) -> None:
    # the closed loop's device measurements are not seeded (timing noise), so it is off here; the search is
    first = run_search(_config(tmp_path / "a", seed=3, closed_loop_steps=0), progress=False)
    second = run_search(_config(tmp_path / "b", seed=3, closed_loop_steps=0), progress=False)
    assert first["arch"] == second["arch"]
    report_a = json.loads((tmp_path / "a" / "report.json").read_text())
    report_b = json.loads((tmp_path / "b" / "report.json").read_text())
    latencies = [[h["expected_latency_ms"] for h in r["history"]] for r in (report_a, report_b)]
    assert latencies[0] == latencies[1]
    assert report_a["accuracy"] == report_b["accuracy"]

    run = tmp_path / "a"
    arch = Architecture.load(run / "arch.json")
    assert arch.to_dict() == first["arch"]
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    net = ArchNet.from_config(checkpoint["arch"])
    net.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["config"]["seed"] == 3 and checkpoint["classes"] == [str(i) for i in range(10)]
    for key in ("target_ms", "estimated_ms", "measured_ms", "measured_over_target", "accuracy", "search_seconds",
                "train_seconds", "peak_rss_mb", "seed", "versions", "config", "history", "train_history"):
        assert key in report_a
    assert report_a["measured_ms"] > 0 and report_a["versions"]["runtime"]["runtime"] == "torch"
    assert [h["phase"] for h in report_a["history"]] == ["warmup", "search"]
    assert (run / "search.png").stat().st_size > 10_000
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(report_a["config"]))
    # a report's config reruns the run
    assert SearchConfig.from_file(saved) == _config(tmp_path / "a", seed=3, closed_loop_steps=0)


@pytest.mark.parametrize("strategy", strategy_names())
def test_decoded_architecture_meets_the_target(tables: Path, tmp_path: Path, strategy: str) -> None:
    space, estimator = get_space("tiny", 32, 10), _estimator()
    target, fastest, slowest = default_target_ms(space, estimator, 0.3)
    assert fastest < target < slowest
    result = run_search(_config(tmp_path / strategy, strategy=strategy, target_ms=target, measure=False), False)
    assert result["estimated_ms"] <= target
    assert estimator.latency_ms(Architecture.from_dict(result["arch"])) == pytest.approx(result["estimated_ms"])
    assert result["measured_ms"] is None
    assert result["decode"].startswith("evolutionary" if strategy == "evolution" else "most probable")


def test_infeasible_target_is_refused_before_the_search(tables: Path, tmp_path: Path) -> None:
    # issue 16: a target under the fastest architecture is refused before any search (it was searched, then
    # answered with the fastest architecture and a warning)
    fastest = _estimator().latency_ms(fastest_arch(get_space("tiny", 32, 10), _estimator()))
    with pytest.raises(HwnasError, match=f"below the fastest architecture of tiny@32 \\(est. {fastest:.4g} ms"):
        run_search(_config(tmp_path / "run", target_ms=0.001, measure=False), progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_baseline_arch_is_uniform_and_within_budget(tables: Path) -> None:
    space, estimator = get_space("tiny", 32, 10), _estimator()
    target, fastest, _ = default_target_ms(space, estimator, 0.5)
    arch = baseline_arch(space, estimator, target)
    assert arch is not None and estimator.latency_ms(arch) <= target
    assert len({c for c in arch.choices if c != "zero"}) == 1
    assert baseline_arch(space, estimator, fastest * 0.5) is None


def test_baseline_is_trained_and_reported(tables: Path, tmp_path: Path) -> None:
    result = run_search(_config(tmp_path / "run", baseline=True), progress=False)
    base = result["baseline"]
    assert base is not None and base["measured_ms"] > 0
    assert 0.0 <= base["accuracy"] <= 1.0 and base["closed_loop"]  # measured before training, like the search
    # The closed loop meets T on the device, not in the table: the kept baseline is the slowest one it measured under
    # the aim (1 - margin) T, else the fastest one it measured. Its table estimate may exceed T when the device runs
    # faster than the (synthetic) table says; that is the loop correcting the table, not a miss.
    loop = {entry["arch"]: entry["measured_ms"] for entry in base["closed_loop"]}
    kept = loop[" ".join(base["arch"]["choices"])]
    aim = result["target_ms"] * (1.0 - SearchConfig().closed_loop_margin)
    under = [v for v in loop.values() if v <= aim]
    assert kept == (max(under) if under else min(loop.values()))
    assert Architecture.from_dict(base["arch"]) in baseline_candidates(get_space("tiny", 32, 10))


def test_progress_to_a_log_is_a_few_summary_lines(tables: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """stderr that is not a terminal (a log file, a pipe; pytest's capture here) gets one line per epoch and phase,
    never tqdm's carriage returns."""
    config = _config(tmp_path / "run", closed_loop_steps=0, search_epochs=2)
    run_search(config, progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and lines and all(line.startswith("hwnas: ") for line in lines)
    epochs = config.warmup_epochs + config.search_epochs + config.train_epochs
    progress = [line for line in lines if not line.startswith("hwnas: warning: ")]  # e.g. an untrained supernet's
    assert sum("epoch" in line for line in progress) == epochs
    assert sum("final measurement" in line for line in progress) == 1 and len(progress) <= epochs + 2


def test_config_files_and_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "search.toml"
    toml.write_text('space = "tiny"\nsearch_epochs = 3\narch_betas = [0.0, 0.9]\nloss = "mul#log"\n'
                    '[loss_params]\nbeta = 0.6\n')
    config = SearchConfig.from_file(toml)
    assert (config.space, config.search_epochs, config.arch_betas, config.loss_params) == \
        ("tiny", 3, [0.0, 0.9], {"beta": 0.6})
    assert config.with_overrides({"search_epochs": 1}).search_epochs == 1
    js = tmp_path / "search.json"
    js.write_text(json.dumps({"target_ms": 2, "strategy": "mnas"}))
    assert SearchConfig.from_file(js).target_ms == 2 and SearchConfig.from_file(js).strategy == "mnas"


@pytest.mark.parametrize("content, message", [
    ({"serch_epochs": 3}, "unknown key 'serch_epochs'"),
    ({"search_epochs": "three"}, "field 'search_epochs': expected int"),
    ({"strategy": "darts"}, "field 'strategy': expected one of proxyless, mnas, evolution"),
    ({"loss": "mul#exp"}, "field 'loss': expected one of"),
    ({"target_ms": -1.0}, "field 'target_ms'"),
])
def test_bad_config_file_is_a_one_line_error(tmp_path: Path, content: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(HwnasError, match=message) as info:
        SearchConfig.from_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("device, profile_missing, why", [
    ("android-litert", True, "the adb runtime is unavailable here"),  # no phone in CI
    ("cpu-torch", False, "profiling is off"),
])
def test_missing_table_says_how_to_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str,
                                           profile_missing: bool, why: str) -> None:
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "empty"))
    config = _config(tmp_path / "run", device=device, profile_missing=profile_missing)
    with pytest.raises(HwnasError, match=f"hwnas profile --device {device} --space tiny --resolution 32") as info:
        run_search(config, progress=False)
    assert why in str(info.value) and "does not exist" in str(info.value) and "\n" not in str(info.value)


def test_cli_search_json(tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "quick.json"
    config.write_text(json.dumps({**QUICK, "seed": 1}))
    out = tmp_path / "run"
    code = main(["search", "--config", str(config), "--seed", "2", "--out", str(out), "--json", "--quiet",
                 "--set", "closed_loop_steps=0", "--set", "arch_lr=0.01", "--set", "loss=add#linear"])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    for key in ("arch", "target_ms", "estimated_ms", "measured_ms", "accuracy", "out"):
        assert key in result
    assert result["out"] == str(out) and result["estimated_ms"] <= result["target_ms"]  # no closed loop: table
    saved = json.loads((out / "report.json").read_text())["config"]
    assert saved["seed"] == 2  # the flag beats the file
    assert (saved["closed_loop_steps"], saved["arch_lr"], saved["loss"]) == (0, 0.01, "add#linear")


@pytest.mark.parametrize("item, message", [("arch_lr", "expected FIELD=VALUE"),
                                           ("arch_lr=fast", "field 'arch_lr'"),
                                           ("speed=3", "unknown key 'speed'")])
def test_cli_set_errors_are_one_line(item: str, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["search", "--set", item]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_bad_data_path_is_one_line(tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["search", "--device", "cpu-torch", "--space", "tiny", "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "nowhere: no such data set folder" in err


def test_closed_loop_tightens_the_table_target_when_the_device_misses(tables: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A table that underestimates the device 1000x (a scripted device): the decoded architecture meets T in the
    table, the device says otherwise, and the run decodes again under a tighter table target (recorded in the
    report)."""
    space = get_space("tiny", 32, 10)
    path = default_table_path("cpu-torch", "tiny", 32)
    table = LatencyTable.load(path)
    for entry in table.entries.values():
        for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
            entry[key] /= 1000.0
    table.overhead = _stats(0.0)
    table.save(path)
    estimator = TableEstimator(LatencyTable.load(path), space)
    slowest = estimator.latency_ms(slowest_arch(space, estimator))

    def device(device: Any, nets: dict[str, Any], *args: Any) -> tuple[dict[str, Measurement], dict[str, Any]]:
        return {"candidate": measured(1000.0 * estimator.latency_ms(nets["candidate"].arch))}, {}

    monkeypatch.setattr(closed_loop, "measure_networks", device)
    result = run_search(_config(tmp_path / "loop", target_ms=slowest * 0.9, closed_loop_steps=2), progress=False)
    loop = json.loads((tmp_path / "loop" / "report.json").read_text())["closed_loop"]
    # every architecture misses T on this device, so both steps are spent: the first decode, then a tighter one
    assert len(loop) == 2 and loop[0]["measured_ms"] > result["target_ms"]
    assert loop[1]["table_target_ms"] < loop[0]["table_target_ms"]
    assert loop[1]["estimated_ms"] <= loop[1]["table_target_ms"]


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.3, 1.7])
def test_closed_loop_lands_just_under_the_target_on_a_biased_device(tables: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    factor: float) -> None:
    """A fake device that runs every network ``factor`` x its table estimate, and random probabilities: whether
    the table over- or underestimates, the loop ends at the slowest architecture it measured under the aim
    (1 - margin) T, and when the first decode is far under the aim (and the argmax is slower) it tries looser table
    targets."""
    from hwnas.search.supernet import SuperNet

    space, estimator = get_space("tiny", 32, 10), _estimator()
    calls: list[float] = []

    def fake_measure(device: Any, nets: dict[str, Any], *args: Any) -> tuple[dict[str, Measurement], dict[str, Any]]:
        calls.append(factor * estimator.latency_ms(nets["candidate"].arch))
        return {"candidate": measured(calls[-1])}, {}

    monkeypatch.setattr(closed_loop, "measure_networks", fake_measure)
    fastest, slowest = (estimator.latency_ms(f(space, estimator)) for f in (fastest_arch, slowest_arch))
    target = fastest + 0.5 * (slowest - fastest)
    config = SearchConfig(closed_loop_steps=6, closed_loop_margin=0.03)
    supernet = SuperNet(space)
    with torch.no_grad():
        for alpha in supernet.arch_parameters():
            alpha.normal_(generator=torch.Generator().manual_seed(len(alpha) + int(10 * factor)))
    log_probs = [torch.log_softmax(a.detach().double(), dim=0).tolist() for a in supernet.arch_parameters()]
    decode = lambda t: decode_under_target(space, log_probs, estimator, t)  # noqa: E731
    ceiling = estimator.latency_ms(decode(slowest))
    arch, log = closed_loop.meet_on_device(space, estimator, target, decode, fastest_arch(space, estimator), ceiling,
                                           None, config)
    kept_ms = factor * estimator.latency_ms(arch)
    aim = (1.0 - config.closed_loop_margin) * target
    # "far under the aim": under the band the loop accepts, [1 - 2 margin, 1] x aim, by one more margin
    far_under = (1.0 - 3.0 * config.closed_loop_margin) * aim
    assert 1 <= len(calls) <= 6 and len(set(calls)) == len(calls)  # each architecture measured once
    assert all(step.measured.median_ms == step.measured_ms == step.to_dict()["measured"]["median_ms"] for step in log)
    if factor * fastest > aim:  # nothing can meet the aim: the fastest architecture, measured
        assert kept_ms == min(calls) == factor * fastest
        return
    assert kept_ms <= aim and kept_ms == max(c for c in calls if c <= aim)
    assert [step.measured_ms for step in log][: len(calls)] == sorted(set(step.measured_ms for step in log),
                                                                      key=[s.measured_ms for s in log].index)
    argmax_ms = factor * estimator.latency_ms(supernet.argmax_arch())
    if calls[0] < far_under and argmax_ms > calls[0]:  # far under the aim and the argmax is slower: looser targets
        assert len(calls) > 1 and max(step.table_target_ms for step in log) > target
    if argmax_ms <= aim:  # the most probable architecture meets the aim: nothing slower is more probable
        assert arch == supernet.argmax_arch() or kept_ms >= far_under
    if calls[0] > aim:
        assert log[1].table_target_ms < target


class _FakeRuntime:
    """Prepares nothing: with ``measure`` scripted, measure_networks runs without a runtime."""

    def prepare(self, net: Any, shape: Any, name: str) -> Any:
        return type("Prepared", (), {"close": lambda self: None})()

    def describe(self) -> dict[str, Any]:
        return {"runtime": "fake"}


def _e2e_stats(median_ms: float, noisy: bool) -> Stats:
    return Stats(median_ms=median_ms, p10_ms=median_ms, p90_ms=median_ms, mean_ms=median_ms, std_ms=0.0, n=1,
                 noisy=noisy)


def test_end_to_end_measurement_attempts_keep_each_networks_quietest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempts are measured as asked, more while a network is noisy; each network keeps its lowest non-noisy
    median and the record of every attempt."""
    script = [{"a": _e2e_stats(0.9, True), "b": _e2e_stats(0.5, False)},
              {"a": _e2e_stats(1.0, False), "b": _e2e_stats(0.6, False)},
              {"a": _e2e_stats(1.1, False), "b": _e2e_stats(0.4, False)}]
    seen: list[int] = []

    def fake_measure(prepared: dict[str, Any], protocol: Any, on_done: Any = None) -> dict[str, Stats]:
        seen.append(len(seen))
        return script[len(seen) - 1]

    monkeypatch.setattr(measure_module, "measure", fake_measure)
    monkeypatch.setattr(measure_module, "get_runtime", lambda *args: _FakeRuntime())
    nets, device = {"a": nn.Identity(), "b": nn.Identity()}, load_device("cpu-onnxruntime")
    config = SearchConfig(noisy_retries=3, retry_pause_s=0.0)
    stats, runtime = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False)
    assert len(seen) == 2 and runtime == {"runtime": "fake"}  # noisy first attempt: one more
    assert stats["a"].median_ms == 1.0 and stats["b"].median_ms == 0.5  # 0.9 was noisy
    assert [a.to_dict() for a in stats["a"].attempts] == [{"median_ms": 0.9, "noisy": True, "source": "final"},
                                                          {"median_ms": 1.0, "noisy": False, "source": "final"}]
    seen.clear()
    stats, _ = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False, attempts=3)
    assert len(seen) == 3 and stats["a"].median_ms == 1.0 and stats["b"].median_ms == 0.4
    seen.clear()
    script[0]["a"] = _e2e_stats(0.9, False)
    stats, _ = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False)
    assert len(seen) == 1 and stats["a"].median_ms == 0.9  # a quiet single attempt is not repeated


def test_extra_attempts_while_over_the_target_and_closed_loop_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    """``stop_when`` adds attempts (at most ``extra_attempts`` beyond attempts and noisy retries) until it holds; an
    earlier closed-loop measurement competes with the attempts and can be the one kept."""
    medians = iter([2.0, 1.9, 1.05, 0.95, 0.9])
    seen: list[float] = []

    def fake_measure(prepared: dict[str, Any], protocol: Any, on_done: Any = None) -> dict[str, Stats]:
        seen.append(next(medians))
        return {"derived": _e2e_stats(seen[-1], False), "derived_untrained": _e2e_stats(seen[-1], False)}

    monkeypatch.setattr(measure_module, "measure", fake_measure)
    monkeypatch.setattr(measure_module, "get_runtime", lambda *args: _FakeRuntime())
    nets, device = {"derived": nn.Identity(), "derived_untrained": nn.Identity()}, load_device("cpu-onnxruntime")
    config = SearchConfig(noisy_retries=1, retry_pause_s=0.0)
    under_one = lambda chosen: chosen["derived"].median_ms <= 1.0  # noqa: E731
    stats, _ = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False, 2, stop_when=under_one,
                                               extra_attempts=2)
    assert seen == [2.0, 1.9, 1.05, 0.95] and stats["derived"].median_ms == 0.95  # stopped once under 1.0
    medians, seen[:] = iter([2.0, 1.9, 1.8, 1.7, 1.6, 1.5]), []
    stats, _ = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False, 2, stop_when=under_one,
                                               extra_attempts=1)
    assert len(seen) == 4 and stats["derived"].median_ms == 1.7  # capped: 2 + 1 noisy retry + 1 extra
    medians, seen[:] = iter([2.0, 1.9]), []
    earlier = {"derived": [_e2e_stats(0.8, False)]}
    stats, _ = measure_module.measure_networks(device, nets, (1, 3, 8, 8), config, False, 2, stop_when=under_one,
                                               extra_attempts=2, earlier=earlier,
                                               untrained_copies={"derived": "derived_untrained"})
    assert len(seen) == 2 and stats["derived"].median_ms == 0.8 and stats["derived"].source == "closed loop"
    assert [a.source for a in stats["derived"].attempts] == ["closed loop", "final", "final"]


def test_closed_loop_prior_only_counts_when_the_weights_do_not_change_the_latency() -> None:
    """The trained network against its untrained copy: alike (ratio 1.02) the closed loop's quieter measurement
    is kept; 30% slower (weight-dependent latency) it is ignored, the final attempts decide."""
    from hwnas.search.measure import latency_independent_of_weights, quietest_per_network

    def attempts(ratio: float) -> list[dict[str, Stats]]:
        return [{"derived": _e2e_stats(m * ratio, False), "derived_untrained": _e2e_stats(m, False)}
                for m in (1.0, 1.1, 1.2)]

    earlier = {"derived": [_e2e_stats(0.7, False)], "derived_untrained": []}
    copies = {"derived": "derived_untrained"}
    assert latency_independent_of_weights(attempts(1.02), copies, 0.1)
    assert not latency_independent_of_weights(attempts(1.3), copies, 0.1)
    chosen = quietest_per_network(attempts(1.02), earlier, copies, 0.1)
    assert chosen["derived"].median_ms == 0.7 and chosen["derived"].source == "closed loop"
    assert chosen["derived_untrained"].median_ms == 1.0 and len(chosen["derived_untrained"].attempts) == 3
    chosen = quietest_per_network(attempts(1.3), earlier, copies, 0.1)
    assert chosen["derived"].median_ms == pytest.approx(1.3) and chosen["derived"].source == "final"
    assert all(a.source == "final" for a in chosen["derived"].attempts)
    noisy_earlier = {"derived": [_e2e_stats(0.5, True)]}
    assert quietest_per_network(attempts(1.0), noisy_earlier, copies, 0.1)["derived"].median_ms == 1.0  # noisy loses


def test_closed_loop_drift_compares_the_loops_measurement_with_the_verdict() -> None:
    from hwnas.search.verdict import closed_loop_drift

    space = get_space("tiny", 32, 10)
    arch = space.random_arch(random.Random(0))
    other = next(a for seed in range(1, 50) if (a := space.random_arch(random.Random(seed))) != arch)
    loop = [LoopStep(1.0, 1.0, arch_id(other), measured(3.0, source="closed loop")),
            LoopStep(1.0, 1.0, arch_id(arch), measured(0.9, source="closed loop"))]
    assert closed_loop_drift(loop, arch, measured(0.45)) == pytest.approx(2.0)  # busy during the loop
    assert closed_loop_drift(loop, arch, None) is None and closed_loop_drift(loop[:1], arch, measured(1.0)) is None


def test_quietest_per_network_falls_back_to_the_lowest_median_when_every_attempt_is_noisy() -> None:
    from hwnas.search.measure import quietest_per_network

    attempts = [{"a": _e2e_stats(1.4, True), "b": _e2e_stats(0.5, False)},
                {"a": _e2e_stats(1.2, True), "b": _e2e_stats(0.4, True)}]
    chosen = quietest_per_network(attempts)
    assert chosen["a"].median_ms == 1.2 and chosen["b"].median_ms == 0.5
    assert [a.noisy for a in chosen["b"].attempts] == [False, True]


def test_retry_fields_are_validated() -> None:
    with pytest.raises(HwnasError, match="noisy_retries"):
        SearchConfig(noisy_retries=-1)
    with pytest.raises(HwnasError, match="retry_pause_s"):
        SearchConfig(retry_pause_s=-1.0)
    with pytest.raises(HwnasError, match="final_attempts"):
        SearchConfig(final_attempts=0)
    with pytest.raises(HwnasError, match="final_extra_attempts"):
        SearchConfig(final_extra_attempts=-1)


def test_cli_search_of_the_mnasnet_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    """`hwnas search --space mnasnet` end to end (a synthetic table): its blocks, absent layers and widths go through
    the supernet, the decoder, the closed loop, training and the verdict."""
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "tables"))
    write_synthetic_table(default_table_path("cpu-torch", "mnasnet", 32), "mnasnet")
    config = tmp_path / "quick.json"
    config.write_text(json.dumps({**QUICK, "space": "mnasnet"}))
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    arch = Architecture.from_dict(result["arch"])
    get_space("mnasnet", 32, 10).validate(arch)
    assert result["measured_ms"] > 0 and result["memory_mb"]["peak_activation_mb"] > 0
    assert result["estimated_ms"] == pytest.approx(_mnasnet_table_ms(arch), rel=1e-9)
    # six weight steps cannot train this supernet: the run says its choice followed latency alone
    assert "the supernet did not learn" in captured.err and "the supernet did not learn" in result["decode"]


def test_untrained_note_compares_the_last_epoch_with_chance() -> None:
    def history(*accuracies: tuple[float, float]) -> list[dict[str, Any]]:
        return [{"weight_accuracy": w, "argmax_arch_accuracy": a} for w, a in accuracies]

    assert untrained_note([], 10) is None
    note = untrained_note(history((0.9, 0.9), (0.12, 0.09)), 10)  # the last epoch counts
    assert note is not None and "accuracy 0.120" in note and "chance 0.100" in note
    assert untrained_note(history((0.1, 0.29)), 10) is None  # 0.28 = chance + 0.2 (1 - chance)
    assert untrained_note(history((0.27, 0.1)), 10) is not None
    assert untrained_note(history((0.59, 0.5)), 2) is not None  # two classes: chance 0.5, trained from 0.6
    assert untrained_note(history((0.61, 0.5)), 2) is None


def _mnasnet_table_ms(arch: Architecture) -> float:
    space = get_space("mnasnet", 32, 10)
    return TableEstimator(LatencyTable.load(default_table_path("cpu-torch", "mnasnet", 32)), space).latency_ms(arch)
