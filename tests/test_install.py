"""Install and data locations: shipped data read through the package, the user's own folder for everything new,
tables and devices found by name, and a real wheel install used from another folder."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.latency.profile import ProfileConfig, profile_device
from hwnas.latency.table import LatencyTable, default_table_path, table_folders, tables_dir, user_tables_dir
from hwnas.locations import data_dir, shipped_dir
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
FAST = {"rounds": 2, "warmup_runs": 2, "warmup_s": 0.0, "min_runs": 5, "min_time_s": 0.0}


def test_folders_follow_the_environment(tmp_path, monkeypatch):
    assert data_dir() == Path(os.environ["HWNAS_DATA"])  # tests/conftest.py: a folder of this test's own
    monkeypatch.delenv("HWNAS_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "hwnas"
    monkeypatch.delenv("HWNAS_TABLES", raising=False)
    assert tables_dir() == shipped_dir("latency_tables") == ROOT / "latency_tables"  # editable: the checkout's
    assert table_folders() == [tmp_path / "xdg" / "hwnas" / "latency_tables", ROOT / "latency_tables"]


def test_profile_writes_into_the_user_folder_and_user_tables_override_shipped(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HWNAS_TABLES", raising=False)
    device, space = load_device("cpu-torch"), get_space("tiny", 16)
    result = profile_device(device, space, None, ProfileConfig(protocol_overrides=FAST, progress=False))
    assert result.table == user_tables_dir() / "cpu-torch__tiny__16.json" and result.table.is_file()
    assert not (ROOT / "latency_tables" / "cpu-torch__tiny__16.json").exists()
    shipped = default_table_path("cpu-onnxruntime", "proxyless", 32)
    assert shipped == ROOT / "latency_tables" / "cpu-onnxruntime__proxyless__32.json"
    mine = LatencyTable.load(shipped)
    mine.save(user_tables_dir() / shipped.name)
    assert default_table_path("cpu-onnxruntime", "proxyless", 32) == user_tables_dir() / shipped.name
    assert main(["tables", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["tables"]
    by_place = {(r["where"], Path(r["path"]).name): r for r in rows}
    assert by_place[("user", "cpu-torch__tiny__16.json")]["matches_this_machine"] is True
    assert by_place[("user", shipped.name)]["overridden"] is False
    assert by_place[("shipped", shipped.name)]["overridden"] is True
    assert {"device", "space", "resolution", "entries", "noisy", "path"} <= set(by_place[("user", shipped.name)])


def test_estimate_finds_the_table_by_device(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HWNAS_TABLES", raising=False)
    table = LatencyTable.load(ROOT / "latency_tables" / "cpu-onnxruntime__proxyless__32.json")
    arch = get_space("proxyless", 32, table.num_classes).random_arch(random.Random(0)).save(tmp_path / "a.json")
    assert main(["estimate", "--device", "cpu-onnxruntime", str(arch), "--json"]) == 0
    by_device = json.loads(capsys.readouterr().out)
    assert main(["estimate", "--table", str(table.path), str(arch), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] == by_device["latency_ms"]
    assert main(["estimate", "--device", "cpu-torch", str(arch), "--json"]) == 2  # no cpu-torch table at 32
    assert "hwnas profile --device cpu-torch" in json.loads(capsys.readouterr().out)["error"]
    assert main(["estimate", str(arch), "--json"]) == 2
    assert "--table FILE or --device NAME" in json.loads(capsys.readouterr().out)["error"]


def test_devices_add_and_show(tmp_path, capsys):
    mine = tmp_path / "my-box.toml"
    mine.write_text('name = "my-box"\nbackend = "onnxruntime"\nthreads = 2\n')
    assert main(["devices", "add", str(mine), "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] == "my-box" and Path(added["path"]).parent == data_dir() / "devices"
    assert load_device("my-box").threads == 2
    assert main(["devices", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
    assert rows["my-box"]["source"] == "user" and rows["cpu-torch"]["source"] == "shipped" and len(rows) >= 8
    assert main(["devices", "show", "my-box", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"]["threads"] == 2
    (tmp_path / "bad.toml").write_text('name = "bad"\nbackend = "nope"\n')
    assert main(["devices", "add", str(tmp_path / "bad.toml"), "--json"]) == 2
    assert "field 'backend'" in json.loads(capsys.readouterr().out)["error"]
    assert not (data_dir() / "devices" / "bad.toml").exists()


def test_threads_override_the_profile_and_enter_the_fingerprint(tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["profile", "--device", "cpu-torch", "--space", "tiny", "--resolution", "16", "--out", str(out), "--quiet"]
    argv += [f"--protocol={k}={v}" for k, v in FAST.items()]
    assert main(argv + ["--threads", "2", "--json"]) == 0
    table = LatencyTable.load(out)
    assert table.device["threads"] == 2 and table.fingerprint["runtime"]["threads"] == 2
    capsys.readouterr()
    assert main(argv + ["--json"]) == 2  # the profile's own 1 thread: another runtime setting, refused
    assert "runtime.threads: 2 -> 1" in json.loads(capsys.readouterr().out)["error"]


SHORT_EPOCHS = ("--warmup-epochs", "1", "--epochs", "2", "--train-epochs", "3")


@pytest.mark.slow
def test_wheel_install_works_from_another_folder(tmp_path):
    """Build the wheel, install it (no deps; this venv's packages stand in for them) into a fresh venv and use it
    from a folder outside the checkout: shipped devices and tables come from the package, and the default
    ``hwnas search`` runs there on the shipped table with its defaults, fewer epochs (issue 11's acceptance; the
    search is most of this test's few minutes)."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("hwnas-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HWNAS_TABLES", "HWNAS_DEVICES", "PYTHONPATH")}
    env["HWNAS_DATA"] = str(tmp_path / "data")

    def hwnas(*argv: str, timeout: int = 300) -> dict:
        done = subprocess.run([str(env_dir / "bin" / "hwnas"), *argv, "--json"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    devices = hwnas("devices")["devices"]
    assert len(devices) >= 7 and all("/site-packages/hwnas/_data/devices/" in d["path"] for d in devices)
    tables = hwnas("tables")["tables"]
    assert {Path(t["path"]).name for t in tables} >= {"cpu-onnxruntime__proxyless__32.json"}
    assert all("/site-packages/hwnas/_data/latency_tables/" in t["path"] for t in tables)
    num_classes = LatencyTable.load(ROOT / "latency_tables" / "cpu-onnxruntime__proxyless__32.json").num_classes
    arch = get_space("proxyless", 32, num_classes).random_arch(random.Random(0)).save(elsewhere / "a.json")
    assert hwnas("estimate", "--device", "cpu-onnxruntime", str(arch))["latency_ms"] > 0
    shipped = [p.relative_to(ROOT) for p in (ROOT / "latency_tables").rglob("*.json")]
    installed = site / "hwnas" / "_data"
    assert all((installed / p).is_file() for p in shipped) and (installed / "latency_tables" / "predictors").is_dir()

    # the README's `hwnas search` from a folder of its own: its defaults (device, data, table, predictor, closed
    # loop, verdict) with fewer epochs (the same code paths; the default's 12 + 10 epochs took 5 of this test's 6
    # minutes, the suite's largest share)
    summary = hwnas("search", *SHORT_EPOCHS, timeout=1200)
    assert summary["measured_ms"] > 0 and summary["accuracy"] > 0.5  # digits: 10 classes, chance is 0.1
    run = (elsewhere / summary["out"]).resolve()
    assert run.parent == (elsewhere / "runs").resolve()
    assert all((run / name).is_file() for name in ("arch.json", "model.pt", "report.json"))
    report = json.loads((run / "report.json").read_text())
    shipped_tables = (installed / "latency_tables").resolve()
    assert (elsewhere / report["table"]).resolve() == shipped_tables / "cpu-onnxruntime__proxyless__32.json"
    assert report["latency_model"]["kind"] == "calibrated"  # the shipped predictor where it fits this machine, else
    predictor = (elsewhere / report["latency_model"]["path"]).resolve()  # one built in the run folder (as on CI)
    assert predictor.parent in (shipped_tables / "predictors", run)
    assert not (tmp_path / "data" / "latency_tables").exists()  # nothing profiled: the shipped table was used
    assert not list(elsewhere.glob("latency_tables*")) and not list(site.glob("latency_tables"))
