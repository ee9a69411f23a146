"""Latency tables, the table estimator, the resumable profiler and the table CLI verbs."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.profile import ProfileConfig, profile_device
from hwnas.latency.table import (LatencyTable, TableEntry, default_table_path, table_name, tables_dir,
                                 user_table_path, write_json_atomic)
from hwnas.runtimes.protocol import Stats
from hwnas.spaces import get_space

FAST = {"rounds": 2, "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0}


def synthetic_table(space, seed: int = 0, overhead_ms: float = 0.01) -> LatencyTable:
    """A table with made-up but deterministic medians for every op of ``space``."""
    rng = random.Random(seed)
    entries = {}
    for spec in space.all_specs():
        ms = 0.02 + spec.macs() / 2e7 + rng.random() * 0.01
        entries[spec.key()] = {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}
    stats = {"median_ms": overhead_ms, "p10_ms": overhead_ms, "p90_ms": overhead_ms, "mean_ms": overhead_ms,
             "std_ms": 0.0, "n": 1}
    return LatencyTable(device={"name": "synthetic"}, space=space.name, resolution=space.resolution,
                        num_classes=space.num_classes, fingerprint={}, protocol={}, entries=entries, overhead=stats)


def test_table_round_trip_and_atomic_write(tmp_path):
    space = get_space("tiny")
    table = synthetic_table(space)
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path)
    assert loaded.entries == table.entries and loaded.overhead == table.overhead
    before = path.read_text()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})  # fails half-way through serialising
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left behind


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": "other"}', "field 'schema'"),
    ('{"schema": "hwnas.latency_table/1"}', "missing field 'device'"),
])
def test_corrupt_tables_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(HwnasError) as err:
        LatencyTable.load(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_entry_names_the_key_and_field(tmp_path):
    table = synthetic_table(get_space("tiny"))
    key = next(iter(table.entries))
    table.entries[key]["median_ms"] = "fast"
    path = tmp_path / "t.json"
    write_json_atomic(path, table.to_dict())
    with pytest.raises(HwnasError, match=f"entry '{key}': field 'median_ms'"):
        LatencyTable.load(path)


@pytest.mark.parametrize("overhead", ["once", "per-op", "none"])
def test_one_hot_expected_latency_equals_estimate(overhead):
    space = get_space("proxyless", 64)
    estimator = TableEstimator(synthetic_table(space), space, overhead)
    rng = random.Random(3)
    for _ in range(5):
        arch = space.random_arch(rng)
        probs = [torch.nn.functional.one_hot(torch.tensor(layer.names.index(choice)), len(layer.names)).double()
                 for layer, choice in zip(space.layers, arch.choices)]
        expected = estimator.expected_latency_ms(probs).item()
        assert expected == pytest.approx(estimator.latency_ms(arch), rel=1e-12)
        assert sum(t.ms for t in estimator.terms(arch)) == pytest.approx(estimator.latency_ms(arch), rel=1e-12)


def test_expected_latency_is_a_brute_force_mean_and_differentiable():
    space = get_space("tiny")
    estimator = TableEstimator(synthetic_table(space), space)
    logits = [torch.randn(len(layer.names), dtype=torch.float64, requires_grad=True) for layer in space.layers]
    probs = [torch.softmax(a, 0) for a in logits]
    expected = estimator.expected_latency_ms(probs)
    import itertools

    brute = 0.0
    for combo in itertools.product(*[range(len(layer.names)) for layer in space.layers]):
        weight = 1.0
        for p, i in zip(probs, combo):
            weight *= p[i].item()
        arch = space.arch([space.layers[l].names[i] for l, i in enumerate(combo)])
        brute += weight * estimator.latency_ms(arch)
    assert expected.item() == pytest.approx(brute, rel=1e-9)
    expected.backward()
    assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in logits)


def test_overhead_modes_differ_by_the_overhead():
    space = get_space("tiny")
    table = synthetic_table(space, overhead_ms=0.005)
    arch = space.random_arch(random.Random(0))
    ops = len([s for s in space.arch_specs(arch) if not s.is_free])
    once = TableEstimator(table, space, "once").latency_ms(arch)
    per_op = TableEstimator(table, space, "per-op").latency_ms(arch)
    assert per_op - once == pytest.approx(0.005 * (ops - 1))


def test_a_malformed_op_key_gives_one_line_naming_the_file_and_key(tmp_path):
    """Every key of a table an estimator reads parses back to its op (spec_from_key), else one line says which."""
    space = get_space("tiny")
    table = synthetic_table(space)
    table.entries["conv-in:32x32x3-out:32x32x8-k:3"] = table.entries[space.prefix[0].key()]
    path = table.save(tmp_path / "t.json")
    with pytest.raises(HwnasError) as err:
        TableEstimator(LatencyTable.load(path), space)
    message = str(err.value)
    assert message.startswith(f"{path}: entry 'conv-in:32x32x3-out:32x32x8-k:3': not a canonical op key")
    assert "\n" not in message


def test_shipped_table_entries_are_stats_with_their_extra_fields():
    """One Stats shape: every entry of every shipped table is a TableEntry (Stats plus measured_at and
    reference_ms) whose JSON is exactly the entry on disk, and every key is a canonical op key."""
    paths = sorted(tables_dir().glob("*.json"))
    assert paths
    for path in paths:
        table = LatencyTable.load(path)
        table.check_keys()
        for key, entry in table.entries.items():
            parsed = TableEntry.from_dict(entry, key)
            assert parsed.to_dict() == entry and list(parsed.to_dict()) == list(entry)
            assert parsed.stats.median_ms == entry["median_ms"]


def test_a_table_entry_is_built_from_stats_and_refuses_what_stats_refuse():
    stats = Stats(1.0, 0.9, 1.2, 1.05, 0.1, 60, [1.0, 1.1], noisy=False, remeasured=0)
    entry = TableEntry(stats, measured_at="2026-01-01T00:00:00+00:00")
    assert entry.to_dict() == {**stats.to_dict(), "measured_at": "2026-01-01T00:00:00+00:00"}
    assert TableEntry.from_dict({**entry.to_dict(), "reference_ms": 2.0}, "e").reference_ms == 2.0
    for bad, field in [({"median_ms": float("nan")}, "median_ms"), ({"std_ms": -1.0}, "std_ms"),
                       ({"reference_ms": 0.0}, "reference_ms"), ({"measured_at": 3}, "measured_at")]:
        with pytest.raises(HwnasError, match=f"t.json: entry 'k': field '{field}': expected"):
            TableEntry.from_dict({**entry.to_dict(), **bad}, "t.json: entry 'k'")


def test_overridden_threads_are_part_of_the_table_name():
    """--threads N other than the device profile's own gives its own table (suffix __tN); the profile's own
    threads keep the shipped name."""
    device = load_device("cpu-onnxruntime")
    assert table_name(device, "proxyless", 32) == "cpu-onnxruntime__proxyless__32.json"
    assert default_table_path(device, "proxyless", 32) == default_table_path("cpu-onnxruntime", "proxyless", 32)
    assert default_table_path(device, "proxyless", 32).is_file()  # the shipped table, found by the profile
    four = dataclasses.replace(device, threads=device.threads + 3)
    assert four.threads_overridden and not device.threads_overridden
    assert user_table_path(four, "proxyless", 32).name == f"cpu-onnxruntime__proxyless__32__t{device.threads + 3}.json"
    assert not dataclasses.replace(four, threads=device.threads).threads_overridden


def test_missing_key_says_how_to_profile(tmp_path):
    space = get_space("tiny")
    table = synthetic_table(space)
    table.entries.pop(space.suffix[0].key())
    with pytest.raises(HwnasError, match="hwnas profile --device synthetic --space tiny"):
        TableEstimator(table, space)


def test_profile_measures_every_op_then_reuses(tmp_path):
    device, space = load_device("cpu-torch"), get_space("tiny", 16)
    out = tmp_path / "table.json"
    config = ProfileConfig(protocol_overrides=FAST, progress=False)
    first = profile_device(device, space, out, config)
    measurable = [s for s in space.all_specs() if not s.is_free]
    assert (first.entries, first.measured, first.reused) == (len(measurable), len(measurable), 0)
    table = LatencyTable.load(out)
    assert set(table.entries) == {s.key() for s in measurable}
    assert table.overhead is not None and table.overhead["median_ms"] > 0
    assert table.fingerprint["machine"] and table.fingerprint["runtime"]["runtime"] == "torch"
    for entry in table.entries.values():
        assert entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"] and entry["n"] >= 5 * 2
    second = profile_device(device, space, out, config)
    assert (second.measured, second.reused) == (0, len(measurable))


def test_profile_refuses_a_table_from_another_machine(tmp_path):
    device, space = load_device("cpu-torch"), get_space("tiny", 16)
    out = tmp_path / "table.json"
    profile_device(device, space, out, ProfileConfig(protocol_overrides=FAST, progress=False))
    data = json.loads(out.read_text())
    data["fingerprint"]["machine"]["cpu_model"] = "Some Other CPU"
    data["entries"].pop(next(iter(data["entries"])))
    out.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="refusing to measure into a table from another machine"):
        profile_device(device, space, out, ProfileConfig(protocol_overrides=FAST, progress=False))


def _entries(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["entries"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def test_killed_profile_resumes_without_measuring_twice(tmp_path):
    """kill -9 a profile mid-run; the resumed table has every row, and the rows saved before the kill are
    kept as they were (not measured again)."""
    out = tmp_path / "table.json"
    cmd = [sys.executable, "-m", "hwnas.cli", "profile", "--device", "cpu-torch", "--space", "tiny",
           "--resolution", "32", "--out", str(out), "--chunk", "1", "--quiet",
           "--protocol", "rounds=2", "--protocol", "min_time_s=0.15", "--protocol", "warmup_s=0.0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_entries(out)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _entries(out)
    total = len([s for s in get_space("tiny", 32).all_specs() if not s.is_free])
    assert 3 <= len(before) < total, "the kill should land mid-run"
    result = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(result.stdout)
    after = _entries(out)
    assert summary["entries"] == total == len(after)
    assert summary["reused"] == len(before) and summary["measured"] == total - len(before)
    for key, entry in before.items():
        assert after[key] == entry  # same statistics and timestamp: not measured twice


def test_cli_lists_and_estimates(tmp_path, capsys):
    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    names = {d["name"] for d in devices}
    assert {"cpu-torch", "cpu-onnxruntime", "cpu-litert", "cuda-torch", "cuda-tensorrt", "android-litert"} <= names
    assert all(d["available"] or d["unavailable_reason"] for d in devices)
    assert main(["spaces", "--json"]) == 0
    assert {s["name"] for s in json.loads(capsys.readouterr().out)["spaces"]} >= {"proxyless", "fbnet", "tiny"}
    assert main(["sample", "--space", "tiny", "--n", "3", "--seed", "1", "--out", str(tmp_path / "a"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 3
    table = synthetic_table(get_space("tiny")).save(tmp_path / "t.json")
    assert main(["estimate", "--table", str(table), files[0], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["latency_ms"] == pytest.approx(sum(t["ms"] for t in result["terms"]))


@pytest.mark.parametrize("argv, message", [
    (["profile", "--device", "no-such-device", "--space", "tiny"], "no-such-device"),
    (["profile", "--device", "cpu-torch", "--space", "no-such-space"], "unknown search space"),
    (["estimate", "--table", "/nonexistent.json", "/nonexistent-arch.json"], "no such latency table"),
    (["profile", "--device", "cuda-torch", "--space", "tiny"], "CUDA"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    if "cuda" in argv[2] and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    assert main(argv + ["--json"]) == 2
    captured = capsys.readouterr()
    assert message in json.loads(captured.out)["error"]
    assert len(captured.err.strip().splitlines()) == 1


def test_reference_pool_takes_turns_and_a_single_reference_is_not_wrapped():
    from hwnas.latency.reference import ReferencePool, prepare_reference
    from hwnas.runtimes.base import PreparedModel

    class Copy(PreparedModel):
        def __init__(self, ms: float) -> None:
            self.ms, self.closed = ms, False

        def run(self) -> None:
            pass

        def time_runs(self, n: int) -> list[float]:
            return [self.ms] * n

        def close(self) -> None:
            self.closed = True

    copies = [Copy(1.0), Copy(2.0), Copy(3.0)]
    pool = ReferencePool(copies)
    assert [pool.time_runs(2) for _ in range(4)] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [1.0, 1.0]]
    pool.close()
    assert all(c.closed for c in copies)

    class Runtime:
        def prepare(self, module, shape, name):
            return Copy(float(len(name)))

    single = prepare_reference(Runtime(), torch.nn.Identity(), (1, 1))
    assert isinstance(single, Copy)
    assert isinstance(prepare_reference(Runtime(), torch.nn.Identity(), (1, 1), instances=3), ReferencePool)
