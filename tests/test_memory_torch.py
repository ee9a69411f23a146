"""The core of benchmarks/memory_torch.py (issue 20 item 2, a second runtime): the dispatch-mode tracker of live
activation bytes against hand-counted modules, BatchNorm folding, and the "torch rule" against the tracker.

Hand counts are in fp32 elements at batch 1. In eager torch the caller's input stays referenced (the test holds
it, a Sequential holds its current input until the step returns), so it is alive throughout."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from benchmarks.memory_torch import PeakTracker, checked_fold, fold_batchnorm, main, torch_peak, torch_rule_peak
from hwnas.ops import build_op
from hwnas.ops.specs import ConvSpec, DWSepSpec, LinearSpec, MBConvSpec, PoolSpec, SkipSpec, ZeroSpec
from hwnas.spaces import get_space


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _Residual(nn.Module):
    def __init__(self, channels: int, in_place: bool) -> None:
        super().__init__()
        self.conv, self.in_place = _conv(channels, channels), in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.add_(x) if self.in_place else x + y


class _SqueezeExcite(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


def _peak_elements(module: nn.Module, shape: tuple[int, ...]) -> int:
    peak, _ = torch_peak(module.eval(), shape)
    assert peak % 4 == 0
    return peak // 4


def test_chain_frees_each_intermediate_when_the_next_step_returns():
    """8 -> 16 -> 1 -> 16 channels at 8x8: conv3 runs beside o2 only (o1 freed), so the peak is I + o1 + o2."""
    chain = nn.Sequential(_conv(8, 16), _conv(16, 1), _conv(1, 16))
    image, o1, o2, o3 = 8 * 64, 16 * 64, 1 * 64, 16 * 64
    assert _peak_elements(chain, (1, 8, 8, 8)) == image + max(o1 + o2, o2 + o3) == image + o1 + o2
    assert image + o1 + o2 < image + o1 + o2 + o3  # a tracker that never freed would give this


def test_input_counts_and_parameters_do_not():
    """Flatten aliases its input; the linear's transposed weight is a parameter view; only I and the logits count."""
    head = nn.Sequential(nn.Flatten(), nn.Linear(32, 10))
    assert _peak_elements(head, (1, 32, 1, 1)) == 32 + 10


@pytest.mark.parametrize("in_place, expected", [(False, 3 * 4 * 36), (True, 2 * 4 * 36)])
def test_residual_add_allocates_unless_in_place(in_place, expected):
    """x + f(x) holds x, f(x) and the sum; f(x).add_(x) holds x and f(x)."""
    assert _peak_elements(_Residual(4, in_place), (1, 4, 6, 6)) == expected


def test_squeeze_excite_multiply_allocates():
    """x * sigmoid(mean(x)): x, the pooled vector and its sigmoid, then x, the gate and the product."""
    x, c = 4 * 36, 4
    assert _peak_elements(_SqueezeExcite(), (1, 4, 6, 6)) == max(x + c + c, x + c + x) == 2 * x + c


def test_tracker_counts_a_storage_once_and_frees_it():
    tracker = PeakTracker()
    with torch.inference_mode(), tracker:
        a = torch.zeros(100)
        b = a.view(10, 10)
        tracker.track(b)
        del a, b
        c = torch.zeros(50)
    assert (tracker.peak, tracker.current) == (400, 200)
    del c


def test_fold_batchnorm_keeps_outputs_and_leaves_no_batchnorm():
    module = build_op(MBConvSpec(8, 8, 8, e=3, k=3, s=1)).eval()
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    folded = checked_fold(module, (1, 8, 8, 8), 1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules())  # the input module is untouched
    assert all(m.inplace for m in folded.modules() if isinstance(m, nn.ReLU6))


def test_folding_makes_conv_bn_act_one_tensor():
    """ConvBNAct (ReLU6 not in place): unfolded I + conv + BN output (+ act), folded I + y."""
    module = build_op(ConvSpec(4, 8, 6, k=3, s=1))
    image, y = 4 * 36, 8 * 36
    assert _peak_elements(fold_batchnorm(module), (1, 4, 6, 6)) == image + y
    assert _peak_elements(module, (1, 4, 6, 6)) > image + y


EDGE_SPECS = [  # every branch of the torch rule: shuffle, no expansion, SE, strided, residual, dwsep, skip, head
    MBConvSpec(16, 16, 8, e=4, k=3, s=1, se=1, act="hswish", g=2, pw=1),
    MBConvSpec(16, 24, 8, e=1, k=3, s=2, se=1, act="relu", pw=0),
    MBConvSpec(16, 16, 8, e=1, k=5, s=1, act="relu", pw=0), MBConvSpec(8, 8, 8, e=3, k=3, s=1),
    MBConvSpec(8, 16, 8, e=6, k=5, s=2, se=1), DWSepSpec(8, 16, 8, k=3, s=1), DWSepSpec(8, 16, 8, k=5, s=2),
    SkipSpec(8, 16, 8, s=2), SkipSpec(8, 8, 8, s=1), ZeroSpec(8, 8, 8), PoolSpec(32, 32, 4), LinearSpec(32, 10, 1),
    ConvSpec(3, 8, 16, k=3, s=2),
]


@pytest.mark.parametrize("spec", EDGE_SPECS, ids=lambda spec: spec.key())
def test_torch_rule_equals_the_tracker_per_op(spec):
    module = fold_batchnorm(build_op(spec).eval())
    assert torch_peak(module, spec.input_shape)[0] == torch_rule_peak([spec])


@pytest.mark.parametrize("space_name", ["proxyless", "tiny"])
def test_torch_rule_equals_the_tracker_on_sampled_networks(space_name):
    space = get_space(space_name, 32)
    for arch in space.sample_archs(2, random.Random(1)):
        net = space.build(arch).eval()
        assert torch_peak(checked_fold(net, space.input_shape, 1e-4), space.input_shape)[0] == torch_rule_peak(
            net.specs)


def test_benchmark_prints_rows_and_the_agreement(capsys):
    main(["--no-zoo", "--n", "2", "--resolution", "32"])
    out = capsys.readouterr().out
    assert out.count("| proxyless#") == 2 and "torch = torch rule, to the byte, for 2 of 2" in out
