"""Features of a space's networks computed from the op specs (nothing is measured here).

Two levels:

* **Per-op features** (:func:`op_features`), additive over the ops of a network, so a linear model on their
  sums is a per-layer cost model: exact per-candidate costs for the decoder and an exact, differentiable
  expected latency. They are the op's table latency (when a table is given), its MACs split into depthwise and
  dense parts, weight bytes and what of them exceeds the L2 cache, activation bytes read and written, and
  counts (ops, strided ops, residual adds, kernel sizes).
* **Network features** (:func:`network_features`) for a non-additive correction: totals, weight bytes against
  the L2 and L3 cache sizes, arithmetic intensity (MACs per byte moved), depth and resolution.

A block of several layers (:class:`~hwnas.ops.BlockSpec`, a ``mnasnet`` choice) has the sum of its layers' per-op
features; a network's features sum its exact ops, each block's in the context of the block before it.

Cache sizes come from the machine fingerprint of the training data (``fingerprint["machine"]["caches"]``),
1 MiB L2 and 32 MiB L3 when it does not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from hwnas.ops import ConvSpec, MBConvSpec, MnasLayerSpec, OpSpec, SkipSpec, flat_specs
from hwnas.spaces import Architecture, SearchSpace

DEFAULT_CACHES = {"L2": 1 << 20, "L3": 32 << 20}
_MB = 1e6

OP_FEATURES = ("table_ms", "dense_mmacs", "dw_mmacs", "weight_mb", "weight_over_l2_mb", "act_mb", "ops", "strided",
               "residual", "k3", "k5", "k7", "table_k3_ms", "table_k5_ms", "table_k7_ms", "table_e_low_ms",
               "table_e_high_ms")
NET_FEATURES = ("linear_ms", "table_ms", "mmacs", "weight_mb", "weight_over_l2", "weight_over_l3", "act_mb",
                "intensity", "depth", "resolution", "largest_weight_over_l2")


class OpTable(Protocol):
    """Anything that gives an op's table latency (a :class:`~hwnas.latency.estimator.TableEstimator`)."""

    def op_ms(self, spec: OpSpec) -> float: ...


@dataclass(frozen=True)
class Caches:
    l2: int
    l3: int

    @classmethod
    def from_fingerprint(cls, fingerprint: Mapping[str, Any] | None) -> Caches:
        caches = dict(DEFAULT_CACHES)
        caches.update(((fingerprint or {}).get("machine") or {}).get("caches") or {})
        return cls(int(caches["L2"]), int(caches.get("L3", DEFAULT_CACHES["L3"])))


def _dw_macs(spec: OpSpec) -> int:
    if isinstance(spec, MBConvSpec) or (isinstance(spec, MnasLayerSpec) and spec.t in (1, 2)):
        return spec.out_size**2 * spec.mid * spec.k * spec.k
    if isinstance(spec, ConvSpec) and spec.g == spec.cin and spec.g > 1:
        return spec.macs()
    return 0


def _kernel(spec: OpSpec) -> int:
    return int(getattr(spec, "k", 1)) if not isinstance(spec, SkipSpec) else 1


def _residual(spec: OpSpec) -> bool:
    """Whether the op adds its input (a MnasNet layer only where its block chose the skip)."""
    return bool(spec.res) if isinstance(spec, MnasLayerSpec) else bool(getattr(spec, "residual", False))


def op_features(spec: OpSpec, caches: Caches, table: OpTable | None) -> np.ndarray:
    """The additive features of one op (zeros for a free op), in :data:`OP_FEATURES` order; a block's are the sum
    over its layers.

    The last five split the op's table latency by its kernel size (3, 5, 7) and expansion (at most 3, at least 4):
    a runtime can run one kind of kernel faster or slower inside a network than alone (LiteRT's 7x7 depthwise,
    wide expansions that leave the cache), which one scale on the whole table cannot express.
    """
    parts = flat_specs(spec)
    if len(parts) > 1 or parts[0] is not spec:
        return sum((op_features(part, caches, table) for part in parts), np.zeros(len(OP_FEATURES)))
    if spec.is_free:
        return np.zeros(len(OP_FEATURES))
    table_ms = table.op_ms(spec) if table is not None else 0.0
    expansion = getattr(spec, "e", None) if not isinstance(spec, MnasLayerSpec) or spec.t == 2 else None
    weight = spec.params() * 4
    elements_in = spec.cin * spec.size * spec.size
    elements_out = int(np.prod(spec.output_shape))
    dw = _dw_macs(spec)
    k = _kernel(spec)
    return np.array([
        table_ms,
        (spec.macs() - dw) / _MB,
        dw / _MB,
        weight / _MB,
        max(0, weight - caches.l2) / _MB,
        4 * (elements_in + elements_out) / _MB,
        1.0,
        float(spec.stride > 1),
        float(_residual(spec)),
        float(k == 3), float(k == 5), float(k == 7),
        table_ms * (k == 3), table_ms * (k == 5), table_ms * (k == 7),
        table_ms * (expansion is not None and expansion <= 3), table_ms * (expansion is not None and expansion >= 4),
    ])


class FeatureCache:
    """Per-candidate feature vectors of a space, computed once: ``layer[l][i]`` and the fixed ops' sum. For a space
    that is not context free, ``layer`` holds ``layer.candidates``' (an approximation); :meth:`of` gives any op's,
    memoized, and :meth:`summed` is exact."""

    def __init__(self, space: SearchSpace, caches: Caches, table: OpTable | None) -> None:
        self.space, self.caches, self.table = space, caches, table
        self._memo: dict[OpSpec, np.ndarray] = {}
        self.layer = [np.stack([self.of(spec) for _, spec in layer.candidates]) for layer in space.layers]
        self.fixed = sum((op_features(s, caches, table) for s in [*space.prefix, *space.suffix]),
                         np.zeros(len(OP_FEATURES)))
        self._index = [{name: i for i, name in enumerate(layer.names)} for layer in space.layers]

    def of(self, spec: OpSpec) -> np.ndarray:
        """:func:`op_features` of ``spec`` (memoized per spec; read-only)."""
        features = self._memo.get(spec)
        if features is None:
            features = self._memo[spec] = op_features(spec, self.caches, self.table)
        return features

    def indices(self, arch: Architecture) -> list[int]:
        self.space.validate(arch)
        return [index[c] for index, c in zip(self._index, arch.choices)]

    def summed(self, arch: Architecture) -> np.ndarray:
        """Sum of the per-op features over the whole network (its exact ops)."""
        if not self.space.context_free:
            return self.fixed + sum(self.of(spec) for spec in self.space.layer_specs(arch))
        return self.fixed + sum(self.layer[l][i] for l, i in enumerate(self.indices(arch)))

    def matrix(self, archs: Sequence[Architecture]) -> np.ndarray:
        return np.stack([self.summed(a) for a in archs]) if archs else np.zeros((0, len(OP_FEATURES)))

    def network(self, arch: Architecture, linear_ms: float) -> np.ndarray:
        """The network features of :data:`NET_FEATURES` (``linear_ms``: the additive model's prediction); a block
        counts as its layers."""
        specs = [p for s in self.space.arch_specs(arch) for p in flat_specs(s) if not p.is_free]
        summed = self.summed(arch)
        weights = [s.params() * 4 for s in specs]
        weight, act = sum(weights), summed[OP_FEATURES.index("act_mb")] * _MB
        macs = sum(s.macs() for s in specs)
        return np.array([
            linear_ms, summed[0], macs / _MB, weight / _MB, weight / self.caches.l2, weight / self.caches.l3,
            act / _MB, macs / max(weight + act, 1), float(len(specs)), float(self.space.resolution),
            max(weights) / self.caches.l2,
        ])
