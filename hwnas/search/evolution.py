"""Evolutionary search under a hard latency bound (as Once-for-All's evolution finder; written from scratch).

A population of architectures of one space evolves for a number of generations. Generation 0 is drawn at random
under the bound; each later one keeps the fittest ``parents`` share of the last (elitism) and fills the rest with
children: ``mutation_share`` of them by mutation of a random parent (each layer takes a new choice with
probability ``mutate_prob``), the others by crossover of two random parents (each layer's choice from either).

The latency model (``latency_of``, e.g. a predictor's or a table's ``latency(arch)``) screens every candidate
before it is evaluated: one it puts over ``bound_ms`` is rejected and never reaches ``accuracy_of`` (the costly
part: the supernet's shared weights on the validation split). Fitness is ``reward(accuracy, latency_ms, T)``
(:mod:`hwnas.search.losses`). Under a memory bound (``memory``, :mod:`~hwnas.search.memory_bound`) a candidate
over it is rejected the same way; first-generation draws are then uniform over the candidates within the peak bound
and walked down to fit. Every architecture is evaluated at most once (a cache keyed by its choices); a
duplicate child is drawn again, up to ``duplicate_tries`` times, then reused from the cache. The run draws from
a ``random.Random(seed)`` of its own, so the same config and callables give the same result.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from hwnas.errors import HwnasError
from hwnas.spaces.base import Architecture, SearchSpace

if TYPE_CHECKING:
    from hwnas.search.memory_bound import MemoryBound

Choices = tuple[str, ...]
RewardFn = Callable[[float, float, float], float]


@dataclass
class EvolutionConfig:
    """The evolution's settings (Once-for-All's defaults scaled down to a quick search)."""

    population: int = 32  # candidates per generation
    generations: int = 10  # generation 0 (random) included: 1 is random search under the bound
    parents: float = 0.25  # share of the population kept as parents (the fittest)
    mutation_share: float = 0.5  # share of children made by mutation; the rest by crossover
    mutate_prob: float = 0.1  # per-layer probability of a new choice in a mutation
    max_tries: int = 500  # draws to find one candidate under the bound before giving up
    duplicate_tries: int = 20  # draws under the bound that were evaluated before, before one is reused
    seed: int = 0

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise HwnasError(f"evolution config: field {name!r}: expected {expected}, "
                                 f"got {getattr(self, name)!r}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_share(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        check("population", is_int(self.population) and self.population >= 2, "an int >= 2")
        check("generations", is_int(self.generations) and self.generations >= 1, "an int >= 1")
        check("parents", is_share(self.parents) and 0 < self.parents < 1, "a share in (0, 1)")
        check("mutation_share", is_share(self.mutation_share) and 0 <= self.mutation_share <= 1,
              "a share in [0, 1]")
        check("mutate_prob", is_share(self.mutate_prob) and 0 < self.mutate_prob <= 1, "a probability in (0, 1]")
        check("max_tries", is_int(self.max_tries) and self.max_tries >= 1, "an int >= 1")
        check("duplicate_tries", is_int(self.duplicate_tries) and self.duplicate_tries >= 1, "an int >= 1")
        check("seed", is_int(self.seed), "an int")

    @property
    def parent_count(self) -> int:
        """How many of the fittest survive each generation: at least one, at most ``population - 1``."""
        return min(self.population - 1, max(1, round(self.parents * self.population)))


@dataclass
class Candidate:
    """One evaluated architecture."""

    arch: Architecture
    accuracy: float
    latency_ms: float  # the latency model's prediction
    fitness: float
    generation: int  # the generation that first evaluated it


@dataclass
class EvolutionResult:
    """What an evolution returns: the fittest candidate, every candidate evaluated, and per-generation logs."""

    best: Candidate
    evaluated: list[Candidate]  # every distinct architecture evaluated, in order
    rejected: int  # distinct architectures the latency model put over the bound (never evaluated)
    history: list[dict[str, float]] = field(default_factory=list)
    rejected_memory: int = 0  # distinct architectures under the latency bound but over the memory bound


def mutate(space: SearchSpace, arch: Architecture, prob: float, rng: random.Random) -> Architecture:
    """A copy of ``arch`` where each layer, with probability ``prob``, takes another of its choices."""
    choices = list(arch.choices)
    for index, layer in enumerate(space.layers):
        if rng.random() < prob:
            others = [name for name in layer.names if name != choices[index]]
            if others:
                choices[index] = rng.choice(others)
    return space.arch(choices)


def crossover(space: SearchSpace, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
    """A child taking each layer's choice from ``a`` or ``b`` with equal chance."""
    return space.arch([rng.choice(pair) for pair in zip(a.choices, b.choices)])


UNIFORM_TRIES = 20  # uniform draws for a first-generation candidate before one is walked down to the bound


class _Evolution:
    """The state of one run: its generator, latency and evaluation caches, and counts."""

    def __init__(self, space: SearchSpace, accuracy_of: Callable[[Architecture], float],
                 latency_of: Callable[[Architecture], float], bound_ms: float, reward: RewardFn,
                 target_ms: float, config: EvolutionConfig, memory: MemoryBound | None = None) -> None:
        self.space, self.accuracy_of, self.latency_of, self.memory = space, accuracy_of, latency_of, memory
        self.memory_fits: dict[Choices, bool] = {}
        self.rejected_memory = 0
        self.bound_ms, self.reward, self.target_ms, self.config = bound_ms, reward, target_ms, config
        self.rng = random.Random(config.seed)
        self.latencies: dict[Choices, float] = {}
        self.cache: dict[Choices, Candidate] = {}
        self.rejected = 0
        self.fastest_ms = math.inf
        self.generation = 0

    def latency(self, arch: Architecture) -> float:
        """The latency model's prediction, asked once per architecture; a rejected one is counted once."""
        if arch.choices not in self.latencies:
            latency_ms = float(self.latency_of(arch))
            if not math.isfinite(latency_ms) or latency_ms < 0:
                raise HwnasError(f"evolution: the latency model gave {latency_ms!r} ms for {list(arch.choices)}, "
                                 "expected a finite non-negative number")
            self.latencies[arch.choices] = latency_ms
            self.fastest_ms = min(self.fastest_ms, latency_ms)
            self.rejected += latency_ms > self.bound_ms
        return self.latencies[arch.choices]

    def fits(self, arch: Architecture) -> bool:
        """Under the latency bound and (with one) within the memory bound; a candidate under the first and over the
        second is counted once in ``rejected_memory``."""
        if self.latency(arch) > self.bound_ms:
            return False
        if self.memory is None:
            return True
        if arch.choices not in self.memory_fits:
            self.memory_fits[arch.choices] = self.memory.fits(arch)
            self.rejected_memory += not self.memory_fits[arch.choices]
        return self.memory_fits[arch.choices]

    def evaluate(self, arch: Architecture) -> Candidate:
        """The candidate of ``arch`` (under the bound), evaluated on its first visit only."""
        if arch.choices not in self.cache:
            latency_ms = self.latency(arch)
            assert self.fits(arch), "evaluate() is only called under the bound"
            accuracy = float(self.accuracy_of(arch))
            fitness = float(self.reward(accuracy, latency_ms, self.target_ms))
            if not math.isfinite(fitness):
                raise HwnasError(f"evolution: fitness {fitness!r} (accuracy {accuracy!r}, latency {latency_ms} ms) "
                                 f"for {list(arch.choices)}, expected a finite number")
            self.cache[arch.choices] = Candidate(arch, accuracy, latency_ms, fitness, self.generation)
        return self.cache[arch.choices]

    def draw(self, make: Callable[[], Architecture], fallback: Candidate | None) -> Candidate:
        """Evaluate the first of up to ``max_tries`` draws of ``make`` that is under the bound and new; after
        ``duplicate_tries`` draws under the bound already evaluated (a converged population's crossovers), or
        ``max_tries`` draws, reuse the last of them, then ``fallback``; with neither, the bound is unreachable."""
        seen_under: Architecture | None = None
        duplicates = 0
        for _ in range(self.config.max_tries):
            arch = make()
            if not self.fits(arch):
                continue
            if arch.choices not in self.cache:
                return self.evaluate(arch)
            seen_under, duplicates = arch, duplicates + 1
            if duplicates >= self.config.duplicate_tries:
                break
        if seen_under is not None:
            return self.evaluate(seen_under)
        if fallback is not None:
            return fallback
        within = f" within {self.memory.describe()}" if self.memory is not None else ""
        raise HwnasError(f"evolution: latency bound {self.bound_ms:g} ms is below what space {self.space.name} "
                         f"reaches{within}: the fastest of {len(self.latencies)} architectures drawn predicts "
                         f"{self.fastest_ms:.4g} ms (raise the target or max_tries)")

    def random_under(self) -> Architecture:
        """A random architecture, walked down to the bound: while the model puts it over, the next layer of a random
        order takes its fastest choice (by the model). Uniform draws alone rarely land under a tight bound, and the
        closed loop asks for tight ones; layers the walk leaves alone keep their random choices, so the draws stay
        diverse, and a full walk reaches the fastest architecture. Under a loose bound a uniform draw (of up to
        ``UNIFORM_TRIES``) lands under it and is taken as it is: the population stays uniform there. Under a memory
        bound the draws and the walk keep to the candidates within its peak bound, and under a parameter budget
        the walk takes the choice of the smallest overshoot of either budget (:meth:`_overshoot`)."""
        for _ in range(UNIFORM_TRIES):
            arch = self.space.random_arch(self.rng) if self.memory is None else self.memory.random_arch(self.rng)
            if self.fits(arch):
                return arch
        order = list(range(len(self.space.layers)))
        self.rng.shuffle(order)
        for layer in order:
            if self.fits(arch):
                break
            names = self.space.layers[layer].names if self.memory is None else self.memory.allowed_names(layer)
            options = [self.space.arch([*arch.choices[:layer], name, *arch.choices[layer + 1:]]) for name in names]
            arch = min(options, key=self._overshoot)
        return arch

    def _overshoot(self, arch: Architecture) -> Any:
        """What the walk down minimizes: the latency, or under a parameter budget the larger of the two ratios to
        their bounds (then the latency)."""
        budget = None if self.memory is None else self.memory.params_budget()
        if budget is None:
            return self.latency(arch)
        return max(self.latency(arch) / self.bound_ms, self.memory.params_of(arch) / budget), self.latency(arch)

    def first_generation(self) -> list[Candidate]:
        """``population`` random architectures under the bound (fewer distinct ones when the bound leaves few)."""
        population: list[Candidate] = []
        for _ in range(self.config.population):
            population.append(self.draw(self.random_under, population[0] if population else None))
        return population

    def next_generation(self, population: list[Candidate]) -> list[Candidate]:
        """The fittest distinct ``parent_count`` of ``population``, then children by mutation and crossover."""
        distinct = list({candidate.arch.choices: candidate for candidate in population}.values())
        parents = sorted(distinct, key=lambda candidate: -candidate.fitness)[:self.config.parent_count]
        children_count = self.config.population - len(parents)
        mutations = round(children_count * self.config.mutation_share)
        children: list[Candidate] = []
        for index in range(children_count):
            if index < mutations:
                parent = self.rng.choice(parents)
                make = partial(mutate, self.space, parent.arch, self.config.mutate_prob, self.rng)
            else:
                parent, other = self.rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
                make = partial(crossover, self.space, parent.arch, other.arch, self.rng)
            children.append(self.draw(make, parent))
        return parents + children

    def log(self, population: list[Candidate]) -> dict[str, float]:
        """This generation's figures: the fittest's fitness, accuracy and latency, the mean fitness, counts."""
        fittest = max(population, key=lambda candidate: candidate.fitness)
        return {"generation": self.generation, "best_fitness": fittest.fitness,
                "mean_fitness": sum(c.fitness for c in population) / len(population),
                "best_accuracy": fittest.accuracy, "best_latency_ms": fittest.latency_ms,
                "evaluated": len(self.cache), "rejected": self.rejected}


def evolve(space: SearchSpace, accuracy_of: Callable[[Architecture], float],
           latency_of: Callable[[Architecture], float], bound_ms: float, reward: RewardFn, target_ms: float,
           config: EvolutionConfig, on_generation: Callable[[int, dict[str, float]], None] | None = None,
           memory: MemoryBound | None = None) -> EvolutionResult:
    """Evolve architectures of ``space`` whose predicted latency is at most ``bound_ms`` (see the module docstring).

    Args:
        accuracy_of: accuracy of an architecture (called once per distinct architecture, only under the bound).
        latency_of: the latency model's prediction in ms (called once per distinct architecture drawn).
        reward: ``(accuracy, latency_ms, target_ms) -> fitness``, e.g. :func:`hwnas.search.losses.get_reward`.
        on_generation: called after each generation with its index and its :attr:`EvolutionResult.history` entry.
        memory: the search's memory bound (:class:`~hwnas.search.memory_bound.MemoryBound`): a candidate over it
            is never evaluated.
    """
    for name, value in (("bound_ms", bound_ms), ("target_ms", target_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise HwnasError(f"evolution: {name} must be a positive number of ms, got {value!r}")
    run = _Evolution(space, accuracy_of, latency_of, bound_ms, reward, target_ms, config, memory)
    history: list[dict[str, float]] = []
    population = run.first_generation()
    for generation in range(config.generations):
        if generation:
            run.generation = generation
            population = run.next_generation(population)
        history.append(run.log(population))
        if on_generation is not None:
            on_generation(generation, history[-1])
    evaluated = list(run.cache.values())
    best = max(evaluated, key=lambda candidate: candidate.fitness)
    return EvolutionResult(best, evaluated, run.rejected, history, run.rejected_memory)
