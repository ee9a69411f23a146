"""The classifier is an op like the others: a table holds every head profiled into it, `profile` and the search
measure a missing head into an existing table, a user's table never makes a lookup fail where the shipped one
answers, and every hint names a command that measures what is missing. Also: `sample` and `measure` draw distinct
architectures and say so when --n is beyond the space."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.lookup import covering_table, table_for_search
from hwnas.latency.profile import ProfileConfig, profile_device
from hwnas.latency.sets import MeasureConfig, _capped, sample_stratified
from hwnas.latency.table import LatencyTable, user_table_path
from hwnas.spaces import get_space

RES = 16  # the tiny space at 16x16: a table of a dozen ops, profiled in seconds
FAST_DEVICE = """name = "fast-torch"
backend = "torch"
description = "PyTorch CPU with a quick protocol, for tests"
[protocol]
rounds = 1
warmup_runs = 1
warmup_s = 0.0
min_runs = 3
min_time_s = 0.0
"""


@pytest.fixture
def device(tmp_path: Path):
    path = tmp_path / "fast-torch.toml"
    path.write_text(FAST_DEVICE)
    return load_device(str(path))


def _stats(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}


def _synthetic(path: Path, num_classes: int, fingerprint: dict | None = None, device: str = "cpu-torch") -> Path:
    space = get_space("tiny", RES, num_classes)
    entries = {spec.key(): _stats(0.01 + spec.macs() / 1e8) for spec in space.all_specs() if not spec.is_free}
    table = LatencyTable(device={"name": device}, space="tiny", resolution=RES, num_classes=num_classes,
                         fingerprint=fingerprint or {}, protocol={}, entries=entries, overhead=_stats(0.01))
    return table.save(path)


def _head_key(num_classes: int) -> str:
    return get_space("tiny", RES, num_classes).suffix[-1].key()


def test_profile_into_a_table_measures_just_the_missing_head(device, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    first = profile_device(device, get_space("tiny", RES, 10), out, ProfileConfig(progress=False))
    second = profile_device(device, get_space("tiny", RES, 7), out, ProfileConfig(progress=False))
    table = LatencyTable.load(out)
    assert (second.measured, second.reused, second.entries) == (1, first.entries - 1, first.entries + 1)
    assert table.heads == [7, 10] and table.num_classes == 10  # informational: the head it was started for
    for classes in (7, 10):  # one table answers for both heads
        space = get_space("tiny", RES, classes)
        assert TableEstimator(table, space).latency_ms(space.random_arch(random.Random(0))) > 0


def test_search_profiles_the_missing_head_into_the_users_table(device, capsys: pytest.CaptureFixture) -> None:
    path = user_table_path(device, "tiny", RES)
    profile_device(device, get_space("tiny", RES, 1000), None, ProfileConfig(progress=False))  # profile's default
    table = table_for_search(device, get_space("tiny", RES, 10))  # the digits' head, as `hwnas search` has it
    assert table.path == path and table.heads == [10, 1000]
    assert "profiling them now" in capsys.readouterr().err


def test_hint_names_the_head_and_measures_it(device, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    profile_device(device, get_space("tiny", RES, 10), out, ProfileConfig(progress=False))
    space = get_space("tiny", RES, 7)
    with pytest.raises(HwnasError) as info:
        TableEstimator(LatencyTable.load(out), space)
    message = str(info.value)
    assert f"hwnas profile --device fast-torch --space tiny --resolution {RES} --num-classes 7 --out {out}" in message
    assert _head_key(7) in message and "\n" not in message
    # the command as the hint names it measures the head: afterwards the estimator answers
    assert main(["profile", "--device", str(device.path), "--space", "tiny", "--resolution", str(RES),
                 "--num-classes", "7", "--out", str(out), "--quiet", "--json"]) == 0
    TableEstimator(LatencyTable.load(out), space)


def test_a_users_table_without_the_head_never_hides_the_shipped_one(tmp_path: Path, monkeypatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    shipped = tmp_path / "shipped"
    monkeypatch.setenv("HWNAS_TABLES", str(shipped))
    _synthetic(shipped / f"cpu-torch__tiny__{RES}.json", 10)
    foreign = {"machine": {"cpu_model": "Some Other CPU"}}  # cannot be measured into on this machine
    user = _synthetic(user_table_path("cpu-torch", "tiny", RES), 1000, foreign)
    space = get_space("tiny", RES, 10)
    assert covering_table("cpu-torch", space).path == shipped / f"cpu-torch__tiny__{RES}.json"
    note = capsys.readouterr().err
    assert str(user) in note and "--num-classes 10" in note and len(note.strip().splitlines()) == 1
    table = table_for_search(load_device("cpu-torch"), space)
    assert table.path == shipped / f"cpu-torch__tiny__{RES}.json" and "another machine" in capsys.readouterr().err
    arch = space.random_arch(random.Random(0)).save(tmp_path / "a.json")
    assert main(["estimate", "--device", "cpu-torch", str(arch), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0


def test_estimate_without_a_covering_table_names_a_command_that_measures_it(tmp_path: Path, monkeypatch,
                                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "none"))
    _synthetic(user_table_path("cpu-torch", "tiny", RES), 1000)
    arch = get_space("tiny", RES, 10).random_arch(random.Random(0))
    path = arch.save(tmp_path / "a.json")
    assert main(["estimate", "--device", "cpu-torch", str(path), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert f"`hwnas profile --device cpu-torch --space tiny --resolution {RES} --num-classes 10`" in error


def test_old_tables_load_and_merge_by_key_across_heads(tmp_path: Path) -> None:
    path = _synthetic(tmp_path / "t.json", 10)
    other = LatencyTable.load(_synthetic(tmp_path / "u.json", 7))
    saved_meanwhile = LatencyTable.load(path)
    other.path = path
    other.save()  # same device, space and resolution: the 10-class head saved before is merged in, not replaced
    assert LatencyTable.load(path).heads == [7, 10] and saved_meanwhile.heads == [10]


def test_sample_refuses_more_than_the_space_has_and_draws_distinct(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "archs"
    assert main(["sample", "--space", "tiny", "--n", "145", "--out", str(out), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "144 distinct architectures" in error and "--n 144" in error and not list(out.glob("*.json"))
    for command in (["sample", "--space", "proxyless", "--out", str(out)],  # 2e17 distinct: --n 1e9 is a typo
                    ["measure", "--device", "cpu-onnxruntime", "--space", "proxyless", "--out", str(out / "s.json")],
                    ["validate", "--table", "cpu-onnxruntime__proxyless__32.json", "--out", str(out)]):
        assert main(command + ["--n", "1000000000", "--json"]) == 2
        assert "expected an integer of at most" in json.loads(capsys.readouterr().out)["error"]
    assert not out.exists()
    assert main(["sample", "--space", "tiny", "--n", "144", "--seed", "3", "--out", str(out), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len({tuple(json.loads(Path(f).read_text())["choices"]) for f in files}) == 144


def test_measure_caps_n_at_the_space_with_a_note(capsys: pytest.CaptureFixture) -> None:
    space = get_space("tiny", 32)
    config = _capped(MeasureConfig(n=10**9), space)
    assert config.n == 144 and "has only 144 distinct architectures" in capsys.readouterr().err
    for n in (144, 140):  # the whole space, or nearly: n distinct networks each time, so a resume finds --n again
        plan = sample_stratified(space, n, seed=0)
        assert len({a.choices for a in plan}) == n
