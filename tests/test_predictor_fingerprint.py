"""Predictors know where they belong (issue 18, item 5): a predictor file's fingerprint against this machine.

The predictor files here are copies of shipped ones whose ``meta.fingerprint`` is rewritten: to this machine and
runtime exactly (native), or with one field changed (foreign). So no test depends on which machine runs it (the
shipped kernel predictor was fitted on an Intel Xeon; this machine may be anything).
"""

from __future__ import annotations

import copy
import json
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.predictors.locate import user_predictor_path
from hwnas.latency.table import tables_dir
from hwnas.runtimes import get_runtime
from hwnas.runtimes.fingerprint import machine_fingerprint, version_family
from hwnas.spaces import get_space

DEVICE = "cpu-onnxruntime"
SHIPPED = tables_dir() / "predictors"
KERNEL = SHIPPED / f"{DEVICE}__kernel.json"
CALIBRATED = SHIPPED / f"{DEVICE}__proxyless__64__calibrated.json"


@pytest.fixture(scope="module")
def here() -> dict[str, Any]:
    """This machine's and cpu-onnxruntime's runtime fingerprint, as a predictor fitted here records them."""
    device = load_device(DEVICE)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp)).describe()
    return {"machine": machine_fingerprint(), "runtime": runtime}


def _copy(source: Path, out: Path, fingerprint: dict[str, Any], change: Callable[[dict], None] | None = None,
          device: str | None = None, turns: str = "warm") -> Path:
    """A copy of the predictor file ``source`` with ``fingerprint`` (changed in place by ``change``), its training
    networks timed with ``turns`` ("" leaves the field out, as files fitted before warm turns)."""
    data = json.loads(source.read_text())
    data["meta"]["fingerprint"] = copy.deepcopy(fingerprint)
    data["meta"]["turns"] = turns
    if not turns:
        del data["meta"]["turns"]
    if change is not None:
        change(data["meta"]["fingerprint"])
    if device is not None:
        data["meta"]["device"] = device
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-kernel ONNX model (a ReLU), which the kernel predictor reads."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    path = tmp_path_factory.mktemp("model") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _predict(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    """``hwnas predict ARGV --json``: exit code, its JSON (None when refused) and stderr."""
    code = main(["predict", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _other_cpu(fingerprint: dict[str, Any]) -> None:
    fingerprint["machine"]["cpu_model"] = "Other CPU 9000"


def test_native_predictor_is_silent_and_another_cpu_warns_once(here, model, tmp_path, capsys) -> None:
    """Fitted here: no word. Fitted on another CPU: one warning line naming the difference, and a prediction."""
    native = _copy(KERNEL, tmp_path / "native.json", here)
    code, result, err = _predict(["--device", DEVICE, "--predictor", str(native), str(model)], capsys)
    assert code == 0 and err == "" and result["latency_ms"] > 0
    foreign = _copy(KERNEL, tmp_path / "foreign.json", here, _other_cpu)
    code, result, err = _predict(["--device", DEVICE, "--predictor", str(foreign), str(model)], capsys)
    assert code == 0 and result["latency_ms"] > 0 and result["fitted_on"] == "Other CPU 9000"
    assert err.count("\n") == 1 and err.startswith(f"hwnas: warning: {foreign}: fitted on another machine or runtime")
    assert f"machine.cpu_model: 'Other CPU 9000' -> {here['machine']['cpu_model']!r}" in err
    assert "predictor build" not in err  # named by path: no build hint


def test_a_predictor_timed_with_cold_turns_warns_and_is_not_this_machines(here, model, tmp_path, capsys) -> None:
    """Fitted here before warm turns (no ``turns``) or cold on purpose: one line saying its scale is not bench's,
    and the default lookup does not take it for this machine's predictor."""
    from hwnas.devices import load_device
    from hwnas.latency.predictors.origin import fits_here

    for turns in ("", "cold"):
        old = _copy(KERNEL, tmp_path / f"old{turns}.json", here, turns=turns)
        code, result, err = _predict(["--device", DEVICE, "--predictor", str(old), str(model)], capsys)
        assert code == 0 and result["latency_ms"] > 0 and err.count("\n") == 1
        assert err.startswith(f"hwnas: warning: {old}: its training networks were timed with cold turns")
        assert "fitted on another machine" not in err
        assert not fits_here(old, load_device(DEVICE))
    assert fits_here(_copy(KERNEL, tmp_path / "warm.json", here), load_device(DEVICE))


def test_caches_and_cpu_features_are_compared(here, model, tmp_path, capsys) -> None:
    """One CPU model name can hide another machine (a VM's 'Intel Xeon Processor'): caches and ISA tell them apart."""
    def change(fingerprint: dict[str, Any]) -> None:
        fingerprint["machine"]["caches"] = {**fingerprint["machine"]["caches"], "L3": 123}
        fingerprint["machine"]["isa"] = [*fingerprint["machine"]["isa"], "amx_fake"]

    foreign = _copy(KERNEL, tmp_path / "caches.json", here, change)
    code, _, err = _predict(["--device", DEVICE, "--predictor", str(foreign), str(model)], capsys)
    assert code == 0 and err.count("\n") == 1 and "machine.isa: -amx_fake" in err
    if here["machine"]["caches"].get("L3"):
        assert f"machine.caches.L3: 123 -> {here['machine']['caches']['L3']}" in err


def _installed_family_shift(version: str) -> str:
    """A version of another release line than ``version``."""
    return "0.1.0" if version_family(version) != "0.1" else "99.0.0"


@pytest.mark.parametrize("case", ["kernel-for-torch", "litert-for-ort", "release-line"])
def test_predictor_of_another_runtime_is_refused(case, here, model, tmp_path, capsys) -> None:
    """Another backend or release line of the runtime than the device's: one line, exit 2, nothing predicted."""
    device, reason = DEVICE, ""
    if case == "kernel-for-torch":  # a kernel predictor whose fingerprint says onnxruntime, for a torch device
        path, device = _copy(KERNEL, tmp_path / "k.json", here, device="cpu-torch"), "cpu-torch"
        reason = "fitted with runtime 'onnxruntime', device 'cpu-torch' runs 'torch'"
    elif case == "litert-for-ort":
        path, reason = SHIPPED / "cpu-litert__proxyless__32__calibrated.json", "fitted with runtime 'litert'"
    else:
        installed = metadata.version("onnxruntime")
        old = _installed_family_shift(installed)
        path = _copy(KERNEL, tmp_path / "old.json", here,
                     lambda f: f["runtime"]["versions"].update(onnxruntime=old))
        reason = f"fitted with onnxruntime {old}, {installed} here (another release line)"
    code, result, err = _predict(["--device", device, "--predictor", str(path), str(model)], capsys)
    assert code == 2 and result is None and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"hwnas: error: {path}: predictor of another device or runtime (") and reason in err


def test_same_release_line_other_version_warns(here, model, tmp_path, capsys) -> None:
    """Another version of the same release line (1.x -> 1.y) is a warning, as for a table, not a refusal."""
    installed = metadata.version("onnxruntime")
    family = version_family(installed)
    other = f"{family}.0.1" if not family.startswith("0.") else f"{family}.999"
    assert version_family(other) == family and other != installed
    path = _copy(KERNEL, tmp_path / "minor.json", here, lambda f: f["runtime"]["versions"].update(onnxruntime=other))
    code, _, err = _predict(["--device", DEVICE, "--predictor", str(path), str(model)], capsys)
    assert code == 0 and err.count("\n") == 1 and f"runtime.versions.onnxruntime: {other!r} -> {installed!r}" in err


def test_default_lookup_with_only_a_foreign_kernel_predictor_says_how_to_build(here, model, tmp_path,
                                                                              monkeypatch, capsys) -> None:
    """The user's kernel predictor (shadowing the shipped one) is foreign: used, and the warning names the build."""
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "user"))
    foreign = _copy(KERNEL, user_predictor_path(DEVICE, "kernel"), here, _other_cpu)
    code, result, err = _predict(["--device", DEVICE, str(model)], capsys)
    assert code == 0 and result["predictor"] == str(foreign) and err.count("\n") == 1
    assert err.startswith(f"hwnas: warning: {foreign}: fitted on another machine or runtime")
    assert err.rstrip().endswith(f"build one for this machine with `hwnas predictor build --kind kernel --device "
                                 f"{DEVICE}`")


def test_default_lookup_for_an_architecture(here, tmp_path, monkeypatch, capsys) -> None:
    """For an architecture: a predictor of this machine (here the kernel one) before a foreign one of the space
    (calibrated); with only foreign ones, the warning says how to measure and fit one where the lookup finds it."""
    import random

    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "user"))
    space = get_space("proxyless", 64)
    arch = space.random_arch(random.Random(0)).save(tmp_path / "arch.json")
    calibrated = _copy(CALIBRATED, user_predictor_path(DEVICE, "calibrated", space), here, _other_cpu)
    kernel = _copy(KERNEL, user_predictor_path(DEVICE, "kernel"), here)
    code, result, err = _predict(["--device", DEVICE, str(arch)], capsys)
    assert code == 0 and result["predictor"] == str(kernel) and err == ""
    _copy(KERNEL, kernel, here, _other_cpu)
    code, result, err = _predict(["--device", DEVICE, str(arch)], capsys)
    assert code == 0 and result["predictor"] == str(calibrated) and err.count("\n") == 1
    assert (f"`hwnas measure --device {DEVICE} --space proxyless --resolution 64 --out SET.json && hwnas predictor "
            f"fit --space proxyless --resolution 64 --set SET.json --out {calibrated}`") in err


def test_unknown_fingerprint_says_so(here, model, tmp_path, capsys) -> None:
    """A predictor fitted from a CSV records no fingerprint ({}): no warning (nothing to compare), a note saying so."""
    path = _copy(KERNEL, tmp_path / "csv.json", {})
    code, result, err = _predict(["--device", DEVICE, "--predictor", str(path), str(model)], capsys)
    assert code == 0 and err == "" and result["fitted_on"] is None
    assert "does not record the machine it was fitted on" in result["note"]


def test_search_names_a_foreign_predictor_in_predicts_words(here, model, tmp_path, capsys) -> None:
    """A predictor named by path in the search: the warning line and the refusal are predict's, word for word."""
    from hwnas.search.aim import choose_estimator
    from hwnas.search.run_config import SearchConfig

    device, space = load_device(DEVICE), get_space("proxyless", 64)
    foreign = _copy(CALIBRATED, tmp_path / "foreign.json", here, _other_cpu)
    _, _, predict_err = _predict(["--device", DEVICE, "--predictor", str(foreign), str(model)], capsys)
    choice = choose_estimator(device, space, None, SearchConfig(predictor=str(foreign)), tmp_path, False)
    assert choice.kind == "calibrated" and capsys.readouterr().err == predict_err.split("\n")[0] + "\n"
    other = _copy(CALIBRATED, tmp_path / "litert.json", here, lambda f: f["runtime"].update(runtime="litert"))
    _, _, predict_err = _predict(["--device", DEVICE, "--predictor", str(other), str(model)], capsys)
    with pytest.raises(HwnasError) as refused:
        choose_estimator(device, space, None, SearchConfig(predictor=str(other)), tmp_path, False)
    assert predict_err == f"hwnas: error: {refused.value}\n"
