"""The kernel predictor as a latency estimator of one search space, so a search can aim with it.

Every op a network of the space can contain (the fixed prefix and suffix, the head included, and each candidate of
each searchable layer) is exported on its own as the profiler exports it (:func:`~hwnas.latency.profile.
build_measured_op`, cached by content hash) and split into the kernels ONNX Runtime runs. With ``S_g(op)`` the
kernel predictor's summed cost of the op's kernels of group ``g`` (reference units) and ``a_g`` its group weights,
the network's weighted kernel sum is additive over layers::

    T(arch) = T_fixed + sum_l t[l, a_l],        t[l, i] = sum_g a_g * S_g(candidate i of layer l)

and the latency is the kernel predictor's formula, exactly (non-additive through the power only)::

    latency_ms(arch) = (overhead + c * T(arch) ** p) * reference_ms        (c = p = 1 for the linear form)

Layouts between ops. Split alone, an op reads its input through a ``ReorderInput`` and writes its output through a
``ReorderOutput``; inside a network, consecutive blocked (NCHWc) ops pass the blocked tensor on with no reorder, and a
residual ``Add`` whose input is blocked fuses into the projection conv. So each op is split in its place
(:func:`place_ops`): its input arrives as the op before left it (blocked after an MBConv, NCHW after the head's
``ReduceMean``; the first op reads the network's NCHW input), an op that reads it in the other layout pays the
reorder, and its output is left as it is, except the network's last op's (NCHW). No reorder is counted twice or
dropped: on proxyless@64 (20 random architectures, the shipped cpu-onnxruntime kernel predictor) the per-op kernels
are the whole network's kernels key for key, and ``latency_ms`` / :meth:`KernelPredictor.predict_arch` (the whole
network exported and split) is 1 to within 4e-16 (tests/test_kernel_space.py); the same on tiny@32 and
proxyless@128. Where a layer's candidates leave different layouts (fbnet-cifar100's grouped convs with their channel
shuffle leave NCHW, its MBConvs blocked), the boundary's cost depends on the pair of ops, which an additive model
cannot hold: the NCHW ones pay a ``ReorderInput`` and the next layer reads blocked; there the ratio was 0.974 to 1.006
(fbnet-cifar100@32, 20 random architectures).

Linearized. ``layer_costs_ms``/``fixed_ms`` are the sum at ``c = p = 1``. :meth:`KernelSpacePredictor.anchored` at
``a``, for the decoder and the loss, is the tangent at ``T(a)``::

    cost[l, i] = g * t[l, i] * reference_ms,      g = c * p * T(a) ** (p - 1),
    fixed = (overhead + c * T(a) ** p - g * (T(a) - T_fixed)) * reference_ms

so one-hot probabilities at ``a`` give ``latency_ms(a)``, every anchor orders architectures by ``T`` (the latency
increases with ``T``), and for ``p <= 1`` (0.80 in the shipped predictor) the tangent lies above the curve: every
architecture it puts under a target is under it. The decoder, anchored at the most probable architecture, then found
the brute-force optimum under every target (tiny@32: 30 random distributions x 5 targets); linearized by the shares
instead (the chord through the overhead, as the terms below), it fell back to the fastest architecture in 30 of 150.
``expected_latency_ms`` is the formula at the expected sum, exact for one-hot probabilities, with the tangent's
gradient: ``(overhead + c * E[T] ** p) * reference_ms``. The terms of a prediction are shares: each layer's kernels'
share ``t[l, a_l] * c * T ** p / T`` of the corrected sum (as the kernel predictor's per-kernel terms), the fixed term
the prefix's and suffix's shares plus the overhead.

Its figures are at the kernel predictor's level (its generic reference network), not at the level of the space's
reference network a search pairs with: ``reference_ms`` is None, and the search measures end to end.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.latency.kernels.fusion import fuse
from hwnas.latency.kernels.nchwc import NchwcLayout
from hwnas.latency.kernels.onnx_graph import OnnxGraph
from hwnas.latency.kernels.record import Kernel
from hwnas.latency.predictors.base import PredictorMeta, SpacePredictor
from hwnas.latency.predictors.kernel import GROUPS, KernelPredictor, _network_ratio, kernel_group
from hwnas.latency.predictors.prediction import Prediction, unsupported
from hwnas.ops import OpSpec
from hwnas.spaces import Architecture, SearchableLayer, SearchSpace

OpPlace = tuple[bool, str]  # (its input arrives blocked, what it does with its output: one of OUTPUTS)
OpSplit = tuple[list[Kernel], bool]  # an op's kernels in place, and whether it leaves its output blocked
OUTPUTS = ("left", "blocked", "nchw")  # as the op leaves it / reordered to blocked / to NCHW (the network's output)


class _InNetworkLayout(NchwcLayout):
    """ORT's NCHWc transformer over one op as it runs inside a network (see the module docstring): the input arrives
    blocked when the op before left it so; the output is left as the op leaves it, or reordered (``OUTPUTS``)."""

    def __init__(self, graph: OnnxGraph, block: int, place: OpPlace) -> None:
        super().__init__(graph, fuse(graph), block)
        self.input_blocked, self.output = place

    def run(self) -> list[Kernel]:
        if self.input_blocked and self.block > 1:
            for name in self.graph.inputs:
                self.nchw.discard(name)
                self._make_blocked(name, {"op": "input"})
        return super().run()

    def _need_nchw(self, name: str) -> None:
        if name not in self.graph.outputs or self.output == "nchw":
            super()._need_nchw(name)
        elif self.output == "blocked" and self.block > 1:
            self._need_blocked(name)

    @property
    def output_blocked(self) -> bool:
        return any(name in self.blocked and name not in self.nchw for name in self.graph.outputs)


def split_in_network(model: Any, block: int, place: OpPlace, source: str = "op") -> OpSplit:
    """The kernels of one op's static-shape ``onnx.ModelProto`` as ORT runs them inside a network, and whether the
    op leaves its output blocked."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise HwnasError(f"{source}: ONNX shape inference failed ({exc.__class__.__name__})") from None
    layout = _InNetworkLayout(OnnxGraph(model, source), block, place)
    return layout.run(), layout.output_blocked


def op_split(spec: OpSpec, block: int, place: OpPlace, folder: Path) -> OpSplit:
    """One op exported alone as the profiler exports it (reused from ``folder`` by content hash), then split."""
    from hwnas.latency.kernels.onnx_split import read_onnx
    from hwnas.latency.profile import build_measured_op
    from hwnas.runtimes.converters import cached_onnx

    path = cached_onnx(build_measured_op(spec), spec.input_shape, folder, spec.key())
    return split_in_network(read_onnx(path), block, place, spec.key())


def place_ops(space: SearchSpace, split: Callable[[OpSpec, OpPlace], OpSplit]) -> list[list[OpPlace | None]]:
    """The place of each op of the network's positions (prefix ops, searchable layers, suffix ops; None: a free
    op), in order: the first reads the NCHW input, each next one what the ops before left, and the last writes the
    network's NCHW output. Where a layer's candidates leave different layouts (a grouped conv with its channel
    shuffle leaves NCHW, an MBConv blocked), those that leave NCHW pay the ``ReorderInput`` and the next reads
    blocked: the boundary's cost then depends on the pair of ops, which an additive model cannot hold exactly."""
    positions = [[spec] for spec in space.prefix] + [[spec for _, spec in layer.candidates] for layer in space.layers]
    positions += [[spec] for spec in space.suffix]
    blocked, places = False, []
    for index, specs in enumerate(positions):
        output = "nchw" if index == len(positions) - 1 else "left"
        leaves = {blocked if spec.is_free else split(spec, (blocked, output))[1] for spec in specs}
        mixed = len(leaves) > 1
        places.append([None if spec.is_free else (blocked, output if not mixed or split(spec, (blocked, output))[1]
                                                  else "blocked") for spec in specs])
        blocked = True if mixed else leaves.pop()
    return places


class KernelSpacePredictor(SpacePredictor):
    """The kernel predictor's latency of ``space``'s architectures as an additive sum plus its power (see the module
    docstring). Built by :meth:`KernelPredictor.for_space`; not a file of its own: save the kernel predictor."""

    kind: ClassVar[str] = "kernel"
    reads_onnx: ClassVar[bool] = True

    def __init__(self, kernel: KernelPredictor, space: SearchSpace, fixed_sums: Sequence[float],
                 layer_sums: Sequence[np.ndarray]) -> None:
        """``fixed_sums``: the group sums ``S_g`` of the prefix and suffix ops; ``layer_sums[l][i]``: those of
        candidate ``i`` of layer ``l`` (0 for free ops)."""
        super().__init__(replace(kernel.meta, space=space.name, resolution=space.resolution,
                                 num_classes=space.num_classes))
        self.kernel, self.space, self.path = kernel, space, kernel.path
        self.correction: dict[str, Any] = copy.deepcopy(kernel.correction)
        coef = np.asarray(self.correction["coef"], dtype=np.float64)
        self.fixed_sum = float(np.asarray(fixed_sums, dtype=np.float64) @ coef)
        self.layer_sums = [[float(v) for v in np.asarray(sums, dtype=np.float64) @ coef] for sums in layer_sums]
        self.overhead_ratio = kernel.overhead_ratio + float(self.correction.get("intercept", 0.0))
        self.kernel_reference_ms = float(kernel.meta.reference_ms or 0.0)

    @property
    def reference_ms(self) -> float | None:
        """None: the figures are at the kernel predictor's generic reference level, not the space's reference's."""
        return None

    # -- the model ----------------------------------------------------------------------------------------------
    def weighted_sum(self, arch: Architecture) -> float:
        """``T(arch)``: the network's weighted kernel sum in reference units (before the power)."""
        self.space.validate(arch)
        total = self.fixed_sum
        for layer, choice, sums in zip(self.space.layers, arch.choices, self.layer_sums):
            total += sums[layer.names.index(choice)]
        return total

    def corrected(self, summed: float) -> float:
        """``c * T ** p`` (power form) or ``T`` (linear form), as the kernel predictor corrects a network's sum."""
        return _network_ratio(summed, self.correction)

    def latency_ms(self, arch: Architecture) -> float:
        return float((self.overhead_ratio + self.corrected(self.weighted_sum(arch))) * self.kernel_reference_ms)

    def terms(self, arch: Architecture) -> list[dict[str, Any]]:
        """Shares of ``latency_ms(arch)``: the fixed part with the overhead, then each layer's kernels' share of the
        corrected sum (the chord through the overhead and ``arch``: slope ``c * T ** p / T``)."""
        summed = self.weighted_sum(arch)
        share = self.corrected(summed) / summed if summed > 0 else 1.0
        fixed = (self.overhead_ratio + share * self.fixed_sum) * self.kernel_reference_ms
        out = [{"type": "fixed", "key": "stem, fixed blocks, head, runtime overhead", "ms": fixed}]
        for layer, choice, sums in zip(self.space.layers, arch.choices, self.layer_sums):
            cost = share * sums[layer.names.index(choice)] * self.kernel_reference_ms
            out.append({"type": f"layer{layer.index}:{choice}", "key": layer.spec(choice).key(), "ms": cost})
        return out

    def tangent(self, arch: Architecture) -> _LinearView:
        """Linearized along the tangent at ``arch``: slope ``c * p * T(a) ** (p - 1)``, the true derivative."""
        summed = self.weighted_sum(arch)
        power = float(self.correction.get("power", 1.0))
        slope = power * self.corrected(summed) / summed if summed > 0 else 1.0
        fixed = self.overhead_ratio + self.corrected(summed) - slope * (summed - self.fixed_sum)
        return _LinearView(self, slope, fixed)

    def layer_costs_ms(self) -> list[list[float]]:
        return [[v * self.kernel_reference_ms for v in sums] for sums in self.layer_sums]

    def fixed_ms(self) -> float:
        return (self.overhead_ratio + self.fixed_sum) * self.kernel_reference_ms

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        """A view linearized at ``arch`` for the decoder and the loss (None: the sum at ``c = p = 1``)."""
        return self if arch is None else self.tangent(arch)

    def expected_latency_ms(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(overhead + c * E[T] ** p) * reference_ms`` with ``E[T] = T_fixed + sum_l sum_i p_{l,i} t[l, i]``."""
        if len(probs) != len(self.layer_sums):
            raise HwnasError(f"expected_latency_ms: {len(self.layer_sums)} layers, got probabilities for {len(probs)}")
        summed = torch.tensor(self.fixed_sum, dtype=torch.float64)
        for p, sums in zip(probs, self.layer_sums):
            summed = summed + (p.to(torch.float64) * torch.tensor(sums, dtype=torch.float64, device=p.device)).sum()
        if "power" in self.correction:
            summed = float(self.correction["scale"]) * summed.clamp_min(1e-300) ** float(self.correction["power"])
        return (self.overhead_ratio + summed) * self.kernel_reference_ms

    # -- the protocol -------------------------------------------------------------------------------------------
    def for_space(self, space: SearchSpace) -> SpacePredictor:
        ours = (self.space.name, self.space.resolution, self.space.num_classes)
        return self if ours == (space.name, space.resolution, space.num_classes) else self.kernel.for_space(space)

    def _predict_arch(self, arch: Architecture) -> Prediction:
        from hwnas.spaces import get_space

        estimator = self.for_space(get_space(arch.space, arch.resolution, arch.num_classes))
        estimator.space.validate(arch)
        return Prediction(estimator.latency_ms(arch), tuple(estimator.terms(arch)), self.kernel.overhead_ms, self.kind)

    def _predict_onnx(self, model: Any, source: str) -> Prediction:
        return self.kernel._predict_onnx(model, source)

    def _not_a_file(self) -> HwnasError:
        return unsupported(self.kind, f"estimator of {self.space.name}@{self.space.resolution} is derived, not a "
                           "file", "save the kernel predictor itself (.kernel.save(path)) and call for_space again")

    def save(self, path: str | Path) -> Path:
        raise self._not_a_file()

    def model_to_dict(self) -> dict[str, Any]:
        raise self._not_a_file()

    @classmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> KernelSpacePredictor:
        raise HwnasError(f"{source}: a kernel predictor's estimator of a space is not a file kind")


class _LinearView(LatencyEstimator):
    """:class:`KernelSpacePredictor` linearized: ``cost[l, i] = slope * t[l, i]``, ``fixed`` (reference units, times
    ``reference_ms``). ``latency_ms`` stays the predictor's own; nothing of the predictor changes."""

    def __init__(self, predictor: KernelSpacePredictor, slope: float, fixed_ratio: float) -> None:
        self.predictor, self.space = predictor, predictor.space
        self.slope, self.fixed_ratio = float(slope), float(fixed_ratio)

    def layer_costs_ms(self) -> list[list[float]]:
        return [[v * self.slope for v in costs] for costs in self.predictor.layer_costs_ms()]

    def fixed_ms(self) -> float:
        return self.fixed_ratio * self.predictor.kernel_reference_ms

    def latency_ms(self, arch: Architecture) -> float:
        return self.predictor.latency_ms(arch)

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        return self.predictor.anchored(arch)


def build_space_predictor(kernel: KernelPredictor, space: SearchSpace,
                          split_cache: dict[tuple[str, OpPlace, int], OpSplit]) -> KernelSpacePredictor:
    """Split every op of ``space`` in its place (reused from ``split_cache``: a split depends only on the op, its
    place and the block), predict all the kernels' costs in one pass, and sum them per op and group."""
    from hwnas.locations import CACHE_ENV_VAR, cache_dir
    from hwnas.outputs import check_env_folder

    folder = cache_dir() / "artifacts" / "onnx-ops"

    def split(spec: OpSpec, place: OpPlace) -> OpSplit:
        key = (spec.key(), place, kernel.block)
        if key not in split_cache:
            check_env_folder(folder, CACHE_ENV_VAR)  # one line naming HWNAS_CACHE, before an export fails in it
            split_cache[key] = op_split(spec, kernel.block, place, folder)
        return split_cache[key]

    places = place_ops(space, split)
    positions = [*space.prefix, *space.layers, *space.suffix]
    placed = {(spec.key(), place): spec for position, here in zip(positions, places)
              for spec, place in zip(_specs(position), here) if place is not None}
    splits = {at: split(spec, at[1])[0] for at, spec in placed.items()}
    costs = iter(kernel.kernel_costs([k for ops in splits.values() for k in ops]))
    sums = {at: _group_sums(ops, [next(costs) for _ in ops]) for at, ops in splits.items()}
    rows = [[np.zeros(len(GROUPS)) if place is None else sums[(spec.key(), place)]
             for spec, place in zip(_specs(position), here)] for position, here in zip(positions, places)]
    layers = slice(len(space.prefix), len(space.prefix) + len(space.layers))
    fixed = sum((row[0] for row in rows[:layers.start] + rows[layers.stop:]), np.zeros(len(GROUPS)))
    return KernelSpacePredictor(kernel, space, fixed, [np.asarray(row) for row in rows[layers]])


def _specs(position: OpSpec | SearchableLayer) -> list[OpSpec]:
    return [spec for _, spec in position.candidates] if isinstance(position, SearchableLayer) else [position]


def _group_sums(kernels: Sequence[Kernel], costs: Sequence[float]) -> np.ndarray:
    """``S_g``: the summed predicted cost of the kernels of each group (:data:`kernel.GROUPS`)."""
    sums = np.zeros(len(GROUPS))
    for k, cost in zip(kernels, costs, strict=True):
        sums[GROUPS.index(kernel_group(k))] += cost
    return sums
