"""Computed peak activation memory against LiteRT's arena, for the zoo networks and sampled ``proxyless`` networks.

For each network: the computed figure (:func:`hwnas.spaces.footprint.arch_footprint` from the op specs for a
space architecture, checked against the ONNX liveness walk of its export; :func:`onnx_footprint` of the export for
a zoo network), then the network converted to ``.tflite`` as hwnas converts it (litert-torch, fp32, NHWC input),
loaded in LiteRT's interpreter with its builtin kernels (no XNNPACK delegate, which would keep the intermediates
out of the arena) and ``allocate_tensors()``:

* ``graph``: the same liveness rule applied to the ``.tflite`` graph (its own ops: the converter adds PADs);
* ``arena``: the span of the data pointers of every non-constant tensor (activations and kernel scratch such as
  im2col buffers): the bytes LiteRT's arena planner laid out.

Prints one row per network (MiB) and the rule the ratio arena / computed keeps. Conversion takes seconds to a
minute each. Usage: ``python benchmarks/memory_check.py [--n 20] [--resolution 224] [--seed 0] [--no-zoo]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hwnas.runtimes.converters import to_onnx, to_tflite
from hwnas.spaces import get_space
from hwnas.spaces.footprint import MB, arch_footprint, onnx_footprint
from hwnas.zoo import build_zoo, zoo_names


@dataclass
class CheckConfig:
    """Defaults: the six zoo networks and 20 ``proxyless`` architectures at 224 (about 10 minutes on 2 cores)."""

    n: int = 20
    resolution: int = 224
    seed: int = 0
    zoo: bool = True
    tolerance: float = 2.0  # the arena may exceed the computed peak by this fraction (PADs, scratch, planning)


def litert_memory(path: Path) -> tuple[int, int]:
    """(liveness peak of the ``.tflite`` graph's activations, span of LiteRT's arena) in bytes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the op list has no public accessor
    produced = {int(i) for op in ops for i in op["outputs"]}
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    consumed = {int(i) for op in ops for i in op["inputs"] if i >= 0}
    constants = consumed - produced - inputs
    spans: dict[int, tuple[int, int]] = {}
    for detail in interpreter.get_tensor_details():
        index = int(detail["index"])
        if index in constants:
            continue
        try:
            data = interpreter.tensor(index)()
        except ValueError:  # no data allocated (an unused or dynamic tensor)
            continue
        if data.nbytes:
            spans[index] = (data.ctypes.data, data.nbytes)
    arena = max(a + n for a, n in spans.values()) - min(a for a, _ in spans.values())
    outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    return _graph_peak(ops, inputs, outputs, {i: spans[i][1] for i in produced | inputs}), arena


def _graph_peak(ops: list[dict[str, Any]], inputs: set[int], outputs: set[int], sizes: dict[int, int]) -> int:
    """Liveness peak over the ops in order: a tensor lives from its producer (the start for an input) to its last
    reader (the end for an output)."""
    born = {i: 0 for i in inputs}
    dies: dict[int, int] = {}
    for step, op in enumerate(ops):
        born.update({int(o): step for o in op["outputs"]})
        dies.update({int(i): step for i in op["inputs"] if int(i) in sizes})
    dies.update({o: len(ops) - 1 for o in outputs})
    return max(sum(size for i, size in sizes.items() if born[i] <= step <= dies.get(i, born[i]))
               for step in range(len(ops)))


def _networks(config: CheckConfig) -> list[tuple[str, nn.Module, tuple[int, ...], Any]]:
    """(name, module, input shape, computed footprint or None for the ONNX walk)."""
    shape = (1, 3, config.resolution, config.resolution)
    rows: list[tuple[str, nn.Module, tuple[int, ...], Any]] = []
    if config.zoo:
        rows += [(name, build_zoo(name), shape, None) for name in zoo_names()]
    space = get_space("proxyless", config.resolution)
    for index, arch in enumerate(space.sample_archs(config.n, random.Random(config.seed))):
        rows.append((f"proxyless#{index}", space.build(arch).eval(), space.input_shape, arch_footprint(space, arch)))
    return rows


def run(config: CheckConfig) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwnas-memory-") as tmp:
        for name, module, shape, computed in _networks(config):
            onnx = onnx_footprint(to_onnx(module, shape, Path(tmp) / f"{name}.onnx"))
            if computed is not None and computed != onnx:
                raise AssertionError(f"{name}: spec rules {computed} != ONNX walk {onnx}")
            graph, arena = litert_memory(to_tflite(module, shape, Path(tmp) / f"{name}.tflite"))
            rows.append({"network": name, "params": onnx.params_bytes, "computed": onnx.peak_activation_bytes,
                         "graph": graph, "arena": arena})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(row: dict[str, Any]) -> str:
    computed = row["computed"]
    return (f"| {row['network']:<20} | {row['params'] / MB:6.2f} | {computed / MB:7.3f} | {row['graph'] / MB:7.3f} | "
            f"{row['arena'] / MB:7.3f} | {row['graph'] / computed:5.2f} | {row['arena'] / computed:5.2f} |")


def summary(rows: list[dict[str, Any]], tolerance: float) -> str:
    """The spread of both ratios and how many arenas lie within ``[1, 1 + tolerance]`` x the computed peak."""
    lines = []
    for key in ("graph", "arena"):
        ratios = sorted(row[key] / row["computed"] for row in rows)
        within = sum(1.0 <= r <= 1.0 + tolerance for r in ratios)
        lines.append(f"{key} / computed: min {ratios[0]:.2f}, median {ratios[len(ratios) // 2]:.2f}, max "
                     f"{ratios[-1]:.2f}; within [1, {1 + tolerance:.2f}] for {within} of {len(ratios)}")
    return "\n".join(lines)


def parse_config(argv: list[str] | None, defaults: Any, description: str) -> Any:
    """``defaults`` (a config dataclass with n, resolution, seed, tolerance, zoo) with the command line's values:
    the options this benchmark and memory_torch.py share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=defaults.n, help="sampled proxyless architectures")
    parser.add_argument("--resolution", type=int, default=defaults.resolution)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance)
    parser.add_argument("--no-zoo", dest="zoo", action="store_false", help="only the sampled architectures")
    return dataclasses.replace(defaults, **vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv, CheckConfig(), __doc__.splitlines()[0])
    print(f"batch 1, fp32, resolution {config.resolution}; MiB")
    print("| network              | params | computed | tflite graph | LiteRT arena | graph / computed | "
          "arena / computed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(summary(run(config), config.tolerance))


if __name__ == "__main__":
    main()
