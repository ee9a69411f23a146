"""The kernel record: one kernel ONNX Runtime runs, with one canonical key, and the layout rules it follows.

A :class:`Kernel` is frozen and keyed, e.g.
``dwconv-op:nchwc.Conv-in:72x56x56-out:72x28x28-k:5-s:2-g:72-act:Relu-sum:0-n:1-b:0``; :func:`kernel_from_key`
parses the key back; :func:`count_by_op` counts kernels the way ORT's optimized graph lists its nodes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hwnas.errors import HwnasError

KERNEL_TYPES = ("conv", "pwconv", "dwconv", "gconv", "pool", "gpool", "gemm", "act", "add", "mul", "concat", "split",
                "transpose", "reshape", "reorder_in", "reorder_out", "pad", "norm", "copy", "other")
ALIGNMENT = 4  # a blocked conv needs cin (group 1) or c (depthwise) to be a multiple of this (ORT 1.32 pads the rest)
_KEY = re.compile(r"(?P<type>[a-z_]+)-op:(?P<op>[A-Za-z0-9_.]+)-in:(?P<cin>\d+)x(?P<hin>\d+)x(?P<win>\d+)"
                  r"-out:(?P<cout>\d+)x(?P<hout>\d+)x(?P<wout>\d+)-k:(?P<k>\d+)-s:(?P<s>\d+)-g:(?P<g>\d+)"
                  r"-act:(?P<act>[A-Za-z0-9_]+)-sum:(?P<sum>\d)-n:(?P<n>\d+)-b:(?P<bcast>\d)")


def nchwc_block_size() -> int:
    """MLAS's NCHWc block: 16 floats with AVX-512F, 8 with AVX2, else 1 (no blocked layout)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8 if " avx2" in flags else 1


def padded(channels: int, block: int) -> int:
    """``channels`` rounded up to a multiple of the NCHWc ``block`` (what a blocked tensor stores)."""
    return -(-channels // block) * block


@dataclass(frozen=True)
class Kernel:
    """One kernel ORT runs: its type, the ORT op it runs as, logical NCHW shapes and hyper-parameters.

    Attributes:
        type: one of :data:`KERNEL_TYPES` (``conv`` kxk group 1, ``pwconv`` 1x1 group 1, ``dwconv`` depthwise,
            ``gconv`` other grouped conv, ``pool``, ``gpool`` global pooling or ReduceMean over H, W, ...).
        op: the ORT op: ``nchwc.`` prefixed for ORT's blocked-layout ops (``nchwc.Conv``, ``nchwc.MaxPool``),
            ``blocked.`` prefixed for a standard op that runs on a blocked tensor (``blocked.QuickGelu``,
            ``blocked.Add``), else the op (``FusedConv``, ``ReduceMean``, ``ReorderInput``, ...).
        cin, hin, win / cout, hout, wout: logical input / output channels and spatial size (2-D tensors: C x 1 x 1).
        k, s, g: kernel size, stride, groups (convs and pools).
        act: fused (or, for ``act`` kernels, the) activation; ``none`` when there is none.
        sum: 1 when a residual Add is fused into the conv.
        n: inputs of a Concat, outputs of a Split, rank of a Transpose, else 1.
        bcast: 1 when an Add/Mul broadcasts its second operand over H x W (SE scaling).
    """

    type: str
    op: str
    cin: int
    hin: int
    win: int
    cout: int
    hout: int
    wout: int
    k: int = 0
    s: int = 1
    g: int = 1
    act: str = "none"
    sum: int = 0
    n: int = 1
    bcast: int = 0

    def __post_init__(self) -> None:
        if self.type not in KERNEL_TYPES:
            raise HwnasError(f"kernel: type must be one of {', '.join(KERNEL_TYPES)}, got {self.type!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise HwnasError(f"kernel: field {f.name!r} must be a non-negative int, got {value!r}")

    @property
    def key(self) -> str:
        return (f"{self.type}-op:{self.op}-in:{self.cin}x{self.hin}x{self.win}-out:{self.cout}x{self.hout}x{self.wout}"
                f"-k:{self.k}-s:{self.s}-g:{self.g}-act:{self.act}-sum:{self.sum}-n:{self.n}-b:{self.bcast}")

    @property
    def blocked(self) -> bool:
        return self.op.startswith(("nchwc.", "blocked.")) or self.type == "reorder_in"

    @property
    def macs(self) -> int:
        """Multiply-accumulates (convs, Gemm), else the number of output elements."""
        if self.type in ("conv", "pwconv", "dwconv", "gconv"):
            return self.cout * self.hout * self.wout * (self.cin // max(self.g, 1)) * self.k * self.k
        if self.type == "gemm":
            return self.cin * self.cout
        if self.type == "pool":
            return self.cout * self.hout * self.wout * self.k * self.k
        return self.cout * self.hout * self.wout

    @property
    def input_elements(self) -> int:
        extra = self.cout * self.hout * self.wout if self.sum else 0
        second = (self.cin if self.bcast else self.cin * self.hin * self.win) if self.type in ("add", "mul") else 0
        return self.cin * self.hin * self.win + extra + second

    @property
    def output_elements(self) -> int:
        return self.cout * self.hout * self.wout

    @property
    def weight_elements(self) -> int:
        if self.type in ("conv", "pwconv", "dwconv", "gconv"):
            return self.cout * (self.cin // max(self.g, 1)) * self.k * self.k + self.cout
        if self.type == "gemm":
            return self.cin * self.cout + self.cout
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "op": self.op, "input": [self.cin, self.hin, self.win],
                "output": [self.cout, self.hout, self.wout], "k": self.k, "s": self.s, "g": self.g, "act": self.act,
                "sum": self.sum}


def kernel_from_key(key: str) -> Kernel:
    """Parse :attr:`Kernel.key` back into the record (one-line error on a malformed key)."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise HwnasError(f"kernel key {key!r}: malformed (expected e.g. "
                         "'pwconv-op:nchwc.Conv-in:32x56x56-out:64x56x56-k:1-s:1-g:1-act:Relu-sum:0-n:1-b:0')")
    values: dict[str, Any] = match.groupdict()
    for name in values:
        if name not in ("type", "op", "act"):
            values[name] = int(values[name])
    return Kernel(**values)


def count_by_op(kernels: Iterable[Kernel]) -> dict[str, int]:
    """How many kernels of each ORT op (``nchwc.Conv``, ``ReorderInput``, ...): what ORT's optimized graph lists."""
    counts: dict[str, int] = {}
    for kernel in kernels:
        op = kernel.op.removeprefix("blocked.")
        counts[op] = counts.get(op, 0) + 1
    return counts
