"""The error contract and never losing work: one line on stderr, ``{"error": ...}`` with --json, exit 2; outputs
checked before work starts; concurrent profiles merge; strict JSON everywhere."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.export.source import load_source
from hwnas.latency.profile import ProfileConfig, profile_device
from hwnas.io import write_json_atomic
from hwnas.latency.table import LatencyTable
from hwnas.search.run import load_estimator
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, get_space

FAST = {"rounds": 2, "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0}
READ_ONLY = Path("/proc/hwnas-no-such-folder/out")  # not creatable, not even by root


def _stats(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}


def _table(path: Path, space_name: str = "tiny", resolution: int = 32, fingerprint: dict | None = None) -> Path:
    space = get_space(space_name, resolution)
    entries = {spec.key(): _stats(0.01 + spec.macs() / 1e8) for spec in space.all_specs()}
    table = LatencyTable(device={"name": "cpu-torch"}, space=space.name, resolution=space.resolution,
                         num_classes=space.num_classes, fingerprint=fingerprint or {}, protocol={}, entries=entries,
                         overhead=_stats(0.01))
    return table.save(path)


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("hwnas: error: ")
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in error, error
    return error


# -- outputs checked before work ----------------------------------------------------------------------------------
def _commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    arch = get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(tmp_path / "arch.json")
    table = _table(tmp_path / "table.json")
    return {
        "profile": ["profile", "--device", "cpu-torch", "--space", "tiny", "--resolution", "32", "--out", str(out)],
        "sample": ["sample", "--space", "tiny", "--n", "2", "--out", str(out)],
        "export": ["export", str(arch), "--format", "onnx", "--out", str(out)],
        "validate": ["validate", "--table", str(table), "--device", "cpu-torch", "--n", "2", "--out", str(out)],
        "search": ["search", "--device", "cpu-torch", "--space", "tiny", "--out", str(out)],
        "measure": ["measure", "--device", "cpu-torch", "--space", "tiny", "--resolution", "32", "--n", "2",
                    "--out", str(out)],
        "predictor fit": ["predictor", "fit", "--space", "tiny", "--resolution", "32", "--table", str(table),
                          "--out", str(out)],
    }


FILE_OUTS = ("profile", "measure", "predictor fit")


def no_work(monkeypatch):
    """Every way a command's work starts (a forward pass, a network built, an architecture written, a predictor
    fitted) fails the test: a refusal must come before any of them, whatever the machine's speed."""
    import torch

    from hwnas.latency.predictors import fit
    from hwnas.spaces.base import SearchSpace

    def started(*args, **kwargs):
        raise AssertionError("the work started before the check")

    for owner, name in ((torch.nn.Module, "__call__"), (SearchSpace, "build"), (Architecture, "save"),
                        (fit, "build_predictor")):
        monkeypatch.setattr(owner, name, started)


@pytest.mark.parametrize("command", ["profile", "sample", "export", "validate", "search", "measure", "predictor fit"])
def test_out_that_cannot_be_written_is_one_line_before_any_work(command, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    blocked = tmp_path if command in FILE_OUTS else existing  # a folder where a file is expected, and vice versa
    commands = [_commands(tmp_path, out)[command] for out in (blocked, existing / "below", READ_ONLY)]
    no_work(monkeypatch)  # after the fixtures' table and architecture are written
    for out, argv in zip((blocked, existing / "below", READ_ONLY), commands):
        assert main(argv + ["--json"]) == 2
        _one_line_error(capsys, "--out", str(out))
    assert existing.read_text() == "keep me"


def test_a_folder_out_is_not_created_by_the_check(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.json"), "--out", str(tmp_path / "new" / "out"), "--json"]) == 2
    _one_line_error(capsys, "missing.json")
    assert not (tmp_path / "new").exists()


# -- concurrent profiles, table identity, no empty table -----------------------------------------------------------
_HALF_PROFILE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from hwnas.devices import load_device
    from hwnas.latency.profile import ProfileConfig, profile_device
    from hwnas.spaces import get_space

    half, out = int(sys.argv[1]), Path(sys.argv[2])
    space = get_space("tiny", 32)
    specs = [s for s in space.all_specs() if not s.is_free]
    mine = [s for i, s in enumerate(specs) if i % 2 == half] + [s for s in space.all_specs() if s.is_free]
    space.all_specs = lambda: mine  # this process measures every other op: the two halves are disjoint
    protocol = {"rounds": 2, "warmup_runs": 1, "warmup_s": 0.0, "min_runs": 3, "min_time_s": 0.0}
    profile_device(load_device("cpu-torch"), space, out, ProfileConfig(chunk=1, protocol_overrides=protocol,
                                                                       progress=False))
""")


def test_concurrent_profiles_of_one_table_lose_no_entry(tmp_path):
    """Two real processes measure disjoint halves of a space into one table at the same time; every save merges
    what the other saved under the table's lock, so the table ends with both halves."""
    script, out = tmp_path / "half.py", tmp_path / "table.json"
    script.write_text(_HALF_PROFILE)
    procs = [subprocess.Popen([sys.executable, str(script), str(half), str(out)], stderr=subprocess.PIPE, text=True)
             for half in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    specs = [s for s in get_space("tiny", 32).all_specs() if not s.is_free]
    assert set(LatencyTable.load(out).entries) == {s.key() for s in specs}


def test_save_merges_entries_saved_meanwhile_and_keeps_its_own(tmp_path):
    path = _table(tmp_path / "t.json")
    first, second = LatencyTable.load(path), LatencyTable.load(path)
    keys = sorted(first.entries)
    del first.entries[keys[0]], second.entries[keys[1]]
    second.entries[keys[2]] = _stats(9.0)
    second.save()
    first.entries[keys[2]] = _stats(7.0)
    first.save()
    merged = LatencyTable.load(path).entries
    assert set(merged) == set(keys) and merged[keys[2]]["median_ms"] == 7.0


def test_profile_whose_first_op_fails_leaves_no_table(tmp_path, monkeypatch):
    import hwnas.latency.profile as profile

    def fail(spec):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(profile, "build_measured_op", fail)
    out = tmp_path / "t.json"
    with pytest.raises(RuntimeError):
        profile_device(load_device("cpu-torch"), get_space("tiny", 16), out,
                       ProfileConfig(protocol_overrides=FAST, progress=False))
    assert not out.exists()


# -- argparse and numbers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["export", "x.json", "--out", "o", "--precision", "fp64"], "--precision"),
    (["sample", "--space", "tiny", "--n", "two", "--out", "o"], "--n"),
    (["sample", "--space", "tiny", "--n", "-1", "--out", "o"], "--n"),
    (["validate", "--table", "t.json", "--n", "0", "--out", "o"], "--n"),
    (["profile", "--device", "cpu-torch", "--space", "tiny", "--chunk", "-5"], "--chunk"),
    (["measure", "--device", "cpu-torch", "--space", "tiny", "--chunk", "-5", "--out", "s.json"], "--chunk"),
    (["bench", "x.json"], "--device"),
    (["predictor", "fit", "--space", "tiny"], "--out"),
])
def test_argparse_errors_follow_the_contract_with_json(argv, needle, capsys):
    assert main(argv + ["--json"]) == 2
    _one_line_error(capsys, needle)


def test_argparse_errors_without_json_keep_the_usage(capsys):
    assert main(["sample", "--space", "tiny", "--n", "0", "--out", "o"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: hwnas sample")
    assert captured.err.strip().splitlines()[-1].startswith("hwnas: error: hwnas sample: argument --n")


def test_protocol_errors_name_the_flag(tmp_path, capsys):
    arch = get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(tmp_path / "arch.json")
    assert main(["bench", "--device", "cpu-torch", "--protocol", "rounds=-1", str(arch), "--json"]) == 2
    error = _one_line_error(capsys, "--protocol", "rounds")
    assert "toml" not in error


@pytest.mark.parametrize("edit, needle", [
    (lambda d, key: d["entries"][key].update(median_ms=math.nan), "'median_ms'"),
    (lambda d, key: d["entries"][key].update(p90_ms=math.inf), "'p90_ms'"),
    (lambda d, key: d["overhead"].update(median_ms=-30.0), "'overhead'"),
])
def test_non_finite_or_negative_statistics_are_refused_on_load(edit, needle, tmp_path):
    path = _table(tmp_path / "t.json")
    data = json.loads(path.read_text())
    edit(data, next(iter(data["entries"])))
    path.write_text(json.dumps(data))  # Python writes NaN and Infinity, as a careless tool would
    with pytest.raises(HwnasError, match=needle) as info:
        LatencyTable.load(path)
    assert "finite non-negative" in str(info.value)


def test_json_written_and_printed_is_strict(tmp_path, capsys):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {"a": None, "b": [None, 1.5],
                                                                        "c": {"d": None}}
    table = _table(tmp_path / "t.json")
    arch = get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(tmp_path / "arch.json")
    assert main(["estimate", "--table", str(table), str(arch), "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=pytest.fail)


def test_architecture_save_is_atomic(tmp_path, monkeypatch):
    """Architecture.save goes through hwnas.io: a write that fails leaves the old file whole and no temporary."""
    import os

    space = get_space("tiny", 32)
    first, second = (space.random_arch(__import__("random").Random(seed)) for seed in (0, 1))
    path = first.save(tmp_path / "arch.json")
    assert Architecture.load(path) == first

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        second.save(path)
    monkeypatch.undo()
    assert Architecture.load(path) == first and [p.name for p in tmp_path.iterdir()] == ["arch.json"]


@pytest.mark.parametrize("data, needle", [
    ({"space": "tiny", "resolution": 32}, "arch.json: missing field 'choices'"),
    ({"space": "tiny", "resolution": "32", "choices": []}, "arch.json: field 'resolution': expected int, got '32'"),
    ({"space": "tiny", "resolution": 32, "choices": [], "depth": 3}, "arch.json: unknown field 'depth' (expected one"),
])
def test_architecture_files_use_the_one_error_wording(data, needle, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HwnasError) as info:
        Architecture.load(path)
    assert needle in str(info.value) and str(path) in str(info.value)


# -- foreign tables -----------------------------------------------------------------------------------------------
def test_foreign_table_is_one_warning_line_in_estimate_and_search(tmp_path, capsys, recwarn):
    table = _table(tmp_path / "t.json", fingerprint={"machine": {"cpu_model": "Some Other CPU"}})
    arch = get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(tmp_path / "arch.json")
    assert main(["estimate", "--table", str(table), str(arch), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwnas: warning: ") and "'Some Other CPU' ->" in err[0]
    load_estimator(load_device("cpu-torch"), get_space("tiny", 32), SearchConfig(table=str(table)), False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwnas: warning: ") and "machine.cpu_model" in err[0]
    assert not [w for w in recwarn if "another machine" in str(w.message)]


# -- export refusals ----------------------------------------------------------------------------------------------
def test_export_of_a_run_without_weights_needs_random_weights(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(run / "arch.json")
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--json"]) == 2
    _one_line_error(capsys, "no model.pt", "--random-weights")
    assert not (tmp_path / "out").exists()
    source = load_source(run, random_weights=True)
    assert source.kind == "run" and not source.trained


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed here: an engine can be built")
def test_export_tensorrt_without_an_engine_exits_3(tmp_path, capsys):
    arch = get_space("tiny", 32).random_arch(__import__("random").Random(0)).save(tmp_path / "arch.json")
    out = tmp_path / "out"
    assert main(["export", str(arch), "--format", "tensorrt", "--out", str(out), "--protocol", "rounds=1",
                 "--json"]) == 3
    error = json.loads(capsys.readouterr().out)["error"]
    assert error.startswith("no TensorRT engine built") and "--allow-missing" in error
    assert (out / "model.onnx").is_file() and (out / "trtexec.sh").is_file()  # the work done is kept


# -- memory ------------------------------------------------------------------------------------------------------
def test_a_resolution_too_large_for_memory_is_refused_before_building(capsys, monkeypatch):
    from hwnas.spaces.memory import check_fits_memory, least_activation_bytes

    space = get_space("tiny", 32)
    check_fits_memory(space, available=least_activation_bytes(space))
    with pytest.raises(HwnasError, match="smaller --resolution"):
        check_fits_memory(space, available=least_activation_bytes(space) - 1)
    no_work(monkeypatch)
    for command in (["profile", "--device", "cpu-torch", "--space", "proxyless"], ["search", "--space", "proxyless"]):
        assert main(command + ["--resolution", "100000", "--json"]) == 2
        _one_line_error(capsys, "resolution 100000", "GiB")


# -- search output ------------------------------------------------------------------------------------------------
def test_search_text_gives_the_spread_of_attempts_and_how_the_verdict_was_reached():
    import numpy as np

    from hwnas.cli import _quietest, _verdict_text, attempt_spread

    medians = [0.77, 2.27, 1.11, 1.37, 1.01, 0.94, 1.98]  # one run's attempts (issue 11)
    attempts = [{"median_ms": m, "noisy": False, "source": "final"} for m in medians]
    spread = attempt_spread(attempts)
    assert [spread["median_ms"], spread["p10_ms"], spread["p90_ms"]] == pytest.approx(
        np.percentile(medians, [50, 10, 90]))
    result = {"measured_ms": 0.77, "measured": {"median_ms": 0.77, "attempts": attempts, "source": "final"}}
    assert _quietest(result) == "; quietest of 7; attempts median 1.11, p10 0.872, p90 2.096 ms"
    assert "lowest median of 7 attempts" in _verdict_text(result)


def test_progress_bars_only_to_a_terminal(capsys):
    import argparse

    from hwnas.cli import _progress

    assert _progress(argparse.Namespace(quiet=False)) is False  # pytest's captured stderr is not a terminal
    assert _progress(argparse.Namespace(quiet=True)) is False
