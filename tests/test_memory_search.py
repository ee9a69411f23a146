"""Memory-bounded search (MemNet, issue 20 item 3): the two-budget decoder against brute force, the bound through
the decoders, evolution, random baselines and the search run, the refusals, and the 3-D Pareto front."""

from __future__ import annotations

import itertools
import json
import math
import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.search.decode import decode_in_band, decode_under_target, fastest_arch, slowest_arch
from hwnas.search.decode_memory import (best_within, bounded_target, decode_within, fastest_within,
                                        in_band_within, refuse_unreachable_target)
from hwnas.search.decoders import EvolutionDecoder, ProbsDecoder
from hwnas.search.evolution import EvolutionConfig, evolve
from hwnas.search.memory_bound import MemoryBound
from hwnas.search.pareto import ParetoPoint, front_memory_indices, load_pareto, write_pareto
from hwnas.search.random_baselines import predicted_in_band
from hwnas.search.run import run_search
from hwnas.spaces import get_space
from hwnas.spaces.footprint import MB, arch_footprint, layer_peak_bytes
from tests.test_search_core import _estimator
from hwnas.search.run_config import SearchConfig
from tests.test_search_run import _config, tables  # noqa: F401 (tables: the fixture)
from tests.test_search_run import _estimator as search_run_estimator


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)  # the made-up log-probabilities are the same on every run


def _all_archs(space: Any) -> list[Any]:
    return [space.arch(c) for c in itertools.product(*(layer.names for layer in space.layers))]


def _score(space: Any, log_probs: list[list[float]], arch: Any) -> float:
    return sum(lp[layer.names.index(c)] for lp, layer, c in zip(log_probs, space.layers, arch.choices))


def _within(space: Any, arch: Any, memory_mb: float | None, params_mb: float | None) -> bool:
    footprint = arch_footprint(space, arch)
    return ((memory_mb is None or footprint.peak_activation_bytes <= memory_mb * MB)
            and (params_mb is None or footprint.params_bytes <= math.floor(params_mb * MB)))


# -- the two-budget knapsack against brute force ---------------------------------------------------------------
def test_best_within_matches_brute_force_on_random_instances() -> None:
    found = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        counts = [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 6)))]
        values = [rng.normal(size=n) * 2 for n in counts]
        latency = [rng.uniform(0, 1, size=n) for n in counts]
        params = [rng.integers(0, 100, size=n).astype(float) for n in counts]
        if seed % 3 == 0:  # masked candidates cost inf
            for cost in latency:
                cost[rng.random(len(cost)) < 0.25] = np.inf
        budgets = [rng.uniform(0, 0.8 * len(counts)), float(rng.integers(0, 100 * len(counts)))]
        low = rng.uniform(0, budgets[0]) if seed % 4 == 0 else -math.inf
        best = None
        for picks in itertools.product(*(range(n) for n in counts)):
            lat = sum(latency[l][i] for l, i in enumerate(picks))
            par = sum(params[l][i] for l, i in enumerate(picks))
            if low <= lat <= budgets[0] and par <= budgets[1]:
                value = sum(values[l][i] for l, i in enumerate(picks))
                best = value if best is None else max(best, value)
        got = best_within(values, [latency, params], budgets, low=low)
        assert (got is None) == (best is None), seed
        if got is not None:
            found += 1
            picks, value = got
            assert value == pytest.approx(best, abs=1e-9), seed
            assert sum(latency[l][i] for l, i in enumerate(picks)) <= budgets[0] + 1e-9
            assert sum(params[l][i] for l, i in enumerate(picks)) <= budgets[1]
    assert found > 100  # the instances are not all infeasible


# -- the decoders on the tiny space against brute force --------------------------------------------------------
def _bounds(space: Any) -> list[tuple[float | None, float | None]]:
    """Peak bounds between the smallest and largest candidate peaks, parameter bounds across the range."""
    params = sorted({arch_footprint(space, a).params_mb for a in _all_archs(space)})
    return [(0.04, None), (0.05, None), (0.04, params[len(params) // 3]), (None, params[len(params) // 2]),
            (0.031250001, params[2 * len(params) // 3])]


def test_decode_within_matches_brute_force_and_never_exceeds_a_budget() -> None:
    space = get_space("tiny")
    archs = _all_archs(space)
    rng = random.Random(0)
    for trial in range(12):
        estimator = _estimator(space, seed=trial)
        log_probs = [torch.log_softmax(torch.randn(len(layer.names)) * 2, 0).tolist() for layer in space.layers]
        low = estimator.latency_ms(fastest_arch(space, estimator))
        high = estimator.latency_ms(slowest_arch(space, estimator))
        for memory_mb, params_mb in _bounds(space):
            bound = MemoryBound.of(space, memory_mb, params_mb)
            fitting = [a for a in archs if _within(space, a, memory_mb, params_mb)]
            assert [a for a in archs if bound.fits(a)] == fitting  # the mask and the sum are the footprint's
            fastest = fastest_within(space, estimator, bound)
            assert bound.fits(fastest)
            assert estimator.latency_ms(fastest) == pytest.approx(min(map(estimator.latency_ms, fitting)), abs=1e-12)
            for target in (rng.uniform(low, high), estimator.latency_ms(rng.choice(fitting)), high + 1.0, low):
                arch = decode_within(space, log_probs, estimator, target, bound)
                feasible = [a for a in fitting if estimator.latency_ms(a) <= target]
                if not feasible:
                    assert arch is None
                    continue
                assert arch is not None and bound.fits(arch) and estimator.latency_ms(arch) <= target
                assert _score(space, log_probs, arch) == pytest.approx(
                    max(_score(space, log_probs, a) for a in feasible), abs=1e-9), (trial, memory_mb, params_mb)


def test_the_default_target_under_a_bound_lies_between_the_fastest_and_slowest_architectures_within_it() -> None:
    """Brute force over tiny's 144 architectures: the fastest and the slowest that fit each bound, and T at the
    fraction between them (before, the default T was the whole space's and could lie under every fitting one)."""
    space = get_space("tiny")
    archs = _all_archs(space)
    for trial in range(4):
        estimator = _estimator(space, seed=trial)
        for memory_mb, params_mb in _bounds(space):
            fitting = [estimator.latency_ms(a) for a in archs if _within(space, a, memory_mb, params_mb)]
            bound = MemoryBound.of(space, memory_mb, params_mb)
            target, fastest, slowest = bounded_target(space, estimator, bound, 0.4)
            assert (fastest, slowest) == pytest.approx((min(fitting), max(fitting)), abs=1e-12)
            assert target == pytest.approx(min(fitting) + 0.4 * (max(fitting) - min(fitting)), abs=1e-12)


def test_in_band_within_matches_brute_force() -> None:
    space = get_space("tiny")
    archs = _all_archs(space)
    rng = random.Random(1)
    for trial in range(8):
        estimator = _estimator(space, seed=50 + trial)
        log_probs = [torch.log_softmax(torch.randn(len(layer.names)) * 3, 0).tolist() for layer in space.layers]
        low = estimator.latency_ms(fastest_arch(space, estimator))
        high = estimator.latency_ms(slowest_arch(space, estimator))
        for memory_mb, params_mb in _bounds(space):
            bound = MemoryBound.of(space, memory_mb, params_mb)
            a, b = sorted(rng.uniform(low, high) for _ in range(2))
            inside = [x for x in archs if _within(space, x, memory_mb, params_mb) and a <= estimator.latency_ms(x) <= b]
            arch = in_band_within(space, log_probs, estimator, a, b, bound)
            if not inside:
                assert arch is None
                continue
            assert arch is not None and bound.fits(arch) and a <= estimator.latency_ms(arch) <= b
            assert _score(space, log_probs, arch) == pytest.approx(max(_score(space, log_probs, x) for x in inside),
                                                                  abs=1e-9)


def test_no_bound_and_an_all_true_mask_decode_as_before() -> None:
    space = get_space("proxyless", 32)
    estimator = _estimator(space, seed=7)
    log_probs = [torch.log_softmax(torch.randn(len(layer.names)), 0).tolist() for layer in space.layers]
    everything = [[True] * len(layer.names) for layer in space.layers]
    low = estimator.latency_ms(fastest_arch(space, estimator))
    high = estimator.latency_ms(slowest_arch(space, estimator))
    for target in (low, low + 0.3 * (high - low), high):
        plain = decode_under_target(space, log_probs, estimator, target)
        assert decode_within(space, log_probs, estimator, target, None) == plain
        assert decode_under_target(space, log_probs, estimator, target, allowed=everything) == plain
        assert decode_in_band(space, log_probs, estimator, 0.9 * target, target, allowed=everything) == \
            decode_in_band(space, log_probs, estimator, 0.9 * target, target)
    assert ProbsDecoder(space, log_probs).fastest(estimator) == fastest_arch(space, estimator)


def test_two_budgets_on_proxyless_meet_both_and_beat_random_fitting_draws() -> None:
    space = get_space("proxyless", 32)
    estimator = _estimator(space, seed=3)
    rng = random.Random(4)
    log_probs = [torch.log_softmax(torch.randn(len(layer.names)), 0).tolist() for layer in space.layers]
    peaks = layer_peak_bytes(space)
    memory_mb = (max(min(p) for p in peaks) + max(max(p) for p in peaks)) / 2 / MB
    small, large = (arch_footprint(space, a(space, estimator)).params_mb for a in (fastest_arch, slowest_arch))
    bound = MemoryBound.of(space, memory_mb, (small + large) / 2)
    decoder = ProbsDecoder(space, log_probs, bound)
    low, high = estimator.latency_ms(decoder.fastest(estimator)), estimator.latency_ms(slowest_arch(space, estimator))
    for target in (low, low + 0.3 * (high - low), high):
        arch = decoder.under(estimator, target)
        assert arch is not None and bound.fits(arch) and estimator.latency_ms(arch) <= target
        for _ in range(200):
            other = bound.random_arch(rng)
            if bound.fits(other) and estimator.latency_ms(other) <= target:
                assert _score(space, log_probs, arch) >= _score(space, log_probs, other) - 1e-9
    assert decoder.under(estimator, low * (1 - 1e-6)) is None


# -- refusals --------------------------------------------------------------------------------------------------
def test_a_bound_no_architecture_meets_is_refused_with_the_smallest_figure() -> None:
    space = get_space("tiny")
    with pytest.raises(HwnasError) as error:
        MemoryBound.of(space, 0.01)
    message = str(error.value)
    assert message.startswith("no architecture of tiny@32 fits --max-memory-mb 0.01: the smallest needs ")
    smallest = float(message.split("needs ")[1].split(" MB")[0])
    assert smallest == pytest.approx(32768 / MB, rel=1e-3) and "\n" not in message
    assert MemoryBound.of(space, smallest) is not None  # the figure given back is accepted
    with pytest.raises(HwnasError, match=r"^no architecture of tiny@32 within --max-memory-mb 0.04 fits "
                                         r"--max-params-mb 0.001: the smallest needs 0.0\d+ MB of parameters$"):
        MemoryBound.of(space, 0.04, 0.001)
    assert MemoryBound.of(space, None, None) is None


def test_a_target_under_the_fastest_architecture_within_the_bound_is_refused() -> None:
    space = get_space("tiny")
    bound = MemoryBound.of(space, 0.04)
    # made-up tables where an e6 op (over the bound in layers 0-1) is the fastest somewhere
    seed = next(s for s in range(100) if fastest_within(space, _estimator(space, s), bound)
                != fastest_arch(space, _estimator(space, s)))
    estimator = _estimator(space, seed)
    fastest_ms = estimator.latency_ms(fastest_within(space, estimator, bound))
    assert estimator.latency_ms(fastest_arch(space, estimator)) < fastest_ms
    refuse_unreachable_target(space, estimator, fastest_ms, bound)
    refuse_unreachable_target(space, estimator, 0.5 * fastest_ms, None)
    with pytest.raises(HwnasError, match=r"^target .* ms is below the fastest architecture of tiny@32 within "
                                         r"--max-memory-mb 0.04 \(est\. .* ms\): no architecture meets both; give "
                                         r"--target-ms .* or more, or a looser bound$"):
        refuse_unreachable_target(space, estimator, fastest_ms * 0.999, bound)


def test_cli_refuses_a_bad_or_unreachable_bound_in_one_line(tables: Path, tmp_path: Path,  # noqa: F811
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    quick = ["--device", "cpu-torch", "--space", "tiny", "--epochs", "0", "--warmup-epochs", "0",
             "--train-epochs", "0", "--set", "measure=false", "--set", "predictor=none", "--quiet"]
    for flags, expected in ((["--max-memory-mb", "0"], "field 'max_memory_mb': expected a finite number > 0"),
                            (["--max-params-mb", "-1"], "field 'max_params_mb'"),
                            (["--max-memory-mb", "0.01"], "no architecture of tiny@32 fits --max-memory-mb 0.01")):
        assert main(["search", *quick, *flags, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hwnas: ") and expected in err and len(err.splitlines()) == 1, err


# -- evolution, random baselines -------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [False, True])
def test_evolution_never_evaluates_a_candidate_over_the_memory_bound(params: bool) -> None:
    space = get_space("proxyless", 32)
    estimator = _estimator(space, seed=5)
    peaks = layer_peak_bytes(space)
    memory_mb = (max(min(p) for p in peaks) + max(max(p) for p in peaks)) / 2 / MB
    small, large = (arch_footprint(space, a(space, estimator)).params_mb for a in (fastest_arch, slowest_arch))
    bound = MemoryBound.of(space, memory_mb, (small + large) / 2 if params else None)
    low = estimator.latency_ms(fastest_within(space, estimator, bound))
    target = low + 0.3 * (estimator.latency_ms(slowest_arch(space, estimator)) - low)
    evaluated = []

    def accuracy_of(arch: Any) -> float:
        evaluated.append(arch)
        return random.Random(zlib.crc32(" ".join(arch.choices).encode())).random()  # deterministic

    result = evolve(space, accuracy_of, estimator.latency_ms, target, lambda a, lat, t: a, target,
                    EvolutionConfig(population=12, generations=4, seed=1), memory=bound)
    assert evaluated and all(bound.fits(a) and estimator.latency_ms(a) <= target for a in evaluated)
    assert result.rejected_memory > 0  # mutations and crossovers over the bound were drawn, and screened out
    decoder = EvolutionDecoder(space, accuracy_of, lambda a, lat, t: a, EvolutionConfig(population=6,
                               generations=2), memory=bound)
    assert bound.fits(decoder.fastest(estimator)) and bound.fits(decoder.under(estimator, target))
    assert decoder.runs[-1]["rejected_memory"] >= 0


def test_random_baselines_draw_only_architectures_within_the_bound() -> None:
    space = get_space("proxyless", 32)
    estimator = _estimator(space, seed=6)
    peaks = layer_peak_bytes(space)
    bound = MemoryBound.of(space, (max(min(p) for p in peaks) + max(max(p) for p in peaks)) / 2 / MB)
    low, high = (estimator.latency_ms(a(space, estimator)) for a in (fastest_arch, slowest_arch))
    drawn = predicted_in_band(space, estimator, low, high, 20, random.Random(0), bound)
    assert len(drawn) == 20 and all(bound.fits(a) for a in drawn)
    unbounded = predicted_in_band(space, estimator, low, high, 20, random.Random(0))
    assert not all(bound.fits(a) for a in unbounded)  # the bound binds on this space


# -- the 3-D Pareto front --------------------------------------------------------------------------------------
def _dominates(a: ParetoPoint, b: ParetoPoint) -> bool:
    no_worse = a.latency_ms <= b.latency_ms and a.accuracy >= b.accuracy and a.memory_mb <= b.memory_mb
    return no_worse and (a.latency_ms, a.accuracy, a.memory_mb) != (b.latency_ms, b.accuracy, b.memory_mb)


def test_the_memory_front_is_the_brute_force_non_dominated_set() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        n = rng.randint(0, 30)
        grid = rng.choice([3, 10, 1000])  # coarse grids make ties on every axis
        points = [ParetoPoint("a", rng.randint(0, grid) / grid, rng.randint(0, grid) / grid, False, "x",
                              memory_mb=None if rng.random() < 0.1 else rng.randint(0, grid) / grid)
                  for _ in range(n)]
        front = front_memory_indices(points)
        expected = set()
        for i, p in enumerate(points):
            if p.memory_mb is None or any(q.memory_mb is not None and _dominates(q, p) for q in points):
                continue
            twins = [j for j, q in enumerate(points) if (q.latency_ms, q.accuracy, q.memory_mb) ==
                     (p.latency_ms, p.accuracy, p.memory_mb)]
            expected.add(min(twins))
        assert set(front) == expected and len(front) == len(set(front)), seed
        assert [points[i].latency_ms for i in front] == sorted(points[i].latency_ms for i in front)


def test_pareto_json_has_the_memory_front_and_reads_back(tmp_path: Path) -> None:
    points = [ParetoPoint("a", 0.9, 2.0, True, "x", memory_mb=1.0), ParetoPoint("b", 0.8, 1.0, True, "x",
                                                                               memory_mb=2.0),
              ParetoPoint("c", 0.8, 2.0, True, "x", memory_mb=0.5), ParetoPoint("d", 0.7, 2.5, True, "x",
                                                                               memory_mb=3.0)]
    path = write_pareto(tmp_path / "pareto.json", None, points, "t", 2.0)
    data = json.loads(path.read_text())
    assert data["front"] == [1, 0] and sorted(data["front_memory"]) == [0, 1, 2]
    assert data["memory_axes"]["z"] == "memory_mb" and data["fronts"][0]["memory_indices"] == data["front_memory"]
    loaded, _ = load_pareto(path)
    assert loaded == points
    with pytest.raises(ValueError, match="memory_mb"):
        ParetoPoint("a", 0.5, 1.0, True, "x", memory_mb=-1.0)


# -- end to end ------------------------------------------------------------------------------------------------
def test_a_memory_bounded_search_returns_a_network_within_the_bound(tables: Path, tmp_path: Path,  # noqa: F811
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # tiny's candidate peaks run from 0.03125 MB (e3 in layer 0) to 0.0586 MB (e6): 0.04 forbids k3_e6 in layers 0-1
    bound = 0.04
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**_config(tmp_path / "x").to_dict(), "out": None, "closed_loop_steps": 2,
                                  "strategy": "evolution", "evolution_population": 6, "evolution_generations": 2,
                                  "evolution_images": 32}))
    assert main(["search", "--config", str(config), "--max-memory-mb", str(bound), "--out", str(tmp_path / "run"),
                 "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_memory_mb"] == bound and "max_params_mb" not in result
    assert result["memory_mb"]["peak_activation_mb"] <= bound
    assert result["estimated_ms"] <= result["target_ms"]
    space = get_space("tiny", 32)
    arch = space.arch(result["arch"]["choices"])
    assert arch_footprint(space, arch).to_dict() == result["memory_mb"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["max_memory_mb"] == bound and report["memory_mb"] == result["memory_mb"]
    points, _ = load_pareto(tmp_path / "run" / "pareto.json")
    evolved = [p for p in points if p.source == "evolution"]
    assert evolved and all(p.memory_mb is not None and p.memory_mb <= bound for p in evolved)
    assert sum(run["rejected_memory"] for run in report["evolution"]) > 0  # uniform draws would break the bound


def test_a_proxyless_search_under_two_budgets(tables: Path, tmp_path: Path) -> None:  # noqa: F811
    space = get_space("tiny", 32)
    params = sorted(arch_footprint(space, a).params_mb for a in _all_archs(space))
    params_mb = params[len(params) // 2]
    result = run_search(_config(tmp_path / "run", closed_loop_steps=2, max_memory_mb=0.04, max_params_mb=params_mb),
                        progress=False)
    assert result["memory_mb"]["peak_activation_mb"] <= 0.04 and result["memory_mb"]["params_mb"] <= params_mb
    assert result["max_params_mb"] == params_mb and result["estimated_ms"] <= result["target_ms"]
    assert "within --max-memory-mb 0.04 --max-params-mb" in result["decode"]
    # no --target-ms: the default target lies among the architectures within the bound, at the default fraction
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fraction = SearchConfig().target_fraction
    assert report["target_ms"] == pytest.approx(report["fastest_ms"] + fraction * (report["slowest_ms"]
                                                                                   - report["fastest_ms"]))
    estimator = search_run_estimator()  # the run's table; brute force over the architectures within both budgets
    fitting = [estimator.latency_ms(a) for a in _all_archs(estimator.space) if
               _within(estimator.space, a, 0.04, params_mb)]
    assert (report["fastest_ms"], report["slowest_ms"]) == pytest.approx((min(fitting), max(fitting)))
