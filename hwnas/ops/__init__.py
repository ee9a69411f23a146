"""Op specs, canonical keys, the op registry (spec -> nn.Module) and cost counts from the spec."""

from hwnas.ops.blocks import BlockSpec, MnasLayerSpec, flat_specs
from hwnas.ops.modules import build_op, register_op, registered_kinds
from hwnas.ops.specs import (
    ConvSpec,
    DWSepSpec,
    LinearSpec,
    MBConvSpec,
    OpSpec,
    PoolSpec,
    SkipSpec,
    ZeroSpec,
    spec_from_key,
)

__all__ = [
    "BlockSpec", "ConvSpec", "DWSepSpec", "MnasLayerSpec", "flat_specs",
    "LinearSpec", "MBConvSpec", "OpSpec", "PoolSpec", "SkipSpec", "ZeroSpec",
    "build_op", "register_op", "registered_kinds", "spec_from_key",
]
