"""One contract over every registered predictor kind (issue 17), as scikit-learn's ``check_estimator`` runs over every
estimator: fit -> save -> load predicts the same floats; fitting and predicting leave the inputs as they were; the
held-out figures of ``evaluate_predictor`` are those computed here by hand; ``for_space`` gives an estimator whose
one-hot expectation is the prediction and through which one search step's gradient flows; ``with_rows`` refits into a
new predictor or refuses in one line. A kind registered without a recipe here fails the test.

The recipes fit on the tiny space with synthetic latencies (a hand-made table, a made-up prior, made-up kernel
costs): what is asserted is never those numbers, only the protocol.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from scipy import stats

from hwnas.errors import HwnasError
from hwnas.latency.predictors import PredictorMeta, load_predictor, predictor_kinds
from hwnas.latency.predictors.csvdata import write_measurements_csv
from hwnas.latency.predictors.fit import evaluate_predictor
from hwnas.latency.table import LatencyTable
from hwnas.spaces import get_space

SPACE = get_space("tiny", 32)


@dataclass
class Recipe:
    """How to fit a small predictor of a kind: ``fit(**inputs)``."""

    fit: Callable[..., Any]
    inputs: dict[str, Any]


def _stats(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}


def _calibrated() -> Recipe:
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.predictors.calibrated import fit_calibrated

    table = LatencyTable(device={"name": "synthetic"}, space=SPACE.name, resolution=SPACE.resolution,
                         num_classes=SPACE.num_classes, fingerprint={}, protocol={}, overhead=_stats(0.01),
                         entries={s.key(): _stats(0.02 + s.macs() / 1e7) for s in SPACE.all_specs()})
    rng = random.Random(0)
    archs = SPACE.sample_archs(14, rng)
    table_sum = TableEstimator(table, SPACE)
    latencies = np.array([1.3 * table_sum.latency_ms(a) * rng.uniform(0.97, 1.03) for a in archs])
    return Recipe(fit_calibrated, {"space": SPACE, "archs": archs, "latencies_ms": latencies, "table": table,
                                   "meta": PredictorMeta(device="synthetic", reference_ms=1.0), "residual": "linear"})


def _transfer() -> Recipe:
    from hwnas.latency.predictors.transfer import fit_transfer

    rng = np.random.default_rng(0)
    tables = {f"dev{d}": (rng.uniform(1, 3), [rng.uniform(0.1, 1.0, len(layer.names)) for layer in SPACE.layers])
              for d in range(2)}

    def latency(device: str, arch) -> float:  # noqa: ANN001
        fixed, costs = tables[device]
        return fixed + sum(row[layer.names.index(c)] for row, layer, c in zip(costs, SPACE.layers, arch.choices))

    prior_archs = SPACE.sample_archs(60, random.Random(1))
    archs = SPACE.sample_archs(8, random.Random(2))
    prior = {d: np.array([latency(d, a) for a in prior_archs]) for d in tables}
    latencies = np.array([0.5 * latency("dev0", a) + 1.5 * latency("dev1", a) + 0.3 for a in archs])
    return Recipe(fit_transfer, {"space": SPACE, "prior_archs": prior_archs, "prior_latencies": prior,
                                 "archs": archs, "latencies": latencies, "device": "synthetic"})


def _kernel() -> Recipe:
    import tempfile

    from hwnas.latency.kernels.features import FEATURES
    from hwnas.latency.kernels.onnx_split import split_onnx
    from hwnas.latency.kernels.sample import perturb
    from hwnas.latency.predictors.kernel import fit_kernel_predictor
    from hwnas.runtimes.converters import to_onnx

    networks = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(SPACE.sample_archs(3, random.Random(3))):
            networks.append(split_onnx(to_onnx(SPACE.build(arch).eval(), SPACE.input_shape, Path(tmp) / f"{i}.onnx"),
                                       16))
    seeds = list(dict.fromkeys(k for ops in networks for k in ops if k.type != "reshape"))
    rng = random.Random(4)
    kernels = seeds + [k for k in (perturb(rng.choice(seeds), rng, 16) for _ in range(40)) if k is not None]

    def cost(kernel) -> float:  # noqa: ANN001
        return 1e-3 + kernel.macs * 2e-9 + (kernel.input_elements + kernel.output_elements) * 1e-8

    measured = [(ops, 0.002 + 1.2 * sum(cost(k) for k in ops if k.type != "reshape") ** 0.9) for ops in networks]
    meta = PredictorMeta(device="synthetic", reference_ms=2.0, features=list(FEATURES))
    return Recipe(fit_kernel_predictor, {"kernels": kernels, "costs": np.array([cost(k) for k in kernels]),
                                         "meta": meta, "overhead_ratio": 0.002, "block": 16, "networks": measured})


RECIPES: dict[str, Callable[[], Recipe]] = {"calibrated": _calibrated, "transfer": _transfer, "kernel": _kernel}


def _missing_recipes(kinds: list[str]) -> list[str]:
    return [kind for kind in kinds if kind not in RECIPES]


def test_a_kind_without_a_recipe_is_caught() -> None:
    assert _missing_recipes(predictor_kinds()) == []
    assert _missing_recipes([*predictor_kinds(), "new-kind"]) == ["new-kind"]


def _same(a: Any, b: Any) -> bool:
    """Deep equality that compares numpy arrays by value (and dataclasses, dicts, lists through ``==``)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dict__") and type(a) is type(b) and not hasattr(a, "__dataclass_fields__"):
        return _same(vars(a), vars(b))
    return bool(a == b)


def _file_content(predictor: Any) -> dict[str, Any]:
    return {k: v for k, v in predictor.to_dict().items() if k != "saved"}


@pytest.fixture(scope="module", params=predictor_kinds())
def fitted(request: pytest.FixtureRequest) -> tuple[str, Recipe, dict[str, Any], Any]:
    """(kind, recipe, a deep copy of the inputs taken before fitting, the fitted predictor)."""
    kind = request.param
    if kind not in RECIPES:
        pytest.fail(f"predictor kind {kind!r} is registered but has no recipe in tests/test_predictor_contract.py")
    recipe = RECIPES[kind]()
    before = copy.deepcopy(recipe.inputs)
    return kind, recipe, before, recipe.fit(**recipe.inputs)


PROBES = SPACE.sample_archs(3, random.Random(9))


def test_fit_save_load_predicts_the_same_floats(fitted, tmp_path: Path) -> None:  # noqa: ANN001
    kind, _, _, predictor = fitted
    loaded = load_predictor(predictor.save(tmp_path / f"{kind}.json"))
    assert loaded.kind == predictor.kind == kind and type(loaded) is type(predictor)
    for arch in PROBES:
        assert loaded.predict(arch).ms == predictor.predict(arch).ms
        assert [t["ms"] for t in loaded.predict(arch).terms] == [t["ms"] for t in predictor.predict(arch).terms]


def test_fitting_and_predicting_leave_the_inputs_untouched(fitted) -> None:  # noqa: ANN001
    _, recipe, before, predictor = fitted
    assert _same(recipe.inputs, before)
    state = _file_content(predictor)
    predictor.predict(PROBES[0])
    predictor.for_space(SPACE).expected_latency_ms(
        [torch.full((len(layer.names),), 1.0 / len(layer.names), dtype=torch.float64) for layer in SPACE.layers])
    assert _same(recipe.inputs, before) and _same(_file_content(predictor), state)


def _hand_figures(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """MAPE (%), the share within +-10% (%) and Spearman's rho, written out: rho is Pearson's r of the ranks."""
    relative = np.abs(predicted - measured) / measured
    rp, rm = stats.rankdata(predicted), stats.rankdata(measured)
    rho = float(np.sum((rp - rp.mean()) * (rm - rm.mean())) / np.sqrt(np.sum((rp - rp.mean()) ** 2)
                                                                        * np.sum((rm - rm.mean()) ** 2)))
    return {"mape": 100.0 * float(relative.mean()), "within10_pct": 100.0 * float(np.mean(relative <= 0.1)),
            "spearman": rho}


def test_held_out_figures_are_computed_as_by_hand(fitted, tmp_path: Path) -> None:  # noqa: ANN001
    kind, _, _, predictor = fitted
    held_out = SPACE.sample_archs(6, random.Random(11))
    predicted = np.array([predictor.predict(a).ms for a in held_out])
    factors = np.array([1.05, 0.8, 1.3, 0.97, 1.6, 1.02])  # measured = predicted x factor: 3 within 10%, 3 not
    measured = predicted * factors
    csv = write_measurements_csv(tmp_path / "held_out.csv", held_out, {"synthetic": measured})
    result = evaluate_predictor(predictor, csv=csv, column="synthetic", space=SPACE if kind == "kernel" else None)
    hand = _hand_figures(predicted, measured)
    assert result["n"] == 6 and result["within10_pct"] == hand["within10_pct"] == 50.0
    assert result["mape"] == pytest.approx(hand["mape"], rel=1e-9)
    assert result["mape"] == pytest.approx(100 * np.mean(np.abs(1 / factors - 1)), rel=1e-6)
    assert result["spearman"] == pytest.approx(hand["spearman"], rel=1e-12)


def test_for_space_is_exact_at_one_hot_and_a_search_step_has_a_gradient(fitted) -> None:  # noqa: ANN001
    _, _, _, predictor = fitted
    estimator = predictor.for_space(SPACE)
    for arch in PROBES:
        one_hot = [torch.nn.functional.one_hot(torch.tensor(layer.names.index(c)), len(layer.names)).double()
                   for layer, c in zip(SPACE.layers, arch.choices)]
        assert float(estimator.expected_latency_ms(one_hot)) == pytest.approx(predictor.predict(arch).ms, rel=1e-9)
        assert float(estimator.anchored(arch).expected_latency_ms(one_hot)) == pytest.approx(
            predictor.predict(arch).ms, rel=1e-9)
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(len(layer.names), generator=gen, requires_grad=True) for layer in SPACE.layers]
    expected = estimator.expected_latency_ms([torch.softmax(x, 0) for x in logits])
    expected.backward()
    assert torch.isfinite(expected) and all(torch.isfinite(x.grad).all() for x in logits)
    assert any(x.grad.abs().sum() > 0 for x in logits)


def test_with_rows_is_a_new_predictor_or_one_line(fitted) -> None:  # noqa: ANN001
    _, _, _, predictor = fitted
    arch = PROBES[0]
    before = predictor.predict(arch).ms
    state = _file_content(predictor)
    if not predictor.supports_refit:
        with pytest.raises(HwnasError) as error:
            predictor.with_rows([arch], [3.0 * before])
        assert "\n" not in str(error.value)
        return
    refitted = predictor.with_rows([arch], [3.0 * before], weight=20.0)
    assert refitted is not predictor and type(refitted) is type(predictor)
    assert refitted.predict(arch).ms > before  # it learned from the added network (measured 3x slower)
    assert predictor.predict(arch).ms == before and _same(_file_content(predictor), state)
