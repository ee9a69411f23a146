"""Supernet with binarized paths (ProxylessNAS, Cai et al., ICLR 2019) for every registered search space.

The supernet is the space's fixed prefix, one :class:`MixedOp` per searchable layer (every candidate built with
:func:`hwnas.ops.build_op`) and the fixed suffix. Layer ``l`` has architecture parameters ``alpha_l`` (zeros at
start) and path probabilities ``p_l = softmax(alpha_l)``. Modes, kept on each mixed op (no class-level state):

* ``"weight"``: one path per layer is sampled from ``p`` and only it runs, so only its activations are stored.
* ``"arch"``: binary gates ``g`` (one-hot of the sampled path) enter the forward as ``out = sum_j g_j o_j(x)``,
  of which only the active ``o_j`` is computed. The gradient w.r.t. ``alpha`` is ProxylessNAS's estimator::

      dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i),    dL/dg_j = <dL/dout, o_j(x)>

  It is obtained by handing ``dL/dg`` to autograd as the gradient of ``p`` (softmax's backward is exactly the
  ``p_j (delta_ij - p_i)`` factor). Two gradient modes (``arch_grad``):

  - ``"full_v2"`` (the default of the ProxylessNAS search code): ``dL/dg_j`` for every candidate ``j``, each
    ``o_j(x)`` recomputed under ``no_grad`` inside the gate's backward. Stored: the active path's graph only;
    transient: one candidate's forward at a time. Compute: ``n`` extra candidate forwards per layer.
  - ``"two"`` (the paper's Sec. 3.2.1): two paths ``{a, b}`` are sampled from ``p`` without replacement, the
    probabilities are renormalised over the pair, ``q = softmax(alpha_{a,b})``, and the active path is drawn
    from ``q``; only ``alpha_a, alpha_b`` get a gradient (from ``q``). Here the inactive path of the pair is
    also recomputed in the backward, so memory is that of one path (the original code stores the inactive
    output too); compute is one extra candidate forward per layer. After the optimizer step, call
    :meth:`SuperNet.rescale_sampled_pairs` so the pair keeps its total ``exp(alpha)`` mass, which leaves the
    probabilities of the other paths unchanged.
* ``"fixed"``: the path per layer comes from :meth:`SuperNet.set_arch`.

The ``zero`` candidate (block skipped, its residual remains) is ``nn.Identity`` in hwnas: its ``o_j(x) = x``.
Since every candidate of such a layer carries the residual ``x`` itself, ``dL/dg_j`` differs from the original
code's (which adds the residual outside the mixed op) by the same ``<dL/dout, x>`` for every ``j``, which the
softmax factor cancels: the ``alpha`` gradients are identical, and the zero op's ``alpha`` gets one as well.

Candidates recomputed in the backward run in the module's current mode (batch statistics when training) with
their buffers (BatchNorm running statistics) restored afterwards, so the estimator has no side effects.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec, build_op
from hwnas.search.elastic import build_elastic_candidates, is_elastic_layer
from hwnas.search.nested import build_candidates
from hwnas.spaces import Architecture, SearchSpace

MODES = ("weight", "arch", "fixed")
ARCH_GRAD_MODES = ("full_v2", "two")
WEIGHT_SHARING_MODES = ("none", "nested")


@contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without letting it change its buffers (BatchNorm running statistics): saved, then restored."""
    saved = [(buffer, buffer.detach().clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class _BinaryGate(torch.autograd.Function):
    """Identity on the active path's output; backward gives ``dL/dg_j = <dL/dout, o_j(x)>`` as ``p``'s gradient.

    Inputs: ``out`` (the active output ``o_a(x)``), ``x``, ``probs`` (the probabilities of the ``involved``
    candidates, a differentiable function of ``alpha``), the mixed op, the involved candidate indices and the
    active index. Only ``x`` and ``out`` are saved; the other outputs are recomputed under ``no_grad``.
    """

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, x: torch.Tensor, probs: torch.Tensor, mixed: MixedOp,
                involved: tuple[int, ...], active: int) -> torch.Tensor:
        ctx.save_for_backward(out, x)
        ctx.mixed, ctx.involved, ctx.active = mixed, involved, active
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        out, x = ctx.saved_tensors
        grad_probs = None
        if ctx.needs_input_grad[2]:
            gate_grads = []
            with torch.no_grad():
                for index in ctx.involved:
                    if index == ctx.active:
                        output = out
                    else:
                        candidate = ctx.mixed.ops[index]
                        with frozen_buffers(candidate):
                            output = candidate(x)
                    gate_grads.append(_gate_product(grad_out, output))
            grad_probs = torch.stack(gate_grads).to(grad_out.dtype)
        return grad_out, None, grad_probs, None, None, None


def _gate_product(grad_out: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``<dL/dout, o_j(x)>`` in float64. A candidate of another width (mnasnet's blocks) counts on the channels both
    have: the layers after see the active width only, so ``o_j`` is truncated or zero-padded to it."""
    c = min(grad_out.shape[1], output.shape[1])
    return (grad_out[:, :c].to(torch.float64) * output[:, :c].to(torch.float64)).sum()


class MixedOp(nn.Module):
    """All candidates of one searchable layer, its architecture parameters ``alpha`` and the sampled path."""

    def __init__(self, candidates: Sequence[tuple[str, OpSpec]], arch_grad: str = "full_v2",
                 weight_sharing: str = "none", variants: Sequence[Sequence[tuple[str, OpSpec]]] = ()) -> None:
        super().__init__()
        if not candidates:
            raise HwnasError("MixedOp: a searchable layer needs at least one candidate")
        _check_arch_grad(arch_grad)
        _check_weight_sharing(weight_sharing)
        self.names = tuple(name for name, _ in candidates)
        if is_elastic_layer(candidates):  # blocks of mnas layers: one shared block, whatever the mode
            self.ops, self.shared = build_elastic_candidates(variants or [candidates])
        else:
            self.ops, self.shared = build_candidates([spec for _, spec in candidates], weight_sharing == "nested")
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))
        self.mode = "weight"
        self.arch_grad = arch_grad
        self.active: int | None = None
        self.involved: tuple[int, ...] = ()

    def probs(self) -> torch.Tensor:
        """``p = softmax(alpha)`` (differentiable)."""
        return F.softmax(self.alpha, dim=0)

    def set_path(self, active: int, involved: Sequence[int] | None = None) -> None:
        """Fix the active path; ``involved``: the candidates whose gate gradients an arch step computes
        (default: all for ``full_v2``, ``active`` and the next candidate for ``two``)."""
        n = len(self.ops)
        if not 0 <= active < n:
            raise HwnasError(f"MixedOp: path {active} out of range for {n} candidates")
        if involved is None:
            involved = range(n) if self.arch_grad == "full_v2" or n == 1 else (active, (active + 1) % n)
        involved = tuple(int(i) for i in involved)
        if active not in involved or len(set(involved)) != len(involved) or not all(0 <= i < n for i in involved):
            raise HwnasError(f"MixedOp: involved paths {involved} must be distinct, in range and contain {active}")
        self.active, self.involved = int(active), involved

    def sample(self, generator: torch.Generator) -> None:
        """Sample the active path from ``p`` (and, for an arch step in ``two`` mode, the pair first)."""
        p = self.probs().detach().to(torch.float64).cpu()
        if self.mode == "arch" and self.arch_grad == "two" and len(self.ops) > 1:
            pair = torch.multinomial(p, 2, replacement=False, generator=generator).tolist()
            q = F.softmax(self.alpha.detach().to(torch.float64).cpu()[pair], dim=0)
            active = pair[int(torch.multinomial(q, 1, generator=generator))]
            self.set_path(active, pair)
        else:
            self.set_path(int(torch.multinomial(p, 1, generator=generator)))

    def rescale_pair(self, alpha_before: torch.Tensor) -> None:
        """``two`` mode: shift the involved ``alpha`` so ``sum_{j in pair} exp(alpha_j)`` is what it was before
        the step (ProxylessNAS's rescaling): the update moves probability within the pair only."""
        if self.arch_grad != "two" or len(self.involved) < 2:
            return
        pair = list(self.involved)
        with torch.no_grad():
            offset = torch.logsumexp(self.alpha[pair], 0) - torch.logsumexp(alpha_before.to(self.alpha)[pair], 0)
            self.alpha[pair] -= offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise HwnasError("MixedOp: no path chosen; call SuperNet.sample_paths() or SuperNet.set_arch() first")
        out = self.ops[self.active](x)
        if self.mode != "arch":
            return out
        if self.arch_grad == "full_v2":
            probs = self.probs()
        else:
            probs = F.softmax(self.alpha[list(self.involved)], dim=0)
        return _BinaryGate.apply(out, x, probs, self, self.involved, self.active)


class SuperNet(nn.Module):
    """Prefix ops, one :class:`MixedOp` per searchable layer, suffix ops; see the module docstring."""

    def __init__(self, space: SearchSpace, arch_grad: str = "full_v2", weight_sharing: str = "none") -> None:
        super().__init__()
        _check_arch_grad(arch_grad)
        _check_weight_sharing(weight_sharing)
        self.space = space
        self.arch_grad = arch_grad
        self.weight_sharing = weight_sharing
        self.prefix = nn.Sequential(*(build_op(spec) for spec in space.prefix))
        self.mixed_ops = nn.ModuleList(MixedOp(layer.candidates, arch_grad, weight_sharing,
                                               space.layer_variants(layer.index)) for layer in space.layers)
        self.suffix = nn.Sequential(*(build_op(spec) for spec in space.suffix))
        self.mode = "weight"

    # -- parameters -------------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """``alpha`` of every searchable layer, in layer order."""
        return [m.alpha for m in self.mixed_ops]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture parameters."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probs(self) -> list[torch.Tensor]:
        """``softmax(alpha_l)`` per layer (differentiable)."""
        return [m.probs() for m in self.mixed_ops]

    # -- paths ------------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """``"weight"``, ``"arch"`` or ``"fixed"`` (see the module docstring)."""
        if mode not in MODES:
            raise HwnasError(f"supernet mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        for m in self.mixed_ops:
            m.mode = mode

    def sample_paths(self, generator: torch.Generator) -> None:
        """Sample the active path per layer from ``p``: one path (mode ``weight``) or the binary gates of an
        arch step (mode ``arch``; in ``two`` mode the pair, then the active path from it)."""
        if self.mode == "fixed":
            raise HwnasError("supernet: mode 'fixed' takes its paths from set_arch(); set_mode('weight') or "
                             "set_mode('arch') before sample_paths()")
        for m in self.mixed_ops:
            m.sample(generator)

    def set_arch(self, arch: Architecture) -> None:
        """Fix one path per layer to ``arch``'s choices and switch to mode ``fixed``."""
        self.space.validate(arch)
        for m, choice in zip(self.mixed_ops, arch.choices):
            m.set_path(m.names.index(choice))
        self.set_mode("fixed")

    def argmax_arch(self) -> Architecture:
        """The architecture of the most probable candidate per layer (first on ties)."""
        return self.space.arch([m.names[int(torch.argmax(m.alpha.detach()))] for m in self.mixed_ops])

    def rescale_sampled_pairs(self, alphas_before: Sequence[torch.Tensor]) -> None:
        """After an optimizer step in ``two`` mode, rescale each sampled pair (:meth:`MixedOp.rescale_pair`)."""
        for m, before in zip(self.mixed_ops, alphas_before):
            m.rescale_pair(before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prefix(x)
        for m in self.mixed_ops:
            x = m(x)
        return self.suffix(x)


def _check_weight_sharing(weight_sharing: str) -> None:
    if weight_sharing not in WEIGHT_SHARING_MODES:
        raise HwnasError(f"weight_sharing must be one of {', '.join(WEIGHT_SHARING_MODES)}, got {weight_sharing!r}")


def _check_arch_grad(arch_grad: str) -> None:
    if arch_grad not in ARCH_GRAD_MODES:
        raise HwnasError(f"arch_grad must be one of {', '.join(ARCH_GRAD_MODES)}, got {arch_grad!r}")


class SavedTensorMeter:
    """Bytes of the activations autograd saves while active (``saved_tensors_hooks``): each storage counted
    once, parameters excluded. Use as a context manager around a forward; read ``nbytes`` after it."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._exclude and not isinstance(tensor, nn.Parameter):
            self._storages[storage.data_ptr()] = max(self._storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
