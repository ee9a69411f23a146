"""Device profiles: every shipped file loads by name and by path; a bad file fails in one line naming file, field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwnas
from hwnas.devices import DeviceProfile, devices_dir, list_devices, load_device
from hwnas.errors import HwnasError
from hwnas.runtimes import RuntimeConfig, runtime_names

SHIPPED_DIR = Path(hwnas.__file__).resolve().parents[1] / "devices"
SHIPPED = sorted(path.stem for path in SHIPPED_DIR.glob("*.toml"))
REQUIRED = {
    "cpu-torch", "cpu-onnxruntime", "cpu-litert", "cuda-torch", "cuda-onnxruntime", "cuda-tensorrt", "android-litert",
}
VALID = 'name = "bad"\nbackend = "torch"\n'


@pytest.fixture(autouse=True)
def _default_devices_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWNAS_DEVICES", raising=False)


def test_default_devices_dir_is_next_to_the_package() -> None:
    assert devices_dir() == SHIPPED_DIR
    assert REQUIRED <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_device_loads_by_name_and_by_path(name: str) -> None:
    by_name = load_device(name)
    by_path = load_device(str(SHIPPED_DIR / f"{name}.toml"))
    assert by_name == by_path
    assert by_name.name == name and by_name.path == SHIPPED_DIR / f"{name}.toml"
    assert by_name.backend in runtime_names()
    assert by_name.description and "\n" not in by_name.description
    config = by_name.runtime_config()
    assert isinstance(config, RuntimeConfig)
    assert (config.threads, config.device, config.precision, config.options) == (
        by_name.threads, by_name.device, by_name.precision, by_name.options
    )
    data = by_name.to_dict()
    json.dumps(data)
    assert DeviceProfile.from_dict(data) == by_name


def test_list_devices_returns_every_file_sorted() -> None:
    assert [profile.name for profile in list_devices()] == SHIPPED


def test_expected_settings_of_some_shipped_devices() -> None:
    assert load_device("cpu-litert").options == {"xnnpack": True}
    assert load_device("cpu-onnxruntime").options["graph_optimization"] == "all"
    assert load_device("cuda-onnxruntime").options["provider"] == "cuda"
    trt = load_device("cuda-tensorrt")
    assert (trt.backend, trt.device, trt.precision) == ("tensorrt", "cuda", "fp16")
    phone = load_device("android-litert")
    assert (phone.backend, phone.device, phone.threads) == ("adb", "android", 4)
    assert phone.options["serial"] == "" and phone.options["use_xnnpack"] is True
    from hwnas.devices import device_protocol

    # a GPU idles at a fraction of its clock: the CUDA profiles prime it before timing, CPU profiles need not
    for device in list_devices():
        primed = device_protocol(device).prime_s > 0
        assert primed == (device.device == "cuda"), device.name


def test_runtime_config_is_a_copy() -> None:
    profile = load_device("cpu-litert")
    profile.runtime_config().options["xnnpack"] = False
    profile.to_dict()["options"]["xnnpack"] = False
    assert profile.options == {"xnnpack": True}


def test_env_var_overrides_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = 'name = "my-box"\nbackend = "onnxruntime"\nthreads = 2\n[protocol]\nrounds = 3\n'
    (tmp_path / "my-box.toml").write_text(text)
    monkeypatch.setenv("HWNAS_DEVICES", str(tmp_path))
    assert devices_dir() == tmp_path
    profile = load_device("my-box")
    assert (profile.threads, profile.device, profile.precision, profile.protocol) == (2, "cpu", "fp32", {"rounds": 3})
    assert [p.name for p in list_devices()] == ["my-box"]


def test_missing_devices_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_DEVICES", str(tmp_path / "absent"))
    with pytest.raises(HwnasError, match="devices folder not found.*HWNAS_DEVICES"):
        list_devices()


BAD_FILES = [
    ("missing-field", 'name = "missing-field"\n', "missing field 'backend' (required: one of torch"),
    ("wrong-type", VALID.replace("bad", "wrong-type") + 'threads = "two"\n',
     "field 'threads': expected a positive integer, got 'two'"),
    ("zero-threads", VALID.replace("bad", "zero-threads") + "threads = 0\n", "field 'threads': expected a positive"),
    ("bool-threads", VALID.replace("bad", "bool-threads") + "threads = true\n", "field 'threads': expected a positive"),
    ("unknown-field", VALID.replace("bad", "unknown-field") + "thread = 1\n",
     "unknown field 'thread' (expected one of name, description, backend"),
    ("unknown-backend", 'name = "unknown-backend"\nbackend = "tflite"\n',
     "field 'backend': expected one of torch, onnxruntime, litert, tensorrt, adb, got 'tflite'"),
    ("bad-device", VALID.replace("bad", "bad-device") + 'device = "tpu"\n', "field 'device': expected one of cpu"),
    ("wrong-device", 'name = "wrong-device"\nbackend = "tensorrt"\ndevice = "cpu"\n',
     "field 'device': expected 'cuda' for backend 'tensorrt', got 'cpu'"),
    ("bad-precision", VALID.replace("bad", "bad-precision") + 'precision = "bf16"\n',
     "field 'precision': expected one of fp32, fp16, int8, got 'bf16'"),
    ("bad-options", VALID.replace("bad", "bad-options") + "options = 3\n", "field 'options': expected a table"),
    ("bad-protocol", VALID.replace("bad", "bad-protocol") + 'protocol = "x"\n', "field 'protocol': expected a table"),
    ("bad-name", 'name = "has space"\nbackend = "torch"\n', "field 'name': expected a name of letters"),
    ("other-name", 'name = "something-else"\nbackend = "torch"\n',
     "field 'name': expected 'other-name' (a device file is named by its name), got 'something-else'"),
    ("bad-toml", 'name = "bad-toml"\nbackend = torch\n', "invalid TOML: "),
]


@pytest.mark.parametrize(("stem", "text", "expected"), BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_bad_file_fails_with_one_line_naming_file_and_field(
    stem: str, text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{stem}.toml"
    path.write_text(text)
    with pytest.raises(HwnasError) as info:
        load_device(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\n\nbackend = torch\n')
    with pytest.raises(HwnasError, match=r"broken\.toml: invalid TOML: .*line 3"):
        load_device(str(path))


def test_unknown_name_lists_known_devices() -> None:
    with pytest.raises(HwnasError) as info:
        load_device("no-such-device")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown device 'no-such-device': expected one of ")
    assert all(name in message for name in SHIPPED)


def test_missing_path_and_empty_name(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match="device file not found"):
        load_device(str(tmp_path / "absent.toml"))
    with pytest.raises(HwnasError, match="unknown device ''"):
        load_device("")


def test_from_dict_validates_without_a_file() -> None:
    profile = DeviceProfile.from_dict({"name": "x", "backend": "litert", "options": {"xnnpack": True}})
    assert (profile.device, profile.threads, profile.path) == ("cpu", 1, None)
    with pytest.raises(HwnasError, match=r"^<device>: field 'threads'"):
        DeviceProfile.from_dict({"name": "x", "backend": "torch", "threads": 1.5})
