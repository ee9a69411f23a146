"""The second sweep's file items: no user file is overwritten (search and sample outputs, user devices), a table
keeps one protocol, device files are checked whole when added, and the data and cache folders are checked before a
profile starts (a full disk during a save is one line that says what was kept)."""

from __future__ import annotations

import errno
import json
import pathlib
import sys
from pathlib import Path
from typing import Any

import pytest

from hwnas.cli import main
from hwnas.devices import DeviceProfile, list_devices, load_device, user_devices_dir
from hwnas.errors import HwnasError
from hwnas.latency import profile as profile_module
from hwnas.outputs import RUN_MARKER, check_run_folder, mark_run_folder
from hwnas.runtimes import runtime_class, runtime_names
from hwnas.search.run import SearchConfig, run_search
from tests.test_search_run import QUICK, tables  # noqa: F401 (tables: the fixture)

FAST = {"rounds": 2, "warmup_runs": 1, "warmup_s": 0.0, "min_runs": 3, "min_time_s": 0.0}


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    return json.loads(capsys.readouterr().out)["error"]


def _profile_argv(out: Path | None = None, **protocol: Any) -> list[str]:
    argv = ["profile", "--device", "cpu-torch", "--space", "tiny", "--resolution", "16", "--quiet", "--json"]
    argv += [f"--protocol={k}={v}" for k, v in {**FAST, **protocol}.items()]
    return argv + (["--out", str(out)] if out is not None else [])


def _table_missing_two(path: Path, capsys: pytest.CaptureFixture[str]) -> bytes:
    """A complete tiny@16 table at ``path``, then two of its entries removed (a profile to resume); its bytes."""
    assert main(_profile_argv(path)) == 0
    capsys.readouterr()
    data = json.loads(path.read_text())
    for key in list(data["entries"])[:2]:
        del data["entries"][key]
    path.write_text(json.dumps(data))
    return path.read_bytes()


# --- user files are never overwritten -------------------------------------------------------------------------

def test_search_refuses_a_folder_with_the_users_files_before_work(tables: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "predictor.json").write_text('{"mine": 1}')
    config = SearchConfig().with_overrides({**QUICK, "out": str(out), "closed_loop_steps": 0})
    with pytest.raises(HwnasError, match=r"--out .*mine: holds predictor.json, which is not from an hwnas run"):
        run_search(config, progress=False)
    assert (out / "predictor.json").read_text() == '{"mine": 1}' and sorted(p.name for p in out.iterdir()) == [
        "predictor.json"]


def test_a_run_folder_is_recognised_even_before_its_first_checkpoint(tmp_path: Path) -> None:
    # a predictor built for the run is written before the checkpoint: the marker says the folder is the run's
    out = tmp_path / "run"
    mark_run_folder(out)
    (out / "predictor_set.json").write_text("{}")
    (out / "predictor.json").write_text("{}")
    assert check_run_folder(out) == out and (out / RUN_MARKER).is_file()
    (out / RUN_MARKER).unlink()
    (out / "checkpoint.pt").write_bytes(b"")  # an interrupted run: its own files are not the user's
    assert check_run_folder(out) == out
    assert check_run_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"  # nothing is created
    assert not (tmp_path / "new").exists()


def test_sample_keeps_existing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "archs"
    out.mkdir()
    (out / "arch_0002.json").write_text("mine")
    assert main(["sample", "--space", "tiny", "--n", "3", "--out", str(out), "--json"]) == 2
    assert "holds arch_0002.json" in _error(capsys) and sorted(p.name for p in out.iterdir()) == ["arch_0002.json"]
    assert (out / "arch_0002.json").read_text() == "mine"
    assert main(["sample", "--space", "tiny", "--n", "2", "--out", str(out), "--json"]) == 0  # 0000, 0001 only
    assert len(json.loads(capsys.readouterr().out)["files"]) == 2 and (out / "arch_0002.json").read_text() == "mine"


def test_devices_add_replaces_a_device_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a" / "my-box.toml", tmp_path / "b" / "my-box.toml"
    for path, backend in ((first, "onnxruntime"), (second, "torch")):
        path.parent.mkdir()
        path.write_text(f'name = "my-box"\nbackend = "{backend}"\n')
    assert main(["devices", "add", str(first), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "added"
    assert main(["devices", "add", str(first), "--json"]) == 0  # the same file again: nothing to do, and said so
    assert json.loads(capsys.readouterr().out)["action"] == "unchanged"
    assert main(["devices", "add", str(second), "--json"]) == 2
    assert "'my-box'" in (message := _error(capsys)) and "--replace" in message
    assert load_device("my-box").backend == "onnxruntime"
    assert main(["devices", "add", str(second), "--replace", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "replaced" and load_device("my-box").backend == "torch"


# --- device files are checked whole ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    ('backend = "onnxruntime"\n[options]\nfoo = 1\n', "[options]: onnxruntime runtime: unknown option 'foo'"),
    ('backend = "onnxruntime"\n[options]\ngraph_optimization = "fast"\n', "option 'graph_optimization'"),
    ('backend = "litert"\n[options]\nxnnpack = "yes"\n', "option 'xnnpack'"),
    ('backend = "adb"\ndevice = "android"\n[options]\nwarmup_runs = -1\n', "[options]: adb runtime"),
    ('backend = "torch"\n[protocol]\nrounds = -5\n', "[protocol]: field 'rounds'"),
    ('backend = "torch"\n[protocol]\nbogus = 1\n', "[protocol]: unknown field 'bogus'"),
    ('backend = "torch"\nthreads = 1000000000\n', "field 'threads': expected a positive integer of at most 1024"),
])
def test_devices_add_refuses_invalid_tables_and_bounds(body: str, expected: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(f'name = "dev"\n{body}')
    assert main(["devices", "add", str(path), "--json"]) == 2
    assert expected in _error(capsys) and not (user_devices_dir() / "dev.toml").exists()


def test_devices_add_refuses_a_name_that_is_not_the_file_name(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "renamed.toml"
    path.write_text('name = "other"\nbackend = "torch"\n')
    assert main(["devices", "add", str(path), "--json"]) == 2
    assert "field 'name': expected 'renamed'" in _error(capsys)
    assert not user_devices_dir().exists() or not list(user_devices_dir().iterdir())


def test_options_are_checked_without_the_runtime_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    ok = DeviceProfile.from_dict({"name": "d", "backend": "onnxruntime", "options": {"graph_optimization": "basic"}})
    assert ok.options == {"graph_optimization": "basic"}
    with pytest.raises(HwnasError, match="unknown option 'nope'"):
        DeviceProfile.from_dict({"name": "d", "backend": "onnxruntime", "options": {"nope": 1}})


@pytest.mark.parametrize("backend", runtime_names())
def test_every_backend_declares_its_options(backend: str) -> None:
    # the same check over every registered backend: its defaults pass, an unknown key is one line naming it
    runtime_class(backend).check_options({})
    with pytest.raises(HwnasError, match="unknown option"):
        runtime_class(backend).check_options({"no_such_option": 1})


def test_shipped_devices_pass_the_whole_check() -> None:
    assert len(list_devices()) >= 7


# --- one protocol per table -----------------------------------------------------------------------------------

def test_profile_refuses_to_resume_a_table_with_another_protocol(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    before = _table_missing_two(path, capsys)
    assert main(_profile_argv(path, rounds=1)) == 2
    message = _error(capsys)
    assert "protocol rounds=2, not 1" in message and "--protocol rounds=2" in message and "--out" in message
    assert path.read_bytes() == before  # nothing measured into it
    assert main(_profile_argv(path)) == 0  # the table's own protocol completes it
    assert json.loads(capsys.readouterr().out)["measured"] == 2


# --- data and cache folders ----------------------------------------------------------------------------------

@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile that reaches its runtime has started work: fail the test then."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the profile started work before checking its folders")

    monkeypatch.setattr(profile_module, "get_runtime", refuse)


@pytest.mark.parametrize("variable", ["HWNAS_DATA", "HWNAS_CACHE"])
def test_profile_checks_a_file_valued_folder_first(variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(variable, str(tmp_path / "a-file"))
    assert main(_profile_argv()) == 2
    message = _error(capsys)
    assert message.startswith(f"{variable} folder {tmp_path / 'a-file'}") and f"set {variable} to" in message


def test_profile_checks_a_read_only_data_folder_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    # root writes through chmod 0o500, so the refusal of the file system is scripted at the one call that asks it
    import hwnas.outputs
    from hwnas.locations import data_dir

    real_mkstemp, data = hwnas.outputs.tempfile.mkstemp, str(data_dir())

    def read_only(*args: Any, dir: Any = None, **kwargs: Any) -> Any:  # noqa: A002 - tempfile's own name
        if str(dir).startswith(data):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(hwnas.outputs.tempfile, "mkstemp", read_only)
    assert main(_profile_argv()) == 2
    assert "HWNAS_DATA folder" in (message := _error(capsys)) and "Permission denied" in message


def test_a_full_disk_during_a_save_keeps_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    before = _table_missing_two(path, capsys)
    real_write = pathlib.Path.write_bytes

    def full_disk(self: Path, data: bytes) -> int:
        if self.name.startswith(".t.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    assert main(_profile_argv(path)) == 2
    message = _error(capsys)
    assert message == f"{path}: cannot write the file (No space left on device); the previous file is kept as it was"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.json"]
