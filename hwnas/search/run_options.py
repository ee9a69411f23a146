"""The search run's options in named groups (:class:`TaskOptions`, :class:`DataOptions`, :class:`SupernetOptions`,
:class:`StrategyOptions`, :class:`ClosedLoopOptions`, :class:`MeasurementOptions`), each field documented with its
default. :class:`~hwnas.search.run_config.SearchConfig` has them all as flat fields and checks their values; why the
defaults are what they are, with the figures measured for them, is in docs/search.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_DEVICE = "cpu-onnxruntime"
END_TO_END_PROTOCOL: dict[str, Any] = {"rounds": 3, "min_time_s": 0.2, "max_remeasure": 8}


@dataclass
class TaskOptions:
    """What to search for, where, and where to put the run.

    Attributes:
        device: device profile name or path (None: the embedded default, ``cpu-onnxruntime``).
        space: search space name.
        resolution: input resolution (None: the space's default; 32 keeps the default run short).
        target_ms: latency target T in ms (None: ``target_fraction`` of the way from the fastest to the slowest
            architecture's estimated latency).
        target_fraction: where the default T lies between the fastest (0) and slowest (1) architecture.
        targets: several targets T1, T2, ... (``--targets``): one network per target from one supernet training,
            each in ``out/target-<i>`` (:mod:`~hwnas.search.run_targets`); empty: the one target above.
        max_memory_mb: bound on the network's peak activation memory at batch 1, in MiB (``--max-memory-mb``;
            MemNet): a candidate op whose own peak exceeds it is never chosen (:mod:`~hwnas.search.memory_bound`).
            None: no bound.
        max_params_mb: bound on the network's parameter bytes, in MiB (``--max-params-mb``): a second knapsack
            budget beside latency. None: no bound.
        table: latency table path (None: ``<device>__<space>__<res>.json``, the user's in
            ``$HWNAS_DATA/latency_tables`` else the shipped one; a missing table is profiled into the user's folder).
        overhead: how the estimator counts the runtime's per-invocation overhead: ``once``, ``per-op``, ``none``.
        profile_missing: profile the table first when it is missing or lacks ops (needs the device's runtime).
        device_threads: the runtime's threads on the device (None: the device profile's; ``--threads``).
        seed: seeds data splits, weight init, path sampling, shuffling and the strategy.
        out: run folder (None: ``runs/search-<timestamp>``).
    """

    device: str | None = None
    space: str = "proxyless"
    resolution: int | None = 32
    target_ms: float | None = None
    target_fraction: float = 0.4
    targets: list[float] = field(default_factory=list)
    max_memory_mb: float | None = None
    max_params_mb: float | None = None
    table: str | None = None
    overhead: str = "once"
    profile_missing: bool = True
    device_threads: int | None = None
    seed: int = 0
    out: str | None = None


@dataclass
class DataOptions:
    """The data set and its splits.

    Attributes:
        data: None or ``digits`` (the embedded scikit-learn digits), a CIFAR folder, or an ImageFolder tree.
        arch_fraction: share of the training pool held out for architecture updates (the ``arch`` split).
        test_fraction: share held out for testing when the data set has no test split.
        max_per_split: at most this many images per split (None: all).
    """

    data: str | None = None
    arch_fraction: float = 0.2
    test_fraction: float = 0.2
    max_per_split: int | None = None


@dataclass
class SupernetOptions:
    """The supernet, its weight steps, and training the derived network from scratch.

    Attributes:
        weight_sharing: ``nested`` (the MBConv candidates of a layer share the largest one's weights, sliced by
            kernel and expansion, with private BatchNorms: every weight step trains every candidate; see
            :mod:`hwnas.search.nested`) or ``none`` (one module per candidate, as ProxylessNAS).
        channels_last: train in NHWC memory format (faster depthwise convolutions on PyTorch CPU).
        arch_grad: binary-gate gradient of ``proxyless``: ``two`` (two sampled paths, paper Sec. 3.2.1) or
            ``full_v2`` (every candidate; ProxylessNAS code default, slower per arch step).
        warmup_epochs: supernet epochs with weight steps only (uniform path sampling).
        search_epochs: epochs alternating weight and architecture steps.
        train_epochs: epochs training the derived network from scratch.
        batch_size: weight-step batch; train_batch_size: derived network batch; eval_batch_size: evaluation batch.
        weight_optimizer: ``sgd`` (momentum, Nesterov, as ProxylessNAS) or ``adam``; weight_lr: its initial
            learning rate (cosine-annealed to 0); momentum: SGD momentum; weight_decay: L2 on all weights.
        train_lr: initial learning rate for the derived network (cosine to 0, same optimizer kind).
        label_smoothing: cross-entropy label smoothing (weights and derived network).
        grad_clip: max gradient norm of weight steps (None: no clipping).
        num_threads: torch intra-op threads for training, fixed for reproducibility.
        deterministic: ``torch.use_deterministic_algorithms`` during the run.
    """

    weight_sharing: str = "nested"
    channels_last: bool = True
    arch_grad: str = "two"
    warmup_epochs: int = 4
    search_epochs: int = 8
    train_epochs: int = 10
    batch_size: int = 64
    train_batch_size: int = 64
    eval_batch_size: int = 256
    weight_optimizer: str = "sgd"
    weight_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    train_lr: float = 0.05
    label_smoothing: float = 0.0
    grad_clip: float | None = 5.0
    num_threads: int = 1
    deterministic: bool = True


@dataclass
class StrategyOptions:
    """The architecture search strategy and its steps.

    Attributes:
        strategy: ``proxyless`` (gradient through binary gates), ``mnas`` (REINFORCE) or ``evolution`` (uniform paths
            while the supernet trains, then an evolutionary search under the latency bound, as Once-for-All).
        loss: latency loss of ``proxyless``: ``add#abs`` (pulls E[LAT] towards T from both sides, so a short search
            ends near T; see :mod:`hwnas.search.losses`), ``mul#log`` or ``add#linear`` (ProxylessNAS; these push
            latency down at any T).
        loss_params: the loss's parameters. For ``mul#log`` without ``unit_ms``, ``unit_ms = T / 80`` keeps
            ProxylessNAS's ratio ``T / unit`` (80 ms in 1 ms units), so sub-millisecond targets work alike.
        reward: reward of ``mnas`` and ``evolution``: ``soft`` (MnasNet's ACC (LAT/T)^-0.07), ``hard`` (w = -1 over
            T, 0 under), ``abs`` (TuNAS's ACC - 0.1 |LAT/T - 1|); the long names ``mnas-soft``, ``mnas-hard``,
            ``tunas-abs`` are the same; reward_params: its parameters. ``evolution`` ranks by it with LAT the
            latency model's and T the closed loop's bound, and never evaluates a candidate over that bound.
        mnas_samples, mnas_baseline_momentum, mnas_entropy_weight: ``mnas`` settings (None: the strategy's
            defaults, 4 samples, momentum 0.95, no entropy bonus).
        evolution_population, evolution_generations: ``evolution``'s population and generations
            (:class:`~hwnas.search.evolution.EvolutionConfig`); evolution_images: validation (``arch`` split) images
            a candidate's shared-weight accuracy is measured on (the first ones, the same for every candidate).
            Each evaluation is a supernet forward over them (about 0.5-1.5 s for 288 images at 32x32 on one core of
            the 2-core VM), so 16 x 8 (at most 128 evaluations) keeps an evolution to a minute or two there.
        arch_update_every: weight steps between architecture updates (ProxylessNAS: 5; 1 suits short runs).
        arch_steps: architecture steps per update; arch_batch_size: their batch.
        arch_lr, arch_betas, arch_eps: Adam on alpha (None: the strategy's defaults, proxyless lr 1e-3 and
            betas (0, 0.999), mnas lr 0.0048). ``arch_lr`` defaults to 0.02: ProxylessNAS's 1e-3 suits its ~10^5
            architecture steps; with Adam each step moves alpha by about lr, so a run of a few hundred steps
            needs a larger rate to move the probabilities at all.
    """

    strategy: str = "proxyless"
    loss: str = "add#abs"
    loss_params: dict[str, float] = field(default_factory=dict)
    reward: str = "mnas-soft"
    reward_params: dict[str, float] = field(default_factory=dict)
    mnas_samples: int | None = None
    mnas_baseline_momentum: float | None = None
    mnas_entropy_weight: float | None = None
    evolution_population: int = 16
    evolution_generations: int = 8
    evolution_images: int = 256
    arch_update_every: int = 1
    arch_steps: int = 1
    arch_batch_size: int = 64
    arch_lr: float | None = 0.02
    arch_betas: tuple[float, float] | None = None
    arch_eps: float | None = None


@dataclass
class ClosedLoopOptions:
    """The latency model the search aims with and the closed loop that corrects it on the device before training
    (:mod:`hwnas.search.closed_loop`).

    Attributes:
        closed_loop_steps: measure the decoded architecture on the device (latency does not depend on the weights)
            and search the table target whose decoded architecture measures just under T: over T, decode under a
            tighter table target; far under, a looser one (bisection between the tightest over and the loosest
            under); at most this many measurements (0: trust the table).
        closed_loop_margin: the closed loop aims at measured <= (1 - margin) * T, so that measurement noise and
            the final measurement of the trained network keep it under T; and accepts a result measured
            within ``2 * margin`` below that aim without trying a looser target.
        predictor: the latency model the search aims with: ``auto`` (the device's calibrated predictor for this
            space and resolution, ``predictors/<device>__<space>__<res>__calibrated.json`` in the user's tables
            folder, else the shipped one, when it was fitted on this machine and runtime; else one built now from
            ``predictor_networks`` measured networks; else the table), ``none`` (the table alone), or the path of a
            predictor of any kind (another machine or runtime: one warning line). A predictor fitted on measurement
            sets of the space is measured against paired with the reference network (:mod:`hwnas.runtimes.paired`),
            in the closed loop and the final verdict; one that refits (calibrated) is refitted with every
            closed-loop measurement before the next decode, any other has its target stepped, as a table has (see
            :mod:`hwnas.search.aim`).
        predictor_networks: networks measured (paired, stratified over the table's range) to build a predictor
            when ``auto`` finds none that fits (0: do not build; use the table).
        closed_loop_weight: weight of each closed-loop measurement in the refit (the training rows weigh 1):
            the loop's own networks lie where the search aims, so they should dominate the fit there.
    """

    closed_loop_steps: int = 8
    closed_loop_margin: float = 0.05
    predictor: str = "auto"
    predictor_networks: int = 24
    closed_loop_weight: float = 10.0


@dataclass
class MeasurementOptions:
    """End-to-end measurement on the device: the closed loop's and the final one of the trained networks
    (:mod:`hwnas.search.measure`, :mod:`hwnas.search.verdict`).

    Attributes:
        measure: measure on the device at all (the closed loop and the final verdict).
        baseline: also train, evaluate and measure a same-budget uniform architecture
            (:func:`~hwnas.search.closed_loop.baseline_arch`).
        random_baselines: also train and measure this many random architectures whose measured latency lies in
            ``[random_band T, T]`` (:mod:`hwnas.search.random_baselines`); each costs a training like the derived
            network's, so the default run has none.
        protocol: overrides of the device's measurement protocol for whole networks. Default
            ``END_TO_END_PROTOCOL``: rounds of at least 0.2 s, repeated (up to 8 extra) until the 3 fastest agree
            within 10%, whose runs give the statistics.
        paired: overrides of :class:`~hwnas.runtimes.paired.PairedProtocol` for the paired measurements.
        final_attempts: the final measurement of the trained networks is repeated this many times,
            ``retry_pause_s`` apart, and each network keeps its quietest attempt (lowest median of the non-noisy
            ones; interference only ever adds time). Every attempt is in the report. The closed loop's
            measurement of the same architecture (an untrained copy) counts as one more attempt when the trained
            network and its untrained copy measure alike; see :func:`~hwnas.search.measure.quietest_per_network`.
        final_extra_attempts: attempts added to the final measurement while the searched network's (or the
            baseline's) quietest measurement is over the target: an over-target verdict should come from a quiet
            machine, not from one burst.
        noisy_retries: an end-to-end measurement (closed loop or final) in which some network stayed ``noisy`` (its
            fastest rounds never agreed) is repeated up to this many more times.
        retry_pause_s: seconds between attempts.
    """

    measure: bool = True
    baseline: bool = False
    random_baselines: int = 0
    random_band: float = 0.85
    protocol: dict[str, Any] = field(default_factory=lambda: dict(END_TO_END_PROTOCOL))
    paired: dict[str, Any] = field(default_factory=dict)
    final_attempts: int = 3
    final_extra_attempts: int = 2
    noisy_retries: int = 2
    retry_pause_s: float = 10.0
