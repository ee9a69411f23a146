"""Device profiles: one TOML file per measurement target, resolved by name or by path.

A profile names the backend (runtime) and how it is set up on the target, e.g. ``devices/cpu-litert.toml``::

    name = "cpu-litert"
    description = "LiteRT (XNNPACK) on one CPU core: stand-in for a phone's CPU runtime"
    backend = "litert"
    device = "cpu"
    threads = 1
    precision = "fp32"

    [options]          # runtime-specific, passed as RuntimeConfig.options
    xnnpack = true

    [protocol]         # optional overrides of the measurement protocol (validated by hwnas.runtimes.protocol)
    rounds = 5

Every validation error is one line that names the file and the field, e.g.
``devices/foo.toml: field 'threads': expected a positive integer, got 'two'``. ``[options]`` are checked
against the backend's own declaration (:meth:`~hwnas.runtimes.base.Runtime.check_options`, which imports no runtime
library) and ``[protocol]`` by :class:`~hwnas.runtimes.protocol.Protocol`, so a file that is listed works.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hwnas.checks import MAX_THREADS, Rule, check_known, check_rules, field_error, matches, missing_field_error
from hwnas.errors import HwnasError
from hwnas.io import write_bytes_atomic
from hwnas.locations import shipped_dir, user_dir
from hwnas.runtimes import RuntimeConfig, runtime_class, runtime_names
from hwnas.runtimes.protocol import Protocol

DEVICES_ENV_VAR = "HWNAS_DEVICES"
DEVICE_KINDS = ("cpu", "cuda", "android")
PRECISIONS = ("fp32", "fp16", "int8")
FIELDS = ("name", "description", "backend", "device", "threads", "precision", "options", "protocol")
REQUIRED_FIELDS = ("name", "backend")
# Where each built-in backend can run; a backend registered later and missing here is not cross-checked.
BACKEND_DEVICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "torch": ("cpu", "cuda"),
        "onnxruntime": ("cpu", "cuda"),
        "litert": ("cpu",),
        "tensorrt": ("cuda",),
        "adb": ("android",),
    }
)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DeviceProfile:
    """One measurement target: a backend plus its threads, precision and runtime options.

    ``path`` is the file the profile was read from (None when built in code); ``default_threads`` is the
    profile's own thread count, kept when ``threads`` is overridden (``--threads``, ``dataclasses.replace``).
    Neither is part of :meth:`to_dict`, which is the profile's content and what a latency table records.
    """

    name: str
    backend: str
    description: str = ""
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)
    default_threads: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.default_threads is None:
            object.__setattr__(self, "default_threads", self.threads)

    @property
    def threads_overridden(self) -> bool:
        """Whether ``threads`` differs from the profile's own (a table measured so is another table)."""
        return self.threads != self.default_threads

    def runtime_config(self) -> RuntimeConfig:
        """The :class:`RuntimeConfig` the backend is instantiated with."""
        return RuntimeConfig(
            threads=self.threads, device=self.device, precision=self.precision, options=copy.deepcopy(self.options)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able content of the profile (without ``path``); ``from_dict`` rebuilds it."""
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "options": copy.deepcopy(self.options),
            "protocol": copy.deepcopy(self.protocol),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<device>", path: Path | None = None) -> DeviceProfile:
        """Validate ``data`` (a parsed TOML document or :meth:`to_dict` output); errors name ``source``."""
        return _parse_profile(data, source, path)


def device_protocol(device: DeviceProfile, overrides: Mapping[str, Any] | None = None) -> Protocol:
    """The measurement protocol on ``device``: the defaults, with the profile's ``[protocol]`` overrides, then
    ``overrides``."""
    data = {**Protocol().to_dict(), **device.protocol, **(overrides or {})}
    return Protocol.from_dict(data, source=f"{device.path or device.name}: [protocol]")


def devices_dir() -> Path:
    """The folder of shipped device files (the package's copy, or the checkout's ``devices/``); the
    ``HWNAS_DEVICES`` environment variable replaces it."""
    override = os.environ.get(DEVICES_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return shipped_dir("devices")


def user_devices_dir() -> Path:
    """The user's own device files (``hwnas devices add``), ``$HWNAS_DATA/devices``; they override shipped ones."""
    return user_dir("devices")


def device_files() -> dict[str, Path]:
    """Every visible device file by name: the shipped ones, overridden by the user's of the same name."""
    files = {path.stem: path for path in _device_files(devices_dir())}
    user = user_devices_dir()
    if user.is_dir():
        files.update({path.stem: path for path in sorted(user.glob("*.toml"))})
    return dict(sorted(files.items()))


def list_devices() -> list[DeviceProfile]:
    """Every visible device (:func:`device_files`), sorted by name (an invalid file raises :class:`HwnasError`)."""
    return [_load_file(path) for path in device_files().values()]


def load_device(name_or_path: str) -> DeviceProfile:
    """Load a profile by name (the user's ``NAME.toml``, else the shipped one) or by path to a ``.toml`` file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise HwnasError(f"device file not found: {text}")
        return _load_file(path)
    user = user_devices_dir() / f"{text}.toml"
    if text and user.is_file():
        return _load_file(user)
    directory = devices_dir()
    path = directory / f"{text}.toml"
    if text and path.is_file():
        return _load_file(path)
    known = ", ".join(device_files()) or "none"
    raise HwnasError(
        f"unknown device {text!r}: expected one of {known} (files in {_display(directory)} and "
        f"{_display(user_devices_dir())}; `hwnas devices add FILE` adds one) or a path to a .toml file"
    )


@dataclass(frozen=True)
class DeviceAdded:
    """What :func:`add_device` did: ``action`` is ``added``, ``replaced`` or ``unchanged`` (the same file was
    already there)."""

    profile: DeviceProfile
    action: str


def add_device(path: str | Path, replace: bool = False) -> DeviceAdded:
    """Validate the device file at ``path`` (named by its ``name``, as every device file is) and copy it into
    :func:`user_devices_dir`, so later commands accept its name.

    A user device of that name with other content is replaced only when ``replace`` (it may be another backend
    that tables were measured on); the same file again changes nothing.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise HwnasError(f"device file not found: {path}")
    try:
        raw = source.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HwnasError(f"{_display(source)}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{_display(source)}: cannot read the file: {exc}") from None
    profile = _parse_profile(data, _display(source), source)
    _check_file_name(profile, source, _display(source))
    target = user_devices_dir() / f"{profile.name}.toml"
    action = "replaced" if target.exists() else "added"
    if target.is_file() and target.read_bytes() == raw:
        return DeviceAdded(_load_file(target), "unchanged")
    if target.exists() and not replace:
        raise HwnasError(f"{_display(source)}: your device {profile.name!r} ({_display(target)}) is already there with "
                         "other content; pass --replace to replace it")
    write_bytes_atomic(target, raw)
    return DeviceAdded(_load_file(target), action)


def _device_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        where = f" (set by {DEVICES_ENV_VAR})" if os.environ.get(DEVICES_ENV_VAR) else ""
        raise HwnasError(f"devices folder not found: {_display(directory)}{where}")
    return sorted(directory.glob("*.toml"))


def _load_file(path: Path) -> DeviceProfile:
    source = _display(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:  # the message ends with "(at line L, column C)"
        raise HwnasError(f"{source}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{source}: cannot read the file: {exc}") from None
    profile = _parse_profile(data, source, path)
    _check_file_name(profile, path, source)
    return profile


def _check_file_name(profile: DeviceProfile, path: Path, source: str) -> None:
    if profile.name != path.stem:
        raise field_error(source, "name", f"{path.stem!r} (a device file is named by its name)", profile.name)


def _parse_profile(data: Mapping[str, Any], source: str, path: Path | None) -> DeviceProfile:
    check_known(data, FIELDS, source)
    backends = runtime_names()
    for key in REQUIRED_FIELDS:
        if key not in data:
            hint = f"one of {', '.join(backends)}" if key == "backend" else "a string"
            raise missing_field_error(source, key, f"required: {hint}")
    values = {**DeviceProfile(name="", backend="").to_dict(), **data}
    rules: list[Rule] = [
        ("name", lambda v: isinstance(v, str) and bool(_NAME_PATTERN.fullmatch(v)),
         "a name of letters, digits, '.', '_' or '-'"),
        ("description", lambda v: isinstance(v, str) and "\n" not in v, "a one-line string"),
        ("backend", lambda v: v in backends, f"one of {', '.join(backends)}"),
        ("device", lambda v: v in DEVICE_KINDS, f"one of {', '.join(DEVICE_KINDS)}"),
    ]
    allowed = BACKEND_DEVICES.get(values["backend"])
    if allowed is not None:
        rules.append(("device", lambda v: v in allowed, f"{' or '.join(map(repr, allowed))} for backend "
                                                         f"{values['backend']!r}"))
    rules += [
        ("threads", lambda v: matches(v, int) and v >= 1, "a positive integer"),
        ("threads", lambda v: v <= MAX_THREADS, f"a positive integer of at most {MAX_THREADS}"),
        ("precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        ("options", lambda v: isinstance(v, dict), "a table ([options])"),
        ("protocol", lambda v: isinstance(v, dict), "a table ([protocol])"),
    ]
    check_rules(values, rules, source)
    _check_tables(values, source)
    return DeviceProfile(
        name=values["name"],
        backend=values["backend"],
        description=values["description"],
        device=values["device"],
        threads=values["threads"],
        precision=values["precision"],
        options=copy.deepcopy(values["options"]),
        protocol=copy.deepcopy(values["protocol"]),
        path=path,
    )


def _check_tables(values: Mapping[str, Any], source: str) -> None:
    """``[options]`` as the backend declares them, ``[protocol]`` as the protocol checks itself."""
    try:
        runtime_class(values["backend"]).check_options(values["options"])
    except HwnasError as exc:
        raise HwnasError(f"{source}: [options]: {exc}") from None
    Protocol.from_dict(values["protocol"], source=f"{source}: [protocol]")


def _display(path: Path) -> str:
    """The path relative to the working directory when it is below it (shorter messages), else as is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


__all__ = ["DeviceAdded", "DeviceProfile", "add_device", "device_files", "device_protocol", "devices_dir",
           "list_devices", "load_device", "user_devices_dir"]
