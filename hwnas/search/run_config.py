"""The search run's configuration: every hyper-parameter in one dataclass, read from JSON/TOML or overridden
from the command line, type-checked with one-line errors that name the file and the key.

The fields are declared and documented in named groups (:mod:`hwnas.search.run_options`: :class:`TaskOptions`,
:class:`DataOptions`, :class:`SupernetOptions`, :class:`StrategyOptions`, :class:`ClosedLoopOptions`,
:class:`MeasurementOptions`, re-exported here); :class:`SearchConfig` has them all as flat fields, so the config
JSON (``report.json``'s ``config``, a config file), ``--set FIELD=VALUE`` and ``SearchConfig(field=...)`` name a
field without its group, and a function that needs one group can say so in its signature. Why the defaults are what
they are, with the figures measured for them, is in docs/search.md ("Why the search defaults are what they are").
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hwnas.checks import Rule, check_fields, check_rules, dataclass_hints, is_finite_number, number_rule
from hwnas.errors import HwnasError
from hwnas.search.run_options import (DEFAULT_DEVICE, END_TO_END_PROTOCOL, ClosedLoopOptions, DataOptions,
                                      MeasurementOptions, StrategyOptions, SupernetOptions, TaskOptions)


@dataclass
class SearchConfig(MeasurementOptions, ClosedLoopOptions, StrategyOptions, SupernetOptions, DataOptions,
                   TaskOptions):
    """Every option of a search run, with its default: the fields of all option groups (task, data, supernet,
    strategy, closed loop, measurement; see each group's docstring), flat."""

    def __post_init__(self) -> None:
        _validate_values(dataclasses.asdict(self), "search config")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> SearchConfig:
        """A copy with ``overrides`` applied (type-checked; unknown keys raise a one-line error)."""
        _check_fields(overrides, source)
        _validate_values({**dataclasses.asdict(self), **overrides}, source)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_file(cls, path: str | Path) -> SearchConfig:
        """Read a flat JSON or TOML file of fields; the defaults fill the rest."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise HwnasError(f"{path}: cannot read the search config ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise HwnasError(f"{path}: not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset "
                             f"{exc.start}); expected a JSON or TOML search config") from None
        try:
            if path.suffix == ".toml":
                data: Any = tomllib.loads(text)
            elif path.suffix == ".json":
                data = json.loads(text)
            else:
                raise HwnasError(f"{path}: expected a .json or .toml search config")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise HwnasError(f"{path}: invalid {path.suffix[1:].upper()}: {exc}") from None
        if not isinstance(data, dict):
            raise HwnasError(f"{path}: expected an object of search config fields")
        return cls().with_overrides(data, str(path))


def _check_fields(values: dict[str, Any], source: str) -> None:
    check_fields(values, dataclass_hints(SearchConfig), source, noun="key")


def _text(optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    """A non-empty string (a name or a path), or None when ``optional``."""
    return ((lambda v: v is None and optional or isinstance(v, str) and v.strip() != ""),
            "a non-empty string" + (" or null" if optional else ""))


def _one_of(choices: Sequence[str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


def _numbers() -> tuple[Callable[[Any], bool], str]:
    """An object of finite numbers (a loss's or reward's parameters; their names are checked against it)."""
    return ((lambda v: isinstance(v, dict) and all(map(is_finite_number, v.values()))),
            "an object of finite numbers")


def _betas() -> tuple[Callable[[Any], bool], str]:
    in_unit = number_rule(0, 1, high_open=True)[0]
    return ((lambda v: v is None or isinstance(v, (list, tuple)) and len(v) == 2 and all(map(in_unit, v))),
            "two numbers in [0, 1) (Adam's beta1, beta2) or null")


def _bool() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, bool)), "true or false"


def _rules() -> list[Rule]:
    """Every field of :class:`SearchConfig` and what it must be: one line each, in the groups' order (a test checks
    that no field is missing). The protocols' own fields are checked by their classes (:func:`_check_nested`)."""
    from hwnas.latency.estimator import OVERHEAD_MODES
    from hwnas.search.losses import loss_names, reward_names
    from hwnas.search.strategies import strategy_names
    from hwnas.search.supernet import ARCH_GRAD_MODES, WEIGHT_SHARING_MODES
    from hwnas.spaces import space_names

    count, positive, optional_positive = number_rule(0, integer=True), number_rule(1, integer=True), \
        number_rule(1, integer=True, optional=True)
    rate, optional_rate = number_rule(0, low_open=True), number_rule(0, low_open=True, optional=True)
    unit_open = number_rule(0, 1, high_open=True)
    return [
        # task
        ("device", *_text(optional=True)), ("space", *_one_of(space_names())),
        ("resolution", *number_rule(1, integer=True, optional=True)), ("target_ms", *optional_rate),
        ("target_fraction", *number_rule(0, 1)),
        ("targets", (lambda v: isinstance(v, list) and all(is_finite_number(t) and t > 0 for t in v)
                     and len(set(v)) == len(v)), "a list of distinct positive numbers (ms)"),
        ("max_memory_mb", *optional_rate), ("max_params_mb", *optional_rate),
        ("table", *_text(optional=True)),
        ("overhead", *_one_of(OVERHEAD_MODES)),
        ("profile_missing", *_bool()), ("device_threads", *number_rule(1, 1024, integer=True, optional=True)),
        ("seed", *number_rule(0, 2**32 - 1, integer=True)), ("out", *_text(optional=True)),
        # data
        ("data", *_text(optional=True)), ("arch_fraction", *number_rule(0, 1, low_open=True, high_open=True)),
        ("test_fraction", *number_rule(0, 1, low_open=True, high_open=True)), ("max_per_split", *optional_positive),
        # supernet
        ("weight_sharing", *_one_of(WEIGHT_SHARING_MODES)), ("channels_last", *_bool()),
        ("arch_grad", *_one_of(ARCH_GRAD_MODES)), ("warmup_epochs", *count), ("search_epochs", *count),
        ("train_epochs", *count), ("batch_size", *positive), ("train_batch_size", *positive),
        ("eval_batch_size", *positive), ("weight_optimizer", *_one_of(("sgd", "adam"))), ("weight_lr", *rate),
        ("momentum", *unit_open), ("weight_decay", *number_rule(0)), ("train_lr", *rate),
        ("label_smoothing", *unit_open), ("grad_clip", *optional_rate),
        ("num_threads", *number_rule(1, 1024, integer=True)),
        ("deterministic", *_bool()),
        # strategy
        ("strategy", *_one_of(strategy_names())), ("loss", *_one_of(loss_names())), ("loss_params", *_numbers()),
        ("reward", *_one_of(reward_names())), ("reward_params", *_numbers()), ("mnas_samples", *optional_positive),
        ("mnas_baseline_momentum", *number_rule(0, 1, high_open=True, optional=True)),
        ("mnas_entropy_weight", *number_rule(0, optional=True)),
        ("evolution_population", *number_rule(2, integer=True)), ("evolution_generations", *positive),
        ("evolution_images", *positive), ("arch_update_every", *positive),
        ("arch_steps", *positive), ("arch_batch_size", *positive), ("arch_lr", *optional_rate),
        ("arch_betas", *_betas()), ("arch_eps", *optional_rate),
        # closed loop
        ("closed_loop_steps", *count), ("closed_loop_margin", *number_rule(0, 0.5, high_open=True)),
        ("predictor", *_text()), ("predictor_networks", *count), ("closed_loop_weight", *rate),
        # measurement
        ("measure", *_bool()), ("baseline", *_bool()), ("random_baselines", *count),
        ("random_band", *number_rule(0, 1, low_open=True, high_open=True)),
        ("protocol", (lambda v: isinstance(v, dict)), "an object of protocol fields"),
        ("paired", (lambda v: isinstance(v, dict)), "an object of paired protocol fields"),
        ("final_attempts", *positive), ("final_extra_attempts", *count), ("noisy_retries", *count),
        ("retry_pause_s", *number_rule(0)),
    ]


def _validate_values(values: dict[str, Any], source: str) -> None:
    """Types (the fields' hints), then each field's range or choices (:func:`_rules`), then the nested objects."""
    _check_fields(values, source)
    check_rules(values, _rules(), source)
    _check_nested(values, source)


def _check_nested(values: dict[str, Any], source: str) -> None:
    """The loss's and reward's parameter names against their classes, the protocols against theirs."""
    from hwnas.runtimes.paired import PairedProtocol
    from hwnas.runtimes.protocol import Protocol
    from hwnas.search.losses import get_loss, get_reward

    for name, make, kind in (("loss_params", get_loss, "loss"), ("reward_params", get_reward, "reward")):
        try:
            make(values[kind], **values[name])
        except HwnasError as error:
            raise HwnasError(f"{source}: field {name!r}: {error}") from None
    Protocol.from_dict({**Protocol().to_dict(), **values["protocol"]}, f"{source}: field 'protocol'")
    PairedProtocol.from_dict({**PairedProtocol().to_dict(), **values["paired"]}, f"{source}: field 'paired'")


__all__ = ["DEFAULT_DEVICE", "END_TO_END_PROTOCOL", "ClosedLoopOptions", "DataOptions", "MeasurementOptions",
           "SearchConfig", "StrategyOptions", "SupernetOptions", "TaskOptions"]
