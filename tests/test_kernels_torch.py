"""The torch kernel backend: its splitter against torch.profiler's own op list, ONNX files split as eager runs them,
single-kernel modules that are exactly one kernel, and neighbours that stay the same kind of kernel."""

from __future__ import annotations

import collections
import dataclasses
import random
from pathlib import Path

import pytest
import torch
from torch.profiler import profile

from hwnas.errors import HwnasError
from hwnas.latency.kernels.backends import kernel_backend
from hwnas.latency.kernels.record import Kernel
from hwnas.latency.kernels.torch_models import kernel_module
from hwnas.latency.kernels.torch_split import chw, split_module
from hwnas.runtimes import RuntimeConfig, get_runtime
from hwnas.runtimes.converters import cached_onnx, example_input
from hwnas.spaces import get_space
from hwnas.zoo import build_zoo

RES = 64  # every check here holds at any resolution; 64 keeps each forward pass and export short
SHAPE = (1, 3, RES, RES)
BACKEND = kernel_backend("torch")
FREE = BACKEND.free_types
CONVS = ("conv", "pwconv", "dwconv", "gconv")


def _proxyless() -> tuple[torch.nn.Module, tuple[int, ...]]:
    space = get_space("proxyless", 96)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return space.build(space.random_arch(random.Random(3))).eval(), tuple(space.input_shape)


NETWORKS = {"resnet18": lambda: (build_zoo("resnet18"), SHAPE),
            "shufflenet_v2": lambda: (build_zoo("shufflenet_v2"), SHAPE),
            "mobilenet_v3_large": lambda: (build_zoo("mobilenet_v3_large"), SHAPE),
            "efficientnet_b0": lambda: (build_zoo("efficientnet_b0"), SHAPE),
            "proxyless": _proxyless}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return get_runtime("torch", RuntimeConfig(threads=1), tmp_path_factory.mktemp("torch-rt"))


@pytest.fixture(scope="module")
def seeds() -> dict[str, list[Kernel]]:
    """The kernels of every network here, by network."""
    return {name: split_module(*make()) for name, make in NETWORKS.items()}


def _subtree(event) -> list[str]:  # noqa: ANN001 - a profiler FunctionEvent
    return [name for child in event.cpu_children for name in (child.name, *_subtree(child))]


def _profiled(module: torch.nn.Module, shape: tuple[int, ...]) -> list:
    """torch.profiler's top-level aten events of one inference-mode forward pass (what eager dispatches)."""
    x = example_input(shape)
    with torch.inference_mode(), profile(record_shapes=True) as prof:
        module.eval()(x)
    return [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2", "mobilenet_v3_large", "proxyless"])
def test_split_network_is_the_profilers_op_list(name: str, seeds: dict[str, list[Kernel]]) -> None:
    """Same ops in the same order, same input shapes, conv stride/groups as the profiler recorded them, and a free
    alias exactly where the profiler saw no copy below the op (a reshape of a transposed view copies)."""
    module, shape = NETWORKS[name]()
    kernels, events = seeds[name], _profiled(module, shape)
    assert [k.op for k in kernels] == [e.name.replace("aten::", "aten.") for e in events]
    for kernel, event in zip(kernels, events):
        copies = {"aten::clone", "aten::copy_"} & set(_subtree(event))
        if kernel.type in FREE:
            assert not copies, kernel.key
        if kernel.type == "copy":
            assert copies, kernel.key
        if kernel.type in CONVS:
            assert list(event.concrete_inputs[3]) == [kernel.s] * 2 and event.concrete_inputs[6] == kernel.g
        if kernel.type != "concat":
            assert chw(event.input_shapes[0]) == (kernel.cin, kernel.hin, kernel.win), kernel.key
    if name == "shufflenet_v2":
        counts = collections.Counter(k.type for k in kernels)
        assert counts["copy"] == 16 and counts["concat"] == 16 and counts["norm"] == 56


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2", "mobilenet_v3_large"])
def test_split_file_of_the_export_is_the_network_without_batchnorm(name: str, seeds: dict[str, list[Kernel]],
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    module, shape = NETWORKS[name]()
    path = cached_onnx(module, shape, tmp_path_factory.mktemp("onnx"), name)
    from_file = BACKEND.split_file(path, BACKEND.block())

    def work(kernels: list[Kernel]) -> collections.Counter:
        return collections.Counter(k.type for k in kernels if k.type not in FREE)

    network = work(seeds[name])
    assert network["norm"] > 0 and work(from_file)["norm"] == 0  # the export folds each BatchNorm into its conv
    del network["norm"]
    assert work(from_file) == network
    convs = [(k.type, k.cin, k.hin, k.cout, k.hout, k.k, k.s, k.g) for k in from_file if k.type in CONVS]
    assert convs == [(k.type, k.cin, k.hin, k.cout, k.hout, k.k, k.s, k.g) for k in seeds[name] if k.type in CONVS]
    for kernel in {k.key: k for k in _work(from_file)}.values():  # what eager runs for the file, one by one
        module, module_shape = kernel_module(kernel)
        assert [k.key for k in _work(split_module(module, module_shape))] == [kernel.key]


def test_split_file_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    text = tmp_path / "model.tflite"
    text.write_bytes(b"TFL3")
    with pytest.raises(HwnasError, match="reads .onnx files"):
        BACKEND.split_file(text, 1)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(HwnasError, match="empty.onnx"):
        BACKEND.split_file(empty, 1)


def _work(kernels: list[Kernel]) -> list[Kernel]:
    return [k for k in kernels if k.type not in FREE]


def _extra_kernels() -> list[Kernel]:
    """Ops no seed network here dispatches but a network or an ONNX graph may."""
    return [Kernel("gconv", "aten.conv2d", 32, 9, 9, 64, 5, 5, k=3, s=2, g=4),
            Kernel("conv", "aten.convolution", 8, 10, 10, 16, 10, 10, k=5),
            Kernel("pool", "aten.avg_pool2d", 16, 9, 9, 16, 4, 4, k=3, s=2),
            Kernel("pad", "aten.pad", 8, 6, 6, 8, 8, 8), Kernel("gemm", "aten.addmm", 64, 1, 1, 10, 1, 1),
            Kernel("gemm", "aten.matmul", 64, 1, 1, 10, 1, 1),
            Kernel("act", "aten.relu", 8, 5, 5, 8, 5, 5, act="Relu"),
            Kernel("copy", "aten.contiguous", 8, 4, 4, 8, 4, 4), Kernel("concat", "aten.cat", 9, 3, 3, 9, 3, 3, n=3)]


def test_every_kernel_type_runs_alone_as_exactly_that_kernel(seeds: dict[str, list[Kernel]], runtime,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    by_op: dict[tuple[str, str], Kernel] = {}
    for kernel in [k for kernels in seeds.values() for k in _work(kernels)] + _extra_kernels():
        by_op.setdefault((kernel.type, kernel.op), kernel)
    assert {"conv", "pwconv", "dwconv", "gconv", "norm", "act", "add", "mul", "pool", "gpool", "gemm", "concat",
            "copy", "pad"} <= {t for t, _ in by_op}
    for kernel in by_op.values():
        module, shape = kernel_module(kernel)
        assert [k.key for k in _work(split_module(module, shape))] == [kernel.key]
        model = BACKEND.prepare_kernel(runtime, kernel, tmp_path, 1)
        model.run()
        model.close()


def test_inplace_activation_input_stays_normal(runtime, tmp_path: Path) -> None:  # noqa: ANN001
    """hardswish_ on its own output drives negative inputs through denormals (slow) to zero: the prepared input
    holds values it leaves unchanged."""
    kernel = Kernel("act", "aten.hardswish_", 16, 8, 8, 16, 8, 8, act="HardSwish")
    model = BACKEND.prepare_kernel(runtime, kernel, tmp_path, 1)
    for _ in range(200):
        model.run()
    assert model.input.abs().min() > 1.0  # from N(0, 1) values, 200 runs leave many below 1e-30
    model.close()


def test_neighbours_keep_type_op_and_run(seeds: dict[str, list[Kernel]], runtime,  # noqa: ANN001
                                         tmp_path: Path) -> None:
    rng = random.Random(0)
    pool = list({k.key: k for k in _work(seeds["mobilenet_v3_large"] + seeds["shufflenet_v2"])}.values())
    made = 0
    while made < 50:
        kernel = rng.choice(pool)
        h = max(1, min(64, round(kernel.hin * 2 ** rng.uniform(-1.5, 1.5))))
        c_in = max(8, min(512, round(kernel.cin * 2 ** rng.uniform(-1.5, 1.5))))
        c_out = max(8, min(512, round(kernel.cout * 2 ** rng.uniform(-1.5, 1.5))))
        fields = BACKEND.neighbour(kernel, rng, 1, h, c_in, c_out)
        assert fields is not None, kernel.key
        new = dataclasses.replace(kernel, win=fields["hin"], wout=fields["hout"], **fields)
        assert (new.type, new.op, new.bcast, new.n) == (kernel.type, kernel.op, kernel.bcast, kernel.n)
        if new.type == "dwconv":
            assert new.cin == new.cout == new.g
        module, shape = kernel_module(new)
        assert [k.key for k in _work(split_module(module, shape))] == [new.key]
        model = BACKEND.prepare_kernel(runtime, new, tmp_path, 1)
        model.run()
        model.close()
        made += 1


def test_free_and_other_kernels_are_not_built() -> None:
    assert BACKEND.neighbour(Kernel("reshape", "aten.view", 8, 4, 4, 8, 4, 4), random.Random(0), 1, 4, 8, 8) is None
    with pytest.raises(HwnasError, match="no single-kernel torch module"):
        kernel_module(Kernel("other", "onnx.Einsum", 8, 4, 4, 8, 4, 4))
