"""A real Android phone over ``adb``: push the ``.tflite`` model, time it with TFLite/LiteRT's ``benchmark_model``.

``benchmark_model`` (the native command-line build for ``android_aarch64``) must already be on the phone at
``options.benchmark_model`` and be executable. It runs the model on random inputs and prints only aggregate
statistics; it never prints the time of each run. What is measured:

* ``time_runs(n)`` runs ``benchmark_model --num_runs=n --min_secs=0`` (so it stops after ``n`` timed runs, unless
  ``--max_secs`` cuts it short) and returns ``n`` copies of the reported average. The per-round spread that the
  timing protocol computes is therefore the spread between averages of separate ``benchmark_model`` processes;
  the within-process min/max/std/percentiles are kept in :attr:`AdbPreparedModel.last_result` (as
  :mod:`hwnas.runtimes.benchmark_model` parses them).
* Warm-up happens inside each process (``--warmup_runs``/``--warmup_min_secs``), so every call pays model load,
  delegate setup and warm-up on the phone: call ``time_runs`` with a large ``n``, never ``run()`` in a loop.

Options (``[options]`` of the device profile): ``serial`` (empty = the only phone), ``benchmark_model`` (path on
the phone), ``remote_dir`` (where models are pushed), ``use_xnnpack``, ``warmup_runs``, ``warmup_min_secs``,
``max_secs``, ``timeout_s`` (limit for one adb command). ``--num_threads`` is the profile's ``threads``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from hwnas.errors import HwnasError
from hwnas.io import first_line
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig
from hwnas.runtimes.benchmark_model import parse_benchmark_model_output


@dataclass(frozen=True)
class CommandResult:
    """What a finished subprocess left: exit status and decoded output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


# (argv, timeout in seconds) -> result; injectable so that tests can fake adb.
CommandRunner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout_s: float) -> CommandResult:
    """Run ``argv`` without a shell, capturing text output; one-line :class:`HwnasError` on a timeout."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s
        )
    except FileNotFoundError:
        raise HwnasError(f"{argv[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise HwnasError(f"`{shlex.join(argv)}` did not finish within {timeout_s:g} s") from None
    return CommandResult(tuple(argv), proc.returncode, proc.stdout or "", proc.stderr or "")


@dataclass(frozen=True)
class AdbOptions:
    """The ``[options]`` an adb device profile understands, with their defaults."""

    serial: str = ""
    benchmark_model: str = "/data/local/tmp/benchmark_model"
    remote_dir: str = "/data/local/tmp/hwnas"
    use_xnnpack: bool = True
    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    max_secs: float = 150.0
    timeout_s: float = 600.0

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> AdbOptions:
        """Read and type-check ``config.options`` (see :meth:`from_options`)."""
        return cls.from_options(config.options)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AdbOptions:
        """Read and type-check a device profile's ``[options]``; unknown keys are rejected."""
        known = cls.__dataclass_fields__
        values: dict[str, Any] = {}
        for key, value in options.items():
            if key not in known:
                raise HwnasError(f"adb runtime: unknown option {key!r} (expected one of {', '.join(known)})")
            default = known[key].default
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = number and isinstance(value, int) and value >= 0
            elif isinstance(default, float):
                ok = number and value >= 0
            else:
                ok = isinstance(value, str)
            if not ok:
                raise HwnasError(f"adb runtime: option {key!r}: expected {type(default).__name__}, got {value!r}")
            values[key] = value
        return cls(**values)

    def adb(self) -> list[str]:
        """The adb command prefix, addressing the configured phone."""
        return ["adb", "-s", self.serial] if self.serial else ["adb"]


class AdbRuntime(Runtime):
    """TFLite models timed by ``benchmark_model`` on an Android phone reached over adb."""

    name = "adb"
    extra = ""

    def __init__(self, config: RuntimeConfig, workdir: Path, runner: CommandRunner = run_command) -> None:
        super().__init__(config, workdir)
        if config.precision != "fp32":
            raise HwnasError(f"adb runtime: precision {config.precision!r} is not supported (fp32 .tflite models only)")
        self._runner = runner

    def _resolve_options(self, options: Mapping[str, Any]) -> AdbOptions:
        return AdbOptions.from_options(options)

    @classmethod
    def unavailable_reason(cls, config: RuntimeConfig, runner: CommandRunner | None = None) -> str | None:
        """None when ``adb devices`` lists the phone to use (``options.serial``, else exactly one) as ready
        and ``benchmark_model`` is executable on it."""
        try:
            options = AdbOptions.from_config(config)
        except HwnasError as exc:
            return str(exc)
        if runner is None:
            if shutil.which("adb") is None:
                return "adb is not on PATH: install Android platform-tools and connect a phone with USB debugging on"
            runner = run_command
        try:
            result = runner(["adb", "devices"], min(options.timeout_s, 30.0))
        except HwnasError as exc:
            return str(exc)
        if result.returncode != 0:
            return f"`adb devices` failed: {first_line(result.stderr or result.stdout, empty='')}"
        states = _parse_adb_devices(result.stdout)
        ready = [serial for serial, state in states.items() if state == "device"]
        listed = ", ".join(f"{serial} ({state})" for serial, state in states.items()) or "none"
        if options.serial and options.serial not in ready:
            return f"phone {options.serial!r} is not ready in `adb devices` (listed: {listed})"
        if not options.serial and not ready:
            return f"no phone ready in `adb devices` (listed: {listed}): connect one and allow USB debugging"
        if not options.serial and len(ready) > 1:
            return f"several phones attached ({', '.join(ready)}): set options.serial in the device profile"
        check = f"test -x {shlex.quote(options.benchmark_model)} && echo ok"
        try:
            found = runner([*options.adb(), "shell", check], min(options.timeout_s, 30.0))
        except HwnasError as exc:
            return str(exc)
        if "ok" not in found.stdout:
            return (
                f"benchmark_model is not executable on the phone at {options.benchmark_model}: push the "
                "android_aarch64 build there and chmod +x it (or set options.benchmark_model)"
            )
        return None

    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> AdbPreparedModel:
        """Convert to ``workdir/<name>.tflite`` and push it to the phone."""
        from hwnas.runtimes import converters

        local = converters.to_tflite(module, input_shape, self.workdir / f"{name}.tflite")
        return self.prepare_file(Path(local))

    def prepare_file(self, path: Path) -> AdbPreparedModel:
        """Push an existing ``.tflite`` file to ``options.remote_dir`` on the phone."""
        path = self._model_file(path, ".tflite", "runs")
        remote = f"{self.options.remote_dir.rstrip('/')}/{path.name}"
        self.shell(["mkdir", "-p", self.options.remote_dir])
        self._check(self._runner([*self.options.adb(), "push", str(path), remote], self.options.timeout_s))
        return AdbPreparedModel(self, remote)

    def shell(self, argv: Sequence[str]) -> CommandResult:
        """Run ``argv`` on the phone (quoted for its shell); raises on a non-zero exit status."""
        return self._check(self._runner([*self.options.adb(), "shell", shlex.join(argv)], self.options.timeout_s))

    def benchmark_command(self, remote_model: str, num_runs: int) -> list[str]:
        """The ``benchmark_model`` command line run on the phone for ``num_runs`` timed runs."""
        opts = self.options
        return [
            opts.benchmark_model,
            f"--graph={remote_model}",
            f"--num_threads={self.config.threads}",
            f"--use_xnnpack={str(opts.use_xnnpack).lower()}",
            f"--warmup_runs={opts.warmup_runs}",
            f"--warmup_min_secs={opts.warmup_min_secs:g}",
            f"--num_runs={num_runs}",
            "--min_secs=0",
            f"--max_secs={opts.max_secs:g}",
        ]

    def describe(self) -> dict[str, Any]:
        """Runtime settings plus the phone's identity (from ``getprop``) for the table fingerprint."""
        props = ("ro.product.manufacturer", "ro.product.model", "ro.board.platform", "ro.build.fingerprint")
        script = "; ".join(f"getprop {prop}" for prop in props)
        try:
            lines = self._check(self._runner([*self.options.adb(), "shell", script], 60.0)).stdout.splitlines()
        except HwnasError:
            lines = []
        phone = {prop: (lines[i].strip() if i < len(lines) else "unknown") for i, prop in enumerate(props)}
        return {
            "runtime": self.name,
            "tool": "benchmark_model",
            "benchmark_model": self.options.benchmark_model,
            "serial": self.options.serial,
            "phone": phone,
            "threads": self.config.threads,
            "precision": self.config.precision,
            "device": self.config.device,
            "options": dict(self.config.options),
        }

    def _check(self, result: CommandResult) -> CommandResult:
        if result.returncode != 0:
            output = first_line(result.stderr, empty="") or first_line(result.stdout, empty="")
            raise HwnasError(f"`{shlex.join(result.argv)}` failed (exit {result.returncode}): {output}")
        return result


class AdbPreparedModel(PreparedModel):
    """A model pushed to the phone; each timing call is one ``benchmark_model`` process."""

    def __init__(self, runtime: AdbRuntime, remote_path: str) -> None:
        self.runtime = runtime
        self.remote_path = remote_path
        self.last_result: dict[str, Any] | None = None

    def benchmark(self, num_runs: int) -> dict[str, Any]:
        """Run ``benchmark_model`` with ``num_runs`` timed runs and return its parsed statistics."""
        if num_runs < 1:
            raise HwnasError(f"benchmark_model needs at least one run, got {num_runs}")
        result = self.runtime.shell(self.runtime.benchmark_command(self.remote_path, num_runs))
        self.last_result = parse_benchmark_model_output(result.stdout + "\n" + result.stderr)
        return self.last_result

    def time_runs(self, n: int) -> list[float]:
        """``n`` copies of the average time of ``n`` runs, in seconds (benchmark_model prints no per-run times)."""
        average_s = self.benchmark(n)["inference_avg_us"] * 1e-6
        return [average_s] * n

    def run(self) -> None:
        """One inference, as one whole ``benchmark_model`` process (slow: prefer ``time_runs``)."""
        self.benchmark(1)

    def close(self) -> None:
        """Delete the pushed model from the phone."""
        try:
            self.runtime.shell(["rm", "-f", self.remote_path])
        except HwnasError:
            pass


def _parse_adb_devices(text: str) -> dict[str, str]:
    """``adb devices`` output -> ``{serial: state}`` (state: device, offline, unauthorized, ...)."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            states[parts[0]] = parts[1]
    return states


__all__ = [
    "AdbOptions",
    "AdbPreparedModel",
    "AdbRuntime",
    "CommandResult",
    "CommandRunner",
    "run_command",
]
