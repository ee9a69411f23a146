"""Computed peak activation memory against PyTorch's CPU allocator, for the zoo networks and sampled ``proxyless``
networks: a second runtime beside LiteRT's arena (``memory_check.py``), with no conversion at all.

Each network runs as torch runs it at inference (batch 1, fp32, ``torch.inference_mode()``), with each BatchNorm
folded into the conv before it and the activation after such a conv writing in place over the conv's output (its
only reader), so the graph is the one :mod:`hwnas.spaces.footprint` counts: conv + BN + activation is one tensor.
A :class:`PeakTracker` (a ``TorchDispatchMode``) sees every op's output: it adds a storage's bytes the first time
one appears and subtracts them when the allocator frees it (``weakref.finalize`` on the storage), the input
counted from the start, parameters and buffers never; its running maximum is the peak of live activation bytes.
Kernel scratch inside one op (mkldnn reorders, im2col) is not an op output and is not counted.

Prints one row per network (MiB): the computed peak (``arch_footprint`` for a space architecture, the ONNX walk
of hwnas's export for a zoo network, as ``memory_check.py`` gets them), torch's peak, their ratio and the op at
torch's peak. Takes a few minutes. Usage:
``python benchmarks/memory_torch.py [--n 20] [--resolution 224] [--seed 0] [--no-zoo]``.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hwnas.ops import OpSpec
from hwnas.ops.specs import DWSepSpec, MBConvSpec
from hwnas.runtimes.converters import to_onnx
from hwnas.spaces.footprint import MB, onnx_footprint, spec_peak_activation_elements

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_check import CheckConfig, _networks, parse_config  # noqa: E402


@dataclass
class TorchCheckConfig(CheckConfig):
    """Defaults: the six zoo networks and 20 ``proxyless`` architectures at 224 (a few minutes on 2 cores)."""

    tolerance: float = 0.45  # torch's peak may differ from the computed one by this fraction
    fold_atol: float = 1e-4  # the folded network's outputs equal the original's within this


class PeakTracker(TorchDispatchMode):
    """Live activation bytes as the allocator holds them: each op output's storage counts from the op that makes
    it to the moment it is freed; ``peak`` is the largest sum, ``peak_op`` the op whose output reached it."""

    def __init__(self, excluded: set[int] | None = None) -> None:
        super().__init__()
        self.excluded = set(excluded or ())  # data pointers of parameters and buffers
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        self.peak_op = ""

    def track(self, tensor: torch.Tensor, op: str = "input") -> None:
        """Count ``tensor``'s storage from now until it is freed (once, however many views share it)."""
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() == 0 or key in self.excluded or key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        weakref.finalize(storage, self._free, key)
        if self.current > self.peak:
            self.peak, self.peak_op = self.current, op

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor, f"{func.__name__}{tuple(tensor.shape)}")
        return out


def torch_peak(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, str]:
    """(peak live activation bytes of one batch-``shape[0]`` forward pass, the op at the peak)."""
    excluded = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    with torch.inference_mode():
        image = torch.randn(shape)
        tracker = PeakTracker(excluded)
        with tracker:
            tracker.track(image)
            out = module(image)
        del out
    return tracker.peak, tracker.peak_op


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``module`` with every BatchNorm folded into the conv before it (in a Sequential) and
    the activation after that conv made in place (the conv's output has no other reader)."""
    folded = copy.deepcopy(module).eval()
    for container in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(container) - 1):
            conv, bn = container[index], container[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                container[index], container[index + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                if index + 2 < len(container) and hasattr(container[index + 2], "inplace"):
                    container[index + 2].inplace = True
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise AssertionError(f"BatchNorm not after a conv in a Sequential, not folded: {left}")
    return folded


def checked_fold(module: nn.Module, shape: tuple[int, ...], atol: float) -> nn.Module:
    """:func:`fold_batchnorm`, checked to give the same outputs as ``module`` within ``atol``."""
    folded = fold_batchnorm(module)
    with torch.inference_mode():
        image = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        error = (module.eval()(image.clone()) - folded(image.clone())).abs().max().item()
    if error > atol:
        raise AssertionError(f"folding BatchNorm changed the outputs by {error:.2e} > {atol}")
    return folded


def torch_rule_elements(spec: OpSpec) -> int:
    """Peak elements of one op as eager torch runs hwnas's module for it (BN folded, conv activations in place).

    Differs from :func:`hwnas.spaces.footprint.spec_peak_activation_elements` where torch holds or allocates more:
    the op's input ``x`` stays referenced by the caller (the enclosing Sequential's loop variable, the block's
    ``forward`` argument) until the op returns, a Sequential's current input until its step returns, the
    residual add and the SE gate multiply allocate a new tensor, and the channel shuffle copies ``E``.
    """
    x = spec.cin * spec.size**2
    if isinstance(spec, DWSepSpec):  # x stays referenced through both steps
        return x + spec.cin * spec.out_size**2 + spec.cout * spec.out_size**2
    if not isinstance(spec, MBConvSpec):  # one step: input and output, as the counted graph has them
        return spec_peak_activation_elements(spec)
    expanded, depthwise = spec.mid * spec.size**2, spec.mid * spec.out_size**2
    projected = spec.cout * spec.out_size**2
    steps = [depthwise + (expanded if spec.pw else 0)]  # the body's input (E, or x itself) beside D
    if spec.pw:
        steps += [expanded, 2 * expanded] if spec.g > 1 else [expanded]
    if spec.se:  # x * gate: D, the gate and the new product
        steps.append(2 * depthwise + spec.mid)
    steps.append(depthwise + projected)
    if spec.residual:  # out + x: a new tensor beside the projection
        steps.append(2 * projected)
    return x + max(steps)


def torch_rule_peak(specs: list[OpSpec], bytes_per_element: int = 4) -> int:
    """Peak bytes of ops in sequence under :func:`torch_rule_elements`; the image stays alive throughout (the
    network's ``forward`` argument), so every op after the first holds it beside its own peak."""
    image = specs[0].cin * specs[0].size**2
    peaks = [torch_rule_elements(spec) + (image if index else 0) for index, spec in enumerate(specs)]
    return max(peaks) * bytes_per_element


def run(config: TorchCheckConfig) -> list[dict[str, Any]]:
    rows = []
    networks = _networks(config)
    with tempfile.TemporaryDirectory(prefix="hwnas-memory-torch-") as tmp:
        for name, module, shape, computed in networks:
            if computed is None:  # a zoo network: the ONNX walk of hwnas's export
                computed = onnx_footprint(to_onnx(module, shape, Path(tmp) / f"{name}.onnx"))
            peak, op = torch_peak(checked_fold(module, shape, config.fold_atol), shape)
            rule = torch_rule_peak(module.specs) if hasattr(module, "specs") else None  # a space's ArchNet
            rows.append({"network": name, "computed": computed.peak_activation_bytes, "torch": peak, "rule": rule,
                         "op": op})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(row: dict[str, Any]) -> str:
    rule = "-" if row["rule"] is None else f"{row['rule'] / MB:7.3f}"
    return (f"| {row['network']:<20} | {row['computed'] / MB:7.3f} | {row['torch'] / MB:7.3f} | "
            f"{row['torch'] / row['computed']:5.2f} | {rule} | {row['op']} |")


def summary(rows: list[dict[str, Any]], tolerance: float) -> str:
    """The spread of torch / computed, how many lie within ``1 +- tolerance``, and how many equal the torch rule."""
    ratios = sorted(row["torch"] / row["computed"] for row in rows)
    within = sum(abs(r - 1.0) <= tolerance for r in ratios)
    ruled = [row for row in rows if row["rule"] is not None]
    exact = sum(row["rule"] == row["torch"] for row in ruled)
    return (f"torch / computed: min {ratios[0]:.2f}, median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f}; "
            f"within {tolerance:.0%} for {within} of {len(ratios)}\n"
            f"torch = torch rule, to the byte, for {exact} of {len(ruled)}")


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv, TorchCheckConfig(), __doc__.splitlines()[0])
    torch.set_num_threads(1)
    print(f"batch 1, fp32, resolution {config.resolution}; MiB")
    print("| network              | computed | torch | torch / computed | torch rule | op at torch's peak |")
    print("|---|---:|---:|---:|---:|---|")
    print(summary(run(config), config.tolerance))


if __name__ == "__main__":
    main()
