"""``hwnas bench`` and ``hwnas validate``: the agreement figures (one vocabulary, shares in percent) against
brute-force definitions, the validation's estimates against a dumb table sum, and both commands end to end on the
tiny space with ONNX Runtime."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.latency.estimator import OVERHEAD_MODES
from hwnas.latency.table import LatencyTable
from hwnas.latency.metrics import agreement
from hwnas.latency.validate import ValidateConfig, validate_table
from hwnas.runtimes.converters import to_onnx
from hwnas.spaces import get_space

FAST = {"rounds": 2, "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0}
PROTOCOL_FLAGS = [f"--protocol={k}={v}" for k, v in FAST.items()]
METRIC_KEYS = {"within5_pct", "within10_pct", "rmse_ms", "kendall", "spearman", "bias_pct", "mape", "n"}
BENCH_KEYS = {"device", "target", "median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "runs", "noisy"}
DEVICE = "cpu-onnxruntime"


# -- agreement against the definitions -----------------------------------------------------------------------------
def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _kendall_tau_b(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-b over all pairs: (concordant - discordant) / sqrt((pairs - tied in x) (pairs - tied in y))."""
    concordant = discordant = tied_x = tied_y = pairs = 0
    for (x1, y1), (x2, y2) in itertools.combinations(zip(xs, ys), 2):
        pairs += 1
        dx, dy = _sign(x1 - x2), _sign(y1 - y2)
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def _average_ranks(xs: list[float]) -> list[float]:
    """1-based ranks, tied values sharing the mean of their positions."""
    return [sum(1 + j for j, y in enumerate(sorted(xs)) if y == x) / sorted(xs).count(x) for x in xs]


def _spearman(xs: list[float], ys: list[float]) -> float:
    """Pearson's correlation of the average ranks."""
    rx, ry = _average_ranks(xs), _average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def _brute_force_metrics(estimated: list[float], measured: list[float]) -> dict[str, float]:
    """The vocabulary's figures written out; shares counted, then turned into percent."""
    n = len(measured)
    rel = [(e - m) / m for e, m in zip(estimated, measured)]
    return {
        "within5_pct": 100 * sum(abs(r) <= 0.05 for r in rel) / n,
        "within10_pct": 100 * sum(abs(r) <= 0.10 for r in rel) / n,
        "rmse_ms": math.sqrt(sum((e - m) ** 2 for e, m in zip(estimated, measured)) / n),
        "kendall": _kendall_tau_b(estimated, measured),
        "spearman": _spearman(estimated, measured),
        "bias_pct": 100 * sum(rel) / n,
        "mape": 100 * sum(abs(r) for r in rel) / n,
        "n": n,
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_agreement_matches_its_definitions(seed, ties):
    rng = random.Random(seed)
    n = rng.randint(2, 12)
    measured = [rng.uniform(0.1, 5.0) for _ in range(n)]
    estimated = [m * (1 + rng.uniform(-0.15, 0.15)) for m in measured]
    if ties:  # a coarse grid makes equal values in both series (tau-b's correction for ties)
        measured = [round(m * 2) / 2 + 0.5 for m in measured]
        estimated = [round(e * 2) / 2 + 0.5 for e in estimated]
    got, want = agreement(estimated, measured), _brute_force_metrics(estimated, measured)
    assert set(got) == METRIC_KEYS and got["n"] == n
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_agreement_edge_cases():
    exact = agreement([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert exact == pytest.approx({"within5_pct": 100.0, "within10_pct": 100.0, "rmse_ms": 0.0, "kendall": 1.0,
                                   "spearman": 1.0, "bias_pct": 0.0, "mape": 0.0, "n": 3})
    reversed_order = agreement([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])
    assert reversed_order["kendall"] == pytest.approx(-1.0)
    bands = agreement([1.04, 2.16, 3.6], [1.0, 2.0, 3.0])  # +4%, +8%, +20%: one of three within 5%, two within 10%
    assert (bands["within5_pct"], bands["within10_pct"]) == pytest.approx((100 / 3, 200 / 3))
    assert bands["bias_pct"] == pytest.approx(32 / 3) and bands["mape"] == pytest.approx(32 / 3)
    single = agreement([1.08], [1.0])  # no pair to rank: tau is undefined, the rest still holds
    assert math.isnan(single["kendall"]) and single["n"] == 1 and single["within10_pct"] == 100.0


# -- validate_table: the estimates against a dumb table sum ---------------------------------------------------------
def _stats(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A made-up table of the tiny space at 16x16 for the ONNX Runtime device (no fingerprint: no warning)."""
    space = get_space("tiny", 16)
    rng = random.Random(0)
    entries = {spec.key(): _stats(0.005 + spec.macs() / 1e8 + 0.01 * rng.random()) for spec in space.all_specs()}
    table = LatencyTable(device={"name": DEVICE}, space=space.name, resolution=space.resolution,
                         num_classes=space.num_classes, fingerprint={}, protocol={}, entries=entries,
                         overhead=_stats(0.008))
    return table.save(tmp_path_factory.mktemp("table") / f"{DEVICE}__tiny__16.json")


def _table_sum_ms(table: dict, space, arch, mode: str) -> float:
    """The table's estimate written out: each op's median (less the per-call overhead unless ``per-op``, never
    below 0), plus the overhead once in ``once`` mode; free ops (identity, zero) cost nothing."""
    overhead = table["overhead"]["median_ms"]
    specs = [*space.prefix, *(layer.spec(c) for layer, c in zip(space.layers, arch.choices)), *space.suffix]
    total = 0.0
    for spec in specs:
        if spec.is_free:
            continue
        ms = table["entries"][spec.key()]["median_ms"]
        total += ms if mode == "per-op" else max(ms - overhead, 0.0)
    return total + (overhead if mode == "once" else 0.0)


def test_validate_table_estimates_metrics_and_files(tiny_table, tmp_path):
    config = ValidateConfig(n=3, seed=1, chunk=2, progress=False, protocol_overrides=FAST)  # two chunks
    report = validate_table(tiny_table, load_device(DEVICE), tmp_path / "val", config)
    space, raw = get_space("tiny", 16), json.loads(tiny_table.read_text())
    rng = random.Random(1)
    sampled = [space.random_arch(rng) for _ in range(3)]  # the seed's sample, in order
    assert [row["arch"] for row in report["rows"]] == [arch.to_dict() for arch in sampled]
    for row, arch in zip(report["rows"], sampled):
        assert math.isfinite(row["measured_ms"]) and row["measured_ms"] > 0
        for mode in OVERHEAD_MODES:
            assert row[f"estimated_ms_{mode}"] == pytest.approx(_table_sum_ms(raw, space, arch, mode), rel=1e-12)
    measured = [row["measured_ms"] for row in report["rows"]]
    assert set(report["metrics"]) == set(OVERHEAD_MODES)
    for mode, metrics in report["metrics"].items():  # against the definitions, shares in percent
        want = _brute_force_metrics([row[f"estimated_ms_{mode}"] for row in report["rows"]], measured)
        assert set(metrics) == METRIC_KEYS
        assert metrics == pytest.approx(want, rel=1e-9, abs=1e-12), mode
    assert (report["device"], report["space"], report["resolution"]) == (DEVICE, "tiny", 16)
    assert report["overhead_ms"] == 0.008 and report["table"] == str(tiny_table)
    assert json.loads((tmp_path / "val" / "validation.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "val" / "validation.png").stat().st_size > 0


# -- the commands end to end ----------------------------------------------------------------------------------------
def test_validate_command_json(tiny_table, tmp_path, capsys):
    out = tmp_path / "val"
    argv = ["validate", "--table", str(tiny_table), "--n", "2", "--out", str(out), "--quiet", *PROTOCOL_FLAGS]
    assert main([*argv, "--json"]) == 0  # the device is the table's
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"metrics", "out"} and printed["out"] == str(out)
    assert set(printed["metrics"]) == set(OVERHEAD_MODES)
    assert all(set(m) == METRIC_KEYS and m["n"] == 2 for m in printed["metrics"].values())
    saved = json.loads((out / "validation.json").read_text())
    assert printed["metrics"] == saved["metrics"] and len(saved["rows"]) == 2


def test_validate_command_refuses_a_missing_table(tmp_path, capsys):
    assert main(["validate", "--table", str(tmp_path / "nope.json"), "--out", str(tmp_path / "v"), "--json"]) == 2
    captured = capsys.readouterr()
    assert "nope.json" in json.loads(captured.out)["error"] and "Traceback" not in captured.err
    assert not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def tiny_targets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One architecture of the tiny space at 16x16, as JSON and as the same network exported to ONNX."""
    folder = tmp_path_factory.mktemp("targets")
    space = get_space("tiny", 16)
    arch = space.random_arch(random.Random(0))
    onnx = to_onnx(space.build(arch).eval(), space.input_shape, folder / "tiny.onnx")
    return arch.save(folder / "tiny.json"), onnx


@pytest.mark.parametrize("kind", ["json", "onnx"])
def test_bench_command_json(tiny_targets, kind, capsys):
    target = str(tiny_targets[0] if kind == "json" else tiny_targets[1])
    assert main(["bench", "--device", DEVICE, target, "--json", *PROTOCOL_FLAGS]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == BENCH_KEYS and (printed["device"], printed["target"]) == (DEVICE, target)
    assert 0 < printed["p10_ms"] <= printed["median_ms"] <= printed["p90_ms"]
    assert printed["mean_ms"] > 0 and printed["std_ms"] >= 0 and printed["runs"] >= FAST["min_runs"]
    assert isinstance(printed["noisy"], bool)


def test_bench_command_text(tiny_targets, capsys):
    assert main(["bench", "--device", DEVICE, str(tiny_targets[0]), *PROTOCOL_FLAGS]) == 0
    text = capsys.readouterr().out
    assert "median_ms" in text and DEVICE in text


@pytest.mark.parametrize("target, needle", [("missing.onnx", "no such model file"),
                                            ("model.pb", "expected an architecture .json"),
                                            ("torchvision:no_such_net", "torchvision")])
def test_bench_command_refuses_bad_targets(tmp_path, target, needle, capsys):
    path = target if target.startswith("torchvision:") else str(tmp_path / target)
    assert main(["bench", "--device", DEVICE, path, "--json"]) == 2
    captured = capsys.readouterr()
    assert needle in json.loads(captured.out)["error"] and "Traceback" not in captured.err
