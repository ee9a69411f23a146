"""Memory of an architecture at batch-1 inference: parameter bytes and peak activation bytes (MemNet's bound).

Units: ``MB`` in hwnas's memory figures is a MiB, ``2**20`` bytes (``params_mb``, ``peak_activation_mb``,
``memory_mb``, ``--max-memory-mb``).

The graph counted is the one a deployment runtime runs (ONNX export, LiteRT): BatchNorm is folded into the conv
before it (the conv gains a bias of ``cout``), an activation is fused into the op that feeds it, a reshape or
flatten aliases its input, and an elementwise op (residual add, SE gate multiply) writes in place over an input
whose last use it is (LiteRT's arena planner and onnxruntime's allocation planner both do). So conv + BN +
activation is ONE output tensor.

Peak activation memory is the largest sum of tensors alive at once when the ops run one after another (the
network's execution order). A tensor is alive from the op that makes it to its last use; the network input is
alive until its last use; the output to the end. Between two ops only the one tensor that flows on is alive,
so the network's peak is the largest of its ops' peaks (:func:`spec_peak_activation_bytes`, which counts the op's
input and output). :func:`onnx_footprint` computes the same figures from any ``.onnx`` file by a liveness walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.ops import BlockSpec, MnasLayerSpec, OpSpec
from hwnas.ops.specs import ConvSpec, DWSepSpec, LinearSpec, MBConvSpec, PoolSpec, SkipSpec, ZeroSpec
from hwnas.spaces.base import Architecture, SearchSpace

MB = 2**20
"""Bytes in one ``MB`` of hwnas's memory figures (a MiB)."""


@dataclass(frozen=True)
class Footprint:
    """Memory a network needs for batch-1 inference: its weights and its peak of live activations, in bytes."""

    params_bytes: int
    peak_activation_bytes: int

    @property
    def params_mb(self) -> float:
        return self.params_bytes / MB

    @property
    def peak_activation_mb(self) -> float:
        return self.peak_activation_bytes / MB

    @property
    def memory_mb(self) -> float:
        """Weights plus peak activations: what the network needs resident at once (MiB)."""
        return self.params_mb + self.peak_activation_mb

    def to_dict(self) -> dict[str, float]:
        return {"params_mb": self.params_mb, "peak_activation_mb": self.peak_activation_mb,
                "memory_mb": self.memory_mb}


# -- parameters ------------------------------------------------------------------------------------------------
def spec_deployed_params(spec: OpSpec) -> int:
    """Parameters of the op once BatchNorm is folded: ``spec.params()`` less one ``cout`` per folded BN (its
    scale and shift, 2 per channel, become the conv's bias, 1 per channel). Equals the ONNX initializers.
    A block (:class:`~hwnas.ops.BlockSpec`) has the sum of its layers'."""
    if isinstance(spec, BlockSpec):
        return sum(spec_deployed_params(part) for part in spec.parts)
    return spec.params() - _folded_bn_channels(spec)


def _folded_bn_channels(spec: OpSpec) -> int:
    if isinstance(spec, MnasLayerSpec):  # conv: its output; dwsep: depthwise + pointwise; mbconv: + expansion
        return spec.cout + (spec.mid if spec.t >= 1 else 0) + (spec.mid if spec.t == 2 else 0)
    if isinstance(spec, ConvSpec):
        return spec.cout
    if isinstance(spec, MBConvSpec):
        return (spec.mid if spec.pw else 0) + spec.mid + spec.cout
    if isinstance(spec, DWSepSpec):
        return spec.cin + spec.cout
    if isinstance(spec, SkipSpec):
        return 0 if spec.is_free else spec.cout
    return 0


# -- peak activations ------------------------------------------------------------------------------------------
def spec_peak_activation_elements(spec: OpSpec) -> int:
    """Largest number of elements alive at once while the op runs at batch 1, its input and output included.

    Per kind (``x`` input, ``y`` output; ``E``, ``D``, ``P`` the expansion, depthwise and projection outputs):

    * conv: ``x + y``; dwsep: ``max(x + D, D + y)``; non-free skip: ``x + y``; free skip, zero: ``x`` (no copy);
      pool: ``x + cout``; linear: ``cin + cout`` (the flatten aliases its input).
    * mbconv, each step holding its input and output, plus ``x`` throughout when there is a residual:
      expand ``x + E`` (the channel shuffle's transpose ``2E``), depthwise ``E + D`` (``x + D`` without
      expansion), SE ``D + mid + squeeze`` (the pooled vector and the squeezed one beside ``D``; the gate
      multiply writes in place over ``D``), projection ``D + P``, residual add ``x + P`` (in place over ``P``).
    * mnas (:class:`~hwnas.ops.MnasLayerSpec`), by the same steps: conv ``x + y``; dwsep depthwise ``x + D``, then
      pointwise ``D + y``; mbconv as above. SE sits on the op's widest tensor (``y`` for conv, ``D`` otherwise,
      ``mid`` channels) and holds ``widest + mid + squeeze``; an identity skip (``res``) keeps ``x`` to the add.
    * a block (:class:`~hwnas.ops.BlockSpec`): the largest of its layers' (only one tensor flows between them).
    """
    if isinstance(spec, BlockSpec):
        return max(spec_peak_activation_elements(part) for part in spec.parts)
    if isinstance(spec, MBConvSpec):
        return _mbconv_peak(spec)
    if isinstance(spec, MnasLayerSpec):
        return _mnas_peak(spec)
    x = spec.cin * spec.size**2
    if isinstance(spec, ConvSpec):
        return x + spec.cout * spec.out_size**2
    if isinstance(spec, DWSepSpec):
        depthwise = spec.cin * spec.out_size**2
        return max(x + depthwise, depthwise + spec.cout * spec.out_size**2)
    if isinstance(spec, SkipSpec):
        return x if spec.is_free else x + spec.cout * spec.out_size**2
    if isinstance(spec, ZeroSpec):
        return x
    if isinstance(spec, PoolSpec):
        return x + spec.cout
    if isinstance(spec, LinearSpec):
        return spec.cin + spec.cout
    raise HwnasError(f"memory: no peak-activation rule for op kind {spec.kind!r} ({spec.key()})")


def _mbconv_peak(spec: MBConvSpec) -> int:
    x = spec.cin * spec.size**2
    o2 = spec.out_size**2
    expanded, depthwise, projected = spec.mid * spec.size**2, spec.mid * o2, spec.cout * o2
    steps: list[tuple[int, bool]] = []  # (elements the step holds, whether it reads the block input itself)
    if spec.pw:
        steps.append((x + expanded, True))
        if spec.g > 1:
            steps.append((2 * expanded, False))
    steps.append(((expanded if spec.pw else x) + depthwise, not spec.pw))
    if spec.se:  # pool -> squeeze -> expand beside D; the gate multiply writes over D (it is D's last reader)
        steps.append((depthwise + spec.mid + spec.se_channels, False))
    steps.append((depthwise + projected, False))
    return _peak_of_steps(steps, x, projected, spec.residual)


def _mnas_peak(spec: MnasLayerSpec) -> int:
    x, o2 = spec.cin * spec.size**2, spec.out_size**2
    out, depthwise = spec.cout * o2, spec.mid * o2
    steps: list[tuple[int, bool]] = []  # (elements the step holds, whether it reads the layer input itself)
    if spec.t == 0:
        steps.append((x + out, True))
    elif spec.t == 1:
        steps.append((x + depthwise, True))
    else:
        expanded = spec.mid * spec.size**2
        steps += [(x + expanded, True), (expanded + depthwise, False)]
    if spec.se:  # on the widest tensor (mid channels): the pooled and squeezed vectors beside it
        steps.append(((out if spec.t == 0 else depthwise) + spec.mid + spec.se_channels, False))
    if spec.t != 0:
        steps.append((depthwise + out, False))
    return _peak_of_steps(steps, x, out, bool(spec.res))


def _peak_of_steps(steps: list[tuple[int, bool]], x: int, out: int, residual: bool) -> int:
    """The largest step; with a residual the input ``x`` stays alive through the steps that do not read it, and
    the add holds ``x + out`` (it writes over ``out``, its last reader)."""
    if residual:
        steps = [(held + (0 if reads_input else x), reads_input) for held, reads_input in steps]
        steps.append((x + out, True))
    return max(held for held, _ in steps)


def spec_peak_activation_bytes(spec: OpSpec, bytes_per_element: int = 4) -> int:
    """:func:`spec_peak_activation_elements` in bytes."""
    return spec_peak_activation_elements(spec) * bytes_per_element


# -- networks --------------------------------------------------------------------------------------------------
def specs_footprint(specs: list[OpSpec], bytes_per_element: int = 4) -> Footprint:
    """Footprint of ops run in sequence (the output of one is the input of the next)."""
    params = sum(spec_deployed_params(spec) for spec in specs)
    peak = max((spec_peak_activation_elements(spec) for spec in specs), default=0)
    return Footprint(params * bytes_per_element, peak * bytes_per_element)


def arch_footprint(space: SearchSpace, arch: Architecture, bytes_per_element: int = 4) -> Footprint:
    """Footprint of one architecture of ``space`` (prefix, chosen ops, suffix: input image and logits included)."""
    return specs_footprint(space.arch_specs(arch), bytes_per_element)


def layer_peak_bytes(space: SearchSpace, bytes_per_element: int = 4) -> list[list[int]]:
    """Per searchable layer, per candidate (``layer.candidates`` order): the op's peak activation bytes (for a
    space that is not ``context_free``, in ``layer.candidates``' context only: see :mod:`hwnas.search.memory_bound`
    for figures that hold in every context)."""
    return [[spec_peak_activation_bytes(spec, bytes_per_element) for _, spec in layer.candidates]
            for layer in space.layers]


def layer_param_bytes(space: SearchSpace, bytes_per_element: int = 4) -> list[list[int]]:
    """Per searchable layer, per candidate: the op's deployed parameter bytes (``layer.candidates``' context)."""
    return [[spec_deployed_params(spec) * bytes_per_element for _, spec in layer.candidates]
            for layer in space.layers]


def fixed_peak_bytes(space: SearchSpace, bytes_per_element: int = 4) -> int:
    """Largest peak of the fixed ops (prefix and suffix); a network's peak is ``max(this, chosen ops' peaks)``."""
    return max((spec_peak_activation_bytes(s, bytes_per_element) for s in [*space.prefix, *space.suffix]), default=0)


def fixed_param_bytes(space: SearchSpace, bytes_per_element: int = 4) -> int:
    """Parameter bytes of the fixed ops; a network's are ``this + the chosen ops' sum``."""
    return sum(spec_deployed_params(s) for s in [*space.prefix, *space.suffix]) * bytes_per_element


def onnx_footprint(path: str | Path) -> Footprint:
    """The same two figures for any ``.onnx`` file (see :mod:`hwnas.spaces.onnx_memory`)."""
    from hwnas.spaces.onnx_memory import onnx_footprint as measure

    return measure(Path(path))


__all__ = ["MB", "Footprint", "arch_footprint", "fixed_param_bytes", "fixed_peak_bytes", "layer_param_bytes",
           "layer_peak_bytes", "onnx_footprint", "spec_deployed_params", "spec_peak_activation_bytes",
           "spec_peak_activation_elements", "specs_footprint"]
