"""The LiteRT kernel backend: its split against the interpreter's own op list, single-operator models, neighbours."""

from __future__ import annotations

import collections
import dataclasses
import random
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert.interpreter")

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.latency.kernels.backends import kernel_backend  # noqa: E402
from hwnas.latency.kernels.litert_split import op_names, read_tflite  # noqa: E402
from hwnas.latency.kernels.record import Kernel  # noqa: E402
from hwnas.runtimes.base import RuntimeConfig  # noqa: E402
from hwnas.runtimes.litert_rt import LiteRTRuntime  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return kernel_backend("litert")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return LiteRTRuntime(RuntimeConfig(threads=1, options={"xnnpack": True}), tmp_path_factory.mktemp("litert"))


@pytest.fixture(scope="module")
def converted(litert_pairs) -> dict[str, Path]:
    """Two zoo networks and one proxyless architecture at 64 (converted once a session: tests/conftest.py)."""
    return {name: tflite for name, (_, tflite) in litert_pairs.items()}


def _interpreter_ops(path: Path) -> collections.Counter:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return collections.Counter(d["op_name"] for d in interpreter._get_ops_details() if d["op_name"] != "DELEGATE")


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "shufflenet_v2", "proxyless"])
def test_split_matches_interpreter_ops(backend, converted, name):
    """Every interpreter op is one kernel, except a zero PAD read only by a conv (folded into it by XNNPACK)."""
    path = converted[name]
    kernels = backend.split_file(path, 1)
    ops = _interpreter_ops(path)
    model = read_tflite(path)
    graph, names = model.subgraphs[0], op_names(model)
    readers: dict[int, list[str]] = {}
    for i, op in enumerate(graph.operators):
        for tensor in set(int(t) for t in op.inputs):
            readers.setdefault(tensor, []).append(names[i])
    folded = [op for i, op in enumerate(graph.operators)
              if names[i] == "PAD" and readers[int(op.outputs[0])] in (["CONV_2D"], ["DEPTHWISE_CONV_2D"])]
    assert folded, "the strided convs of these networks read a folded PAD"
    mine = collections.Counter(k.op.removeprefix("tfl.") for k in kernels)
    mine["PAD"] += len(folded)
    assert mine == ops
    for kernel in kernels:  # a conv that read a folded PAD records its unpadded input: a SAME-size output
        if kernel.type in ("conv", "dwconv") and kernel.k > 1:
            assert kernel.hout == -(-kernel.hin // kernel.s), kernel.key


def test_split_records_ops_and_acts(backend, converted):
    kernels = backend.split_file(converted["mobilenet_v3_large"], 1)
    types = collections.Counter(k.type for k in kernels)
    assert types["act"] and types["gpool"] and types["dwconv"] and types["pwconv"]
    assert any(k.type == "mul" and k.bcast == 1 and k.hin > 1 for k in kernels)  # SE scaling
    assert any(k.act == "HARD_SWISH" and k.type == "act" for k in kernels)
    assert any(k.act == "RELU" and k.type == "dwconv" for k in kernels)
    shuffle = backend.split_file(converted["shufflenet_v2"], 1)
    assert {k.n for k in shuffle if k.type == "transpose"} == {4, 5}
    assert any(k.type == "reshape" for k in shuffle) and "reshape" in backend.free_types


def _kernel(type_: str, op: str, c: int = 24, h: int = 14, cout: int | None = None, hout: int | None = None,
            **fields) -> Kernel:
    cout, hout = cout or c, hout or h
    return Kernel(type=type_, op=op, cin=c, hin=h, win=h, cout=cout, hout=hout, wout=hout, **fields)


SINGLE = [
    _kernel("conv", "tfl.CONV_2D", 16, 28, 32, 14, k=3, s=2, act="RELU6"),
    _kernel("pwconv", "tfl.CONV_2D", 16, 14, 48, k=1, act="none"),
    _kernel("gconv", "tfl.CONV_2D", 16, 14, 32, k=3, g=4, act="RELU"),
    _kernel("dwconv", "tfl.DEPTHWISE_CONV_2D", 24, 28, 24, 14, k=5, s=2, g=24, act="RELU"),
    _kernel("pool", "tfl.MAX_POOL_2D", 16, 30, 16, 14, k=3, s=2),
    _kernel("pool", "tfl.AVERAGE_POOL_2D", 16, 14, 16, 7, k=2, s=2),
    _kernel("gpool", "tfl.MEAN", 32, 7, 32, 1),
    _kernel("gemm", "tfl.FULLY_CONNECTED", 64, 1, 10, 1),
    _kernel("act", "tfl.HARD_SWISH", act="HARD_SWISH"),
    _kernel("act", "tfl.LOGISTIC", act="LOGISTIC"),
    _kernel("act", "tfl.MUL", 32, 1, act="MUL_CONST"),
    _kernel("add", "tfl.ADD", act="RELU"),
    _kernel("mul", "tfl.MUL", bcast=1),
    _kernel("concat", "tfl.CONCATENATION", 48, n=2),
    _kernel("split", "tfl.SLICE", 48, cout=24),
    _kernel("split", "tfl.SPLIT", 48, n=2),
    _kernel("transpose", "tfl.TRANSPOSE", 48, n=4),
    _kernel("transpose", "tfl.TRANSPOSE", 48, n=5),
    _kernel("pad", "tfl.PAD", 16, 14, 16, 16),
    _kernel("pad", "tfl.PADV2", 16, 14, 16, 16),
]


@pytest.mark.parametrize("kernel", SINGLE, ids=lambda k: f"{k.type}-{k.op}-{k.act}-n{k.n}")
def test_single_kernel_model_is_that_one_op(backend, runtime, tmp_path, kernel):
    prepared = backend.prepare_kernel(runtime, kernel, tmp_path, 1)
    try:
        prepared.run()
        interpreter = prepared.interpreter
        ops = [d["op_name"] for d in interpreter._get_ops_details() if d["op_name"] != "DELEGATE"]
        assert ops == [kernel.op.removeprefix("tfl.")]
        elements = int(interpreter.get_output_details()[0]["shape"].prod())
        assert elements in (kernel.output_elements, kernel.output_elements // kernel.n)  # SPLIT: n parts
    finally:
        prepared.close()
    assert not list(tmp_path.glob("*.tflite"))  # the file is removed once loaded


def test_every_split_type_is_preparable(backend, runtime, converted, tmp_path):
    """The kernels of the converted networks (one of each type/op/act) all prepare, run, and are one op."""
    seen: dict[tuple, Kernel] = {}
    for path in converted.values():
        for kernel in backend.split_file(path, 1):
            if kernel.type not in backend.free_types:
                seen.setdefault((kernel.type, kernel.op, kernel.act, kernel.bcast, kernel.n), kernel)
    for kernel in seen.values():
        prepared = backend.prepare_kernel(runtime, kernel, tmp_path, 1)
        prepared.run()
        ops = [d["op_name"] for d in prepared.interpreter._get_ops_details() if d["op_name"] != "DELEGATE"]
        assert ops == [kernel.op.removeprefix("tfl.")], kernel.key
        prepared.close()


def test_neighbours_stay_valid(backend, runtime, converted, tmp_path):
    seeds = [k for k in backend.split_file(converted["mobilenet_v3_large"], 1) if k.type not in backend.free_types]
    rng = random.Random(0)
    made = 0
    while made < 50:
        seed = rng.choice(seeds)
        fields = backend.neighbour(seed, rng, 1, rng.choice((7, 14, 28, 56)), rng.choice((16, 40, 96, 240)),
                                   rng.choice((24, 80, 160)))
        if fields is None:
            continue
        kernel = dataclasses.replace(seed, win=fields["hin"], wout=fields["hout"], **fields)
        assert (kernel.type, kernel.op) == (seed.type, seed.op)
        if kernel.type == "dwconv":
            assert kernel.cin == kernel.cout == kernel.g
        if kernel.type in ("add", "mul"):
            assert kernel.bcast == seed.bcast and (kernel.hin == 1) == (seed.hin == 1)
        prepared = backend.prepare_kernel(runtime, kernel, tmp_path, 1)
        prepared.run()
        prepared.close()
        made += 1


def test_split_file_rejects_other_files(backend, tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(HwnasError, match="not a .tflite model"):
        backend.split_file(bad, 1)
    bogus = tmp_path / "net.onnx"
    bogus.write_bytes(b"not a protobuf model at all")
    with pytest.raises(HwnasError, match="net.onnx"):
        backend.split_file(bogus, 1)
    with pytest.raises(HwnasError, match=r"reads \.tflite or \.onnx files, not '\.pt'"):
        backend.split_file(tmp_path / "model.pt", 1)
    assert backend.file_suffixes == (".tflite", ".onnx")
