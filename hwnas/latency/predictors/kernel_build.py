"""Building a device's kernel predictor: measure kernels and whole networks on this machine, fit, write.

The steps (``hwnas predictor build --kind kernel``, and ``tools/build_kernel_predictor.py`` for maintainers):

1. the generic reference network (ProxylessNAS at 128) is prepared once; the per-run overhead is measured paired
   with it (a one-ReLU model);
2. kernels are sampled and measured paired with the reference (:mod:`hwnas.latency.kernels.sample`: seeds from
   the zoo and proxyless networks, random neighbours, adaptive rounds);
3. calibration networks are measured whole, paired: random ProxylessNAS architectures and the zoo networks
   (never at 224, the resolution ``benchmarks/eval_kernel_predictor.py`` evaluates);
4. the predictor is fitted (per-type XGBoost + network-level correction) and written; its measurements file
   stays beside it (``NAME.measurements.json``), written every few kernels, so that running the same build again
   after a kill continues where it stopped.

Each CPU runtime gives its own kernels (:mod:`hwnas.latency.kernels.backends`): ONNX Runtime's fusions and blocked
layout, the operators of a ``.tflite`` file as XNNPACK runs them, the aten operators torch's eager mode dispatches.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.backends import KERNEL_BACKENDS, kernel_backend
from hwnas.latency.kernels.sample import SampleConfig
from hwnas.latency.kernels.store import KernelStore

Network = tuple[Any, tuple[int, ...]]  # a calibration network: (torch module, input shape)


@dataclass(frozen=True)
class KernelBuildConfig:
    """How much one build measures (the sampler's sizes in ``sample``).

    Attributes:
        calibration_resolutions / calibration_archs: random architectures of ``calibration_space`` (ProxylessNAS;
            a test build takes ``tiny``) per resolution measured whole for the network-level correction.
        calibration_zoo_resolutions / calibration_zoo: the zoo networks (None: all) measured whole at these sizes.
        network_pairs: paired turns per calibration network; network_passes: interleaved passes, median kept.
        overhead_pairs: paired turns of the one-ReLU model giving the per-run overhead.
        precision: of the overhead's and calibration networks' paired ratios (more pairs until the ratio's 90%
            interval is this narrow; ``PairedProtocol.precision``; 0: exactly the pairs given, as a tiny test build).
        ridge: of the network-level correction (leave-one-network-out: 21/24 within 10% at 0.01, 19/24 at 0.05).
    """

    sample: SampleConfig = field(default_factory=SampleConfig)
    calibration_resolutions: tuple[int, ...] = (224, 192, 160, 128)
    calibration_archs: int = 3
    calibration_space: str = "proxyless"
    calibration_zoo: tuple[str, ...] | None = None
    calibration_zoo_resolutions: tuple[int, ...] = (160, 192)
    network_pairs: int = 30
    network_passes: int = 3
    overhead_pairs: int = 40
    precision: float = 0.02
    ridge: float = 0.01
    seed: int = 0

    @classmethod
    def quick(cls) -> KernelBuildConfig:
        """A build of a few minutes on 2 cores: seeds at 160 only, 200 random neighbours and one adaptive round of
        100 kernels (about 650 kernels against 2200), 10 calibration networks measured twice (against 24 x 3)."""
        sample = SampleConfig(resolutions=(160,), proxyless_archs=2, initial_random=200, adaptive_rounds=1,
                              adaptive_batch=100, candidates=2000, noisy_passes=1)
        return cls(sample=sample, calibration_resolutions=(192, 128), calibration_archs=2,
                   calibration_zoo_resolutions=(160,), network_passes=2)

    def to_dict(self) -> dict[str, Any]:
        """The build's own fields (the sampler's are recorded apart, as ``sampler``)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name != "sample"}


@dataclass(frozen=True)
class KernelBuild:
    """What one build did: the files, the counts of measurements (made now and reused) and the wall times."""

    out: Path
    measurements: Path
    device: str
    kernels: int
    measured_now: int
    reused: int
    seeds: int
    remeasured: int
    networks: int
    network_runs: int
    network_runs_now: int
    reference_ms: float
    overhead_ratio: float
    correction: dict[str, Any]
    wall_s: float
    sampling_s: float

    @property
    def paired_measurements(self) -> int:
        """Kernels, this run's re-measurements of noisy ones, calibration runs and the overhead's one."""
        return self.kernels + self.remeasured + self.network_runs + 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {**data, "out": str(self.out), "measurements": str(self.measurements),
                "paired_measurements": self.paired_measurements, "wall_s": round(self.wall_s, 1),
                "sampling_s": round(self.sampling_s, 1)}


def check_kernel_device(device: Any) -> None:
    """Refuse, before anything is measured, a device whose runtime's kernels hwnas cannot split."""
    if device.backend not in KERNEL_BACKENDS or device.device != "cpu":
        raise HwnasError(f"--device {device.name}: no kernel splitter for backend {device.backend!r} on "
                         f"{device.device!r}: kernel predictors are built for CPU runs of "
                         f"{', '.join(KERNEL_BACKENDS)} (e.g. cpu-onnxruntime, cpu-litert, cpu-torch)")


def measurements_path(out: Path) -> Path:
    """The measurements file kept beside the predictor ``out`` (what a rerun resumes from)."""
    return out.with_name(out.stem + ".measurements.json")


def build_kernel_predictor(device: Any, out: Path, workdir: Path, config: KernelBuildConfig = KernelBuildConfig(),
                           progress: bool = False) -> KernelBuild:
    """Measure, fit and write ``device``'s kernel predictor to ``out``; ``workdir`` caches the exported networks.

    A KeyboardInterrupt (Ctrl-C, SIGTERM through the CLI) saves the measurements file first; SIGKILL loses at most
    the kernels measured since its last write (``config.sample.save_every``)."""
    from hwnas.latency.reference import generic_reference, prepare_reference
    from hwnas.runtimes import get_runtime

    check_kernel_device(device)
    started = time.perf_counter()
    runtime = get_runtime(device.backend, device.runtime_config(), workdir / "runtime")
    backend = kernel_backend(device.backend)
    store = KernelStore(measurements_path(out), device.name, runtime.describe(), backend.block(), backend.name)
    reused, network_runs_before = len(store.kernels), _network_runs(store)
    module, shape, arch = generic_reference()
    reference = prepare_reference(runtime, module, shape)
    try:
        _measure_overhead(runtime, reference, store, config)
        from hwnas.latency.kernels.sample import sample_and_measure

        sampled = sample_and_measure(runtime, reference, store, workdir, config.sample, quiet=not progress)
        networks = calibration_networks(config)
        _measure_networks(runtime, reference, store, networks, workdir, config, progress)
    except KeyboardInterrupt:
        store.save()
        raise KeyboardInterrupt(f"measurements saved in {store.path}; run the same build again to continue") from None
    finally:
        reference.close()
    predictor = _fit(store, networks, workdir, device, runtime, arch, config, time.perf_counter() - started)
    predictor.save(out)
    return KernelBuild(
        out=out, measurements=store.path, device=device.name, kernels=len(store.kernels),
        measured_now=len(store.kernels) - reused, reused=reused, seeds=sampled["seeds"],
        remeasured=sampled["remeasured"], networks=len(networks), network_runs=_network_runs(store),
        network_runs_now=_network_runs(store) - network_runs_before, reference_ms=store.reference_ms(),
        overhead_ratio=float(store.data["overhead"]["ratio"]), correction=predictor.correction,
        wall_s=time.perf_counter() - started, sampling_s=sampled["wall_s"])


def _measure_overhead(runtime: Any, reference: Any, store: KernelStore, config: KernelBuildConfig) -> None:
    """The paired ratio of a one-ReLU model: what any ``run()`` costs (measured once per measurements file)."""
    import torch

    from hwnas.runtimes.paired import PairedProtocol, measure_paired

    if store.data.get("overhead"):
        return
    relu = runtime.prepare(torch.nn.ReLU(), (1, 8, 1, 1), "overhead-relu-1x8x1x1")
    protocol = PairedProtocol(pairs=config.overhead_pairs, precision=config.precision)
    try:
        stats = measure_paired({"overhead": relu}, reference, protocol)["overhead"]
    finally:
        relu.close()
    store.data["overhead"] = {"ratio": stats.ratio, "ref_ms": stats.reference.median_ms}
    store.save()


def _network_runs(store: KernelStore) -> int:
    return sum(len(entry.get("ratios", [0])) for entry in store.data["networks"].values())


def _network_ratios(entry: dict[str, Any] | None) -> list[float]:
    return list(entry.get("ratios", [entry["ratio"]])) if entry else []


def _measure_networks(runtime: Any, reference: Any, store: KernelStore, networks: dict[str, Network], workdir: Path,
                      config: KernelBuildConfig, progress: bool) -> None:
    """Each calibration network's paired ratio, the median of ``network_passes`` interleaved passes (a burst of
    load hits one pass of a network); a stored entry of another network (weights, code) under the same name is
    measured again."""
    from tqdm import tqdm

    from hwnas.runtimes.converters import module_digest
    from hwnas.runtimes.paired import PairedProtocol, measure_paired

    stored = store.data["networks"]
    digests = {name: module_digest(module, shape) for name, (module, shape) in networks.items()}
    for name, digest in digests.items():
        if name in stored and stored[name].get("digest", digest) != digest:
            del stored[name]
    done = sum(min(len(_network_ratios(stored.get(name))), config.network_passes) for name in networks)
    protocol = PairedProtocol(pairs=config.network_pairs, precision=config.precision)
    with tqdm(total=len(networks) * config.network_passes, initial=done, desc="networks", unit="net",
              disable=not progress, dynamic_ncols=True) as bar:
        for passes in range(1, config.network_passes + 1):
            for name, (module, shape) in networks.items():
                ratios = _network_ratios(stored.get(name))
                if len(ratios) >= passes:
                    continue
                prepared, file = store.backend.prepare_network(runtime, module, shape, workdir / "networks", name)
                try:
                    stats = measure_paired({name: prepared}, reference, protocol)[name]
                finally:
                    prepared.close()
                ratios.append(stats.ratio)
                stored[name] = {"ratio": float(np.median(ratios)), "ratios": ratios, "file": file,
                                "digest": digests[name], "ref_ms": stats.reference.median_ms, "noisy": stats.noisy}
                store.save()
                bar.update(1)


def _fit(store: KernelStore, networks: dict[str, Network], workdir: Path, device: Any, runtime: Any,
         reference_arch: Any, config: KernelBuildConfig, measure_wall_s: float) -> Any:
    """The predictor fitted on the store's kernels, corrected on the calibration networks' ratios."""
    from hwnas.io import now_iso
    from hwnas.latency.predictors.base import PredictorMeta, versions
    from hwnas.latency.predictors.kernel import fit_kernel_predictor
    from hwnas.latency.reference import GENERIC_REFERENCE
    from hwnas.runtimes.fingerprint import machine_fingerprint
    from hwnas.runtimes.paired import PairedProtocol, turns_of

    block = store.data["block"]
    calibration = _calibration(store.backend, networks, store.data["networks"], workdir, block)
    kernels, costs = store.training_set()
    meta = PredictorMeta(
        device=device.name, fingerprint={"machine": machine_fingerprint(), "runtime": runtime.describe()},
        reference={"space": GENERIC_REFERENCE[0], "resolution": GENERIC_REFERENCE[1],
                   "arch": reference_arch.to_dict()},
        reference_ms=store.reference_ms(), features=[],
        training={"kernels": len(kernels), "calibration_networks": sorted(networks), "date": now_iso(),
                  "measure_wall_s": round(measure_wall_s, 1), "sampler": dataclasses.asdict(config.sample),
                  "build": config.to_dict(), "measurements": store.path.name},
        versions=versions(runtime.describe()), turns=turns_of(PairedProtocol(pairs=config.network_pairs).to_dict()),
    )
    predictor = fit_kernel_predictor(kernels, costs, meta, store.data["overhead"]["ratio"], block, calibration,
                                     ridge=config.ridge, seed=config.seed, backend=store.backend.name)
    predictor.meta.features = list(predictor.expected_features(meta) or [])
    predictor.meta.training["correction"] = predictor.correction
    return predictor


def refit_correction(path: Path, workdir: Path, config: KernelBuildConfig = KernelBuildConfig()) -> tuple[Any, Any]:
    """Refit the predictor at ``path``'s network-level correction on its stored calibration ratios (the networks
    exported and split again; nothing measured, fingerprint and boosters kept); returns (previous, new)."""
    from hwnas.io import now_iso, read_json_file
    from hwnas.latency.predictors import load_predictor
    from hwnas.latency.predictors.kernel import KernelPredictor, _fit_correction

    predictor = load_predictor(path)
    if not isinstance(predictor, KernelPredictor):
        raise HwnasError(f"{path}: not a kernel predictor")
    stored = read_json_file(measurements_path(path), "kernel measurements")["networks"]
    networks = {name: n for name, n in calibration_networks(config).items() if name in stored}
    calibration = _calibration(kernel_backend(predictor.backend), networks, stored, workdir, predictor.block)
    previous = predictor.correction
    predictor.correction = _fit_correction(predictor, calibration, config.ridge)
    predictor.meta.training["correction"] = predictor.correction
    predictor.meta.training["correction_refitted"] = now_iso()
    predictor.save(path)
    return previous, predictor.correction


def _calibration(backend: Any, networks: dict[str, Network], stored: dict[str, Any], workdir: Path,
                 block: int) -> list[tuple[list[Any], float]]:
    """(kernels, measured ratio) of each calibration network, split as ``backend``'s runtime runs it."""
    return [(backend.split_network(module, shape, workdir / "networks", name, block), stored[name]["ratio"])
            for name, (module, shape) in networks.items()]


def calibration_networks(config: KernelBuildConfig) -> dict[str, Network]:
    """Whole networks for the network-level correction (seeded weights, so that a rerun finds the same converted
    files in its cache and a measured entry's digest names the network it was measured from)."""
    import torch

    from hwnas.spaces import get_space
    from hwnas.zoo import build_zoo, zoo_names

    rng = random.Random(config.seed + 1)
    networks = {}
    for resolution in config.calibration_resolutions:
        space = get_space(config.calibration_space, resolution)
        for index in range(config.calibration_archs):
            name = f"{config.calibration_space}-cal{index}-{resolution}"
            with torch.random.fork_rng():
                torch.manual_seed(config.seed + index)
                module = space.build(space.random_arch(rng)).eval()
            networks[name] = (module, tuple(space.input_shape))
    zoo = zoo_names() if config.calibration_zoo is None else config.calibration_zoo
    for resolution in config.calibration_zoo_resolutions:
        for name in zoo:
            networks[f"{name}-{resolution}"] = (build_zoo(name), (1, 3, resolution, resolution))
    return networks
