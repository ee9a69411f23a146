"""Sampling and measuring kernels for the kernel predictor (nn-Meter's adaptive data sampler, made cheap).

1. *Seeds*: the kernels of the zoo networks and of random ProxylessNAS architectures at a few resolutions.
2. *Random neighbours*: each seed's shapes varied over wide ranges (spatial 1..224, channels 8..2048, kernel
   1/3/5/7, stride 1/2, activations), keeping what decides how the runtime runs it (the backend's ``neighbour``:
   for ORT, blocked or not and channel alignment).
3. *Adaptive rounds*: fit an ensemble of XGBoost models per kernel type on bootstrap samples of what was
   measured, draw many candidates, and measure next those the ensemble disagrees on most (the largest standard
   deviation of the predicted log latency).

Every kernel is measured paired with the generic reference network and kept in a resumable file
(:mod:`.store`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwnas.latency.kernels.backends import KernelBackend, kernel_backend
from hwnas.latency.kernels.features import feature_matrix, fit_booster, predict_booster
from hwnas.latency.kernels.onnx_backend import clamp
from hwnas.latency.kernels.record import Kernel
from hwnas.latency.kernels.store import KernelStore, measure_kernels, remeasure_noisy
from hwnas.runtimes.base import PreparedModel, Runtime
from hwnas.runtimes.paired import PairedProtocol

MAX_MACS = 400_000_000  # a sampled kernel runs at most ~10 ms here, so measuring it stays short
MAX_ELEMENTS = 4_000_000  # and none of its tensors exceeds 16 MB


@dataclass(frozen=True)
class SampleConfig:
    """How many kernels to sample and how to measure them.

    Attributes:
        resolutions: input sizes at which the zoo networks and proxyless architectures give seed kernels.
        proxyless_archs: random architectures of ``space`` per resolution (seed kernels).
        space: the search space those architectures come from (ProxylessNAS; a test build takes ``tiny``).
        zoo: the zoo networks giving seed kernels (None: all of them; ``()``: none, for a tiny test build).
        initial_random: random neighbours of the seeds measured before the first fit.
        adaptive_rounds / adaptive_batch: rounds of ensemble-disagreement sampling and kernels per round.
        candidates: candidates scored by the ensemble per round.
        ensemble: XGBoost models (bootstrap samples) in the disagreement ensemble.
        pairs: paired turns per kernel (PairedProtocol.pairs; 10 keeps a kernel to ~75 ms here).
        noisy_passes: extra measurements (with twice the pairs) of each kernel flagged noisy; the median is kept.
        save_every: kernels measured between two writes of the measurement file.
        seed: random seed of the sampler.
    """

    resolutions: tuple[int, ...] = (224, 160)
    proxyless_archs: int = 6
    space: str = "proxyless"
    zoo: tuple[str, ...] | None = None
    initial_random: int = 800
    adaptive_rounds: int = 3
    adaptive_batch: int = 300
    candidates: int = 6000
    ensemble: int = 5
    pairs: int = 10
    noisy_passes: int = 2
    save_every: int = 50
    seed: int = 0

    def protocol(self) -> PairedProtocol:
        # a fixed count: thousands of kernels, noisy ones outvoted (noisy_passes); one untimed run per turn, as
        # the kernel tables were built: a microsecond kernel's turn is ~100 runs, and 5 ms of warm-up per turn
        # would triple the build (the calibration networks get the default warm-up)
        return PairedProtocol(pairs=self.pairs, warmup_runs=2, warmup_s=0.002, max_remeasure=1, precision=0,
                              turn_warmup_s=0.0)


# -- seeds and neighbours -----------------------------------------------------------------------------------
def seed_kernels(workdir: Path, config: SampleConfig, backend: KernelBackend | None = None,
                 block: int | None = None) -> list[Kernel]:
    """The distinct kernels of the zoo networks and random proxyless architectures at ``config.resolutions``, as
    ``backend``'s runtime (default ORT) runs them."""
    import torch

    from hwnas.spaces import get_space
    from hwnas.zoo import build_zoo, zoo_names

    rng = random.Random(config.seed)
    backend = kernel_backend("onnxruntime") if backend is None else backend
    block = backend.block() if block is None else block
    kernels: dict[str, Kernel] = {}
    for resolution in config.resolutions:
        models = [(f"{name}-{resolution}", build_zoo(name), (1, 3, resolution, resolution))
                  for name in (zoo_names() if config.zoo is None else config.zoo)]
        space = get_space(config.space, resolution)
        for index in range(config.proxyless_archs):
            arch = space.random_arch(rng)
            with torch.random.fork_rng():  # seeded weights: a resumed build finds the exported file in its cache
                torch.manual_seed(config.seed + index)
                models.append((f"{config.space}{index}-{resolution}", space.build(arch).eval(), space.input_shape))
        for name, module, shape in models:
            for kernel in backend.split_network(module, shape, workdir / "networks", name, block):
                if kernel.type not in backend.free_types:
                    kernels.setdefault(kernel.key, kernel)
    return list(kernels.values())


def perturb(kernel: Kernel, rng: random.Random, block: int | None = None,
            backend: KernelBackend | None = None) -> Kernel | None:
    """A random neighbour of ``kernel`` that the runtime (default ORT) runs the same way (same type and op), or
    None if none fits: sizes drawn here, what decides how the runtime runs it kept by ``backend.neighbour``."""
    backend = kernel_backend("onnxruntime") if backend is None else backend
    block = backend.block() if block is None else block
    k = kernel
    h = clamp(round(k.hin * 2 ** rng.uniform(-1.5, 1.5)) if rng.random() < 0.8 else rng.randint(1, 224), 1, 224)
    c_in = clamp(round(k.cin * 2 ** rng.uniform(-1.5, 1.5)), 8, 2048)
    c_out = clamp(round(k.cout * 2 ** rng.uniform(-1.5, 1.5)), 8, 2048)
    fields = backend.neighbour(k, rng, block, h, c_in, c_out)
    if fields is None:
        return None
    try:
        new = dataclasses.replace(k, win=fields["hin"], wout=fields["hout"], **fields)
    except Exception:  # an impossible combination (HwnasError from the record's checks)
        return None
    if new.macs > MAX_MACS or max(new.input_elements, new.output_elements, new.weight_elements) > MAX_ELEMENTS:
        return None
    return new


# -- adaptive sampling -------------------------------------------------------------------------------------
def disagreement(measured: Sequence[Kernel], costs: np.ndarray, candidates: Sequence[Kernel], block: int,
                 ensemble: int, seed: int) -> np.ndarray:
    """Per candidate: the standard deviation of the log cost predicted by ``ensemble`` bootstrap XGBoost models
    of its kernel type (types with under 10 measurements score +inf: measure them first)."""
    scores = np.full(len(candidates), np.inf)
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for index, kernel in enumerate(measured):
        by_type.setdefault(kernel.type, []).append(index)
    for type_, rows in by_type.items():
        candidate_rows = [i for i, k in enumerate(candidates) if k.type == type_]
        if len(rows) < 10 or not candidate_rows:
            continue
        x = feature_matrix([measured[i] for i in rows], block)
        y = np.log(costs[rows])
        x_candidates = feature_matrix([candidates[i] for i in candidate_rows], block)
        predictions = []
        for member in range(ensemble):
            boot = rng.integers(0, len(rows), len(rows))
            predictions.append(predict_booster(fit_booster(x[boot], y[boot], seed + member, rounds=60), x_candidates))
        scores[candidate_rows] = np.std(predictions, axis=0)
    return scores


def sample_and_measure(runtime: Runtime, reference: PreparedModel, store: KernelStore, workdir: Path,
                       config: SampleConfig = SampleConfig(), quiet: bool = False) -> dict[str, Any]:
    """The whole sampling run (seeds, random neighbours, adaptive rounds) on the store's backend; returns counts
    and wall times."""
    from tqdm import tqdm

    started = time.perf_counter()
    rng = random.Random(config.seed)
    block = store.data["block"]
    protocol = config.protocol()
    backend = store.backend
    seeds = seed_kernels(workdir, config, backend, block)
    neighbours = _neighbours(seeds, config.initial_random, rng, block, backend)
    initial = _distinct_measurable(seeds + neighbours, backend)
    total = len(initial) + config.adaptive_rounds * config.adaptive_batch
    bar = tqdm(total=total, initial=min(len(store.kernels), total), desc="kernels", unit="k", disable=quiet)
    measure_kernels(initial, runtime, reference, store, protocol, workdir, bar.update, config.save_every)
    for round_index in range(store.data.get("adaptive_rounds_done", 0), config.adaptive_rounds):
        measured, costs = store.training_set()
        pool = _distinct_measurable(_neighbours(measured, config.candidates, rng, block, backend), backend)
        pool = [k for k in pool if k.key not in store.kernels]
        scores = disagreement(measured, costs, pool, block, config.ensemble, config.seed + round_index)
        chosen = [pool[i] for i in np.argsort(-scores)[:config.adaptive_batch]]
        measure_kernels(chosen, runtime, reference, store, protocol, workdir, bar.update, config.save_every)
        store.data["adaptive_rounds_done"] = round_index + 1
        store.save()
    bar.close()
    remeasure_protocol = dataclasses.replace(protocol, pairs=2 * protocol.pairs)
    remeasured = remeasure_noisy(runtime, reference, store, remeasure_protocol, workdir, config.noisy_passes)
    return {"seeds": len(seeds), "measured": len(store.kernels), "remeasured": remeasured,
            "wall_s": time.perf_counter() - started}


def _neighbours(kernels: Sequence[Kernel], count: int, rng: random.Random, block: int,
                backend: KernelBackend) -> list[Kernel]:
    """``count`` draws of random neighbours; half pick the kernel type uniformly first, so rare types (pool, concat,
    gemm) are sampled as densely as convs."""
    by_type: dict[str, list[Kernel]] = {}
    for kernel in kernels:
        by_type.setdefault(kernel.type, []).append(kernel)
    types = sorted(by_type)
    draws = []
    for index in range(count):
        origin = rng.choice(by_type[rng.choice(types)]) if index % 2 else rng.choice(kernels)
        draws.append(perturb(origin, rng, block, backend))
    return [k for k in draws if k is not None]


def _distinct_measurable(kernels: Any, backend: KernelBackend) -> list[Kernel]:
    """One kernel per key, without the Nones of failed draws and without free kernels (never measured)."""
    seen: dict[str, Kernel] = {}
    for kernel in kernels:
        if kernel is not None and kernel.type not in backend.free_types:
            seen.setdefault(kernel.key, kernel)
    return list(seen.values())
