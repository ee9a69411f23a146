"""End-to-end latency of a whole network on a device (what tables and predictors are checked against)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from hwnas.devices import DeviceProfile, device_protocol
from hwnas.errors import HwnasError
from hwnas.runtimes import PreparedModel, Runtime, get_runtime
from hwnas.runtimes.machine_state import LoadWatcher
from hwnas.runtimes.protocol import Stats, measure
from hwnas.spaces import Architecture, get_space


def torchvision_model(name: str, resolution: int = 224) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """An untrained torchvision classifier (no weights are downloaded) and its input shape."""
    try:
        import torchvision.models as models
    except Exception as exc:  # torchvision is optional and often fails to import beside a CPU torch
        raise HwnasError(f"torchvision:{name}: torchvision is not importable here ({exc.__class__.__name__}); install "
                         "it beside a matching torch, or export the model to .onnx and bench that file") from None
    try:
        module = models.get_model(name, weights=None)
    except ValueError:
        raise HwnasError(f"torchvision:{name}: unknown model (see torchvision.models.list_models())") from None
    return module.eval(), (1, 3, resolution, resolution)


def prepare_target(runtime: Runtime, target: str, name: str = "target") -> PreparedModel:
    """Prepare an architecture JSON, an ``.onnx``/``.tflite`` file or ``torchvision:NAME`` for ``runtime``."""
    if target.startswith("torchvision:"):
        module, shape = torchvision_model(target.split(":", 1)[1])
        return runtime.prepare(module, shape, name)
    path = Path(target)
    if path.suffix in (".onnx", ".tflite"):
        if not path.is_file():
            raise HwnasError(f"{path}: no such model file")
        return runtime.prepare_file(path)
    if path.suffix == ".json":
        arch = Architecture.load(path)
        space = get_space(arch.space, arch.resolution, arch.num_classes)
        return runtime.prepare(space.build(arch).eval(), space.input_shape, name)
    raise HwnasError(f"{target}: expected an architecture .json, an .onnx or .tflite file, or torchvision:NAME")


def bench(device: DeviceProfile, target: str, protocol_overrides: dict[str, Any] | None = None,
          machine: dict[str, Any] | None = None) -> Stats:
    """Measure ``target`` end to end on ``device`` with the device's measurement protocol. An interruption (Ctrl-C,
    SIGTERM) removes the temporary folder and says that nothing was kept: bench writes no partial result.
    ``machine``, when given, receives what the load watcher saw (:class:`MachineState`'s fields; empty when it
    cannot read /proc)."""
    protocol = device_protocol(device, protocol_overrides)
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as tmp:
            runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp))
            prepared = prepare_target(runtime, target)
            watcher = LoadWatcher("model")  # other processes' load while timing: one line at the end
            try:
                stats = measure({"target": prepared}, protocol, on_done=lambda _, s: watcher.note(s))["target"]
            finally:
                prepared.close()
        state = watcher.warn()
        if machine is not None and state is not None:
            machine.update(state.to_dict())
        return stats
    except KeyboardInterrupt:
        raise KeyboardInterrupt("bench keeps no partial measurement; rerun it to measure") from None
