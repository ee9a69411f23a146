"""One way to register: search spaces, op kinds, runtimes, predictor kinds, search strategies, losses and rewards.

Every kind of pluggable object lives in one :class:`Registry` (name -> object). The built-ins are declared here by
name and module, so listing them (the CLI's choices, ``hwnas --help``) imports neither torch nor xgboost; a
built-in's module is imported on its first lookup and registers it there. Another package adds its own through
the public ``register_*`` functions below, called from a Python entry point of the group ``hwnas.plugins``::

    # the plugin's pyproject.toml
    [project.entry-points."hwnas.plugins"]
    my_plugin = "my_package.hwnas_plugin:register"   # a function (called) or a module (imported)

The entry points are loaded once, on the first lookup of any registry; a plugin that fails to load is one
``hwnas: warning:`` line on stderr and is skipped, never a crash. Registering a name twice is a one-line
:class:`HwnasError` unless ``replace=True``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from hwnas.errors import HwnasError
from hwnas.io import first_line

T = TypeVar("T")
PLUGIN_GROUP = "hwnas.plugins"


class Registry(Generic[T]):
    """Objects of one kind by name, with lazily imported built-ins and plugins.

    Args:
        what: the kind's name in messages (``unknown search space 'x': expected one of ...``).
        builtins: name -> ``"module"`` (importing the module registers the name) or ``"module:attribute"`` (the
            attribute is the object), resolved on the name's first lookup.
    """

    def __init__(self, what: str, builtins: Mapping[str, str] | None = None) -> None:
        self.what = what
        self._lazy: dict[str, str] = dict(builtins or {})
        self._entries: dict[str, T] = {}
        self._order: dict[str, None] = dict.fromkeys(self._lazy)

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that registers what it decorates.

        A name already taken (a built-in included) is a one-line :class:`HwnasError` unless ``replace``.
        """
        if obj is None:
            return lambda decorated: self.register(name, decorated, replace=replace)
        if not isinstance(name, str) or not name.strip():
            raise HwnasError(f"{self.what}: a name must be a non-empty string, got {name!r}")
        target = self._lazy.get(name)
        if target is not None:
            module_name, _, attribute = target.partition(":")
            if not attribute and module_name in sys.modules:  # the built-in's own module registers it
                del self._lazy[name]
            else:  # someone else: the built-in first, so that taking its name needs replace=True
                self._resolve(name)
        if name in self._entries and not replace:
            raise HwnasError(f"{self.what} {name!r} is already registered ({_describe(self._entries[name])}); "
                             "pass replace=True to replace it")
        self._entries[name] = obj
        self._order[name] = None
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name is one line listing the choices."""
        load_plugins()
        if name in self._lazy:
            self._resolve(name)
        if name not in self._entries:
            raise HwnasError(f"unknown {self.what} {name!r}: expected one of {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name (built-ins first, in their declared order), without importing a built-in."""
        load_plugins()
        return [name for name in self._order if name in self._lazy or name in self._entries]

    def load_all(self) -> dict[str, T]:
        """Every entry by name, the built-ins imported (for tests and listings that need the objects)."""
        return {name: self.get(name) for name in self.names()}

    def __contains__(self, name: object) -> bool:
        if name in self._lazy or name in self._entries:
            return True
        load_plugins()
        return name in self._lazy or name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()!r})"

    def _resolve(self, name: str) -> None:
        """Import the built-in ``name``'s module (which registers it), or take its declared attribute."""
        module_name, _, attribute = self._lazy.pop(name).partition(":")
        module = importlib.import_module(module_name)
        if attribute:
            self._entries.setdefault(name, getattr(module, attribute))
        elif name not in self._entries:
            raise HwnasError(f"{self.what} {name!r}: declared as a built-in of {module_name}, which does not "
                             "register it")


def _describe(obj: object) -> str:
    """Where an entry comes from, for the duplicate's message: ``module.Class`` (a space: its factory)."""
    obj = getattr(obj, "factory", obj)
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


_plugins_loaded: list[bool] = []  # filled once: entry points are loaded on the first lookup of any registry


def load_plugins() -> None:
    """Load the ``hwnas.plugins`` entry points, once: each names a function (called with no arguments) or a
    module (imported) that registers what it adds; a failure is one warning line on stderr, not a crash."""
    if _plugins_loaded:
        return
    _plugins_loaded.append(True)
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()
        except Exception as exc:  # noqa: BLE001 (a broken plugin must not break hwnas)
            print(f"hwnas: warning: plugin {entry.name!r} ({entry.value}) not loaded: {exc.__class__.__name__}: "
                  f"{first_line(exc)}", file=sys.stderr)


# -- the registries and their built-ins -------------------------------------------------------------------------
_OP_KINDS = ("conv", "mbconv", "dwsep", "skip", "zero", "pool", "linear")

SPACES: Registry[Any] = Registry("search space", {
    **dict.fromkeys(("proxyless", "fbnet", "fbnet-cifar100", "tiny"), "hwnas.spaces.registry"),
    "mnasnet": "hwnas.spaces.mnasnet"})
"""name -> :class:`hwnas.spaces.registry.SpaceInfo`."""
OP_SPECS: Registry[Any] = Registry("op kind", {**dict.fromkeys(_OP_KINDS, "hwnas.ops.specs"),
                                                "mnas": "hwnas.ops.blocks"})
"""op kind -> its :class:`hwnas.ops.OpSpec` subclass (a subclass with a ``kind`` registers itself)."""
OPS: Registry[Any] = Registry("op module builder", {**dict.fromkeys(_OP_KINDS, "hwnas.ops.modules"),
                                                     "mnas": "hwnas.ops.blocks"})
"""op kind -> builder ``(in_channels, out_channels, stride, **fields) -> nn.Module``."""
RUNTIMES: Registry[Any] = Registry("runtime", {
    "torch": "hwnas.runtimes.torch_rt:TorchRuntime",
    "onnxruntime": "hwnas.runtimes.onnxruntime_rt:OnnxRuntime",
    "litert": "hwnas.runtimes.litert_rt:LiteRTRuntime",
    "tensorrt": "hwnas.runtimes.tensorrt_rt:TensorRTRuntime",
    "adb": "hwnas.runtimes.adb_rt:AdbRuntime",
})
"""backend name -> :class:`hwnas.runtimes.Runtime` subclass (modules import their runtime library only inside
methods, so a missing optional runtime never breaks a lookup)."""
PREDICTORS: Registry[Any] = Registry("predictor kind", {
    "calibrated": "hwnas.latency.predictors.calibrated",
    "transfer": "hwnas.latency.predictors.transfer",
    "kernel": "hwnas.latency.predictors.kernel",
})
"""kind -> :class:`hwnas.latency.predictors.Predictor` subclass."""
STRATEGIES: Registry[Any] = Registry("search strategy", dict.fromkeys(("proxyless", "mnas", "evolution"),
                                                                  "hwnas.search.strategies"))
"""name -> :class:`hwnas.search.strategies.ArchStep` subclass, made with the strategy's keyword parameters."""
LOSSES: Registry[Any] = Registry("loss", dict.fromkeys(("mul#log", "add#linear", "add#abs"), "hwnas.search.losses"))
"""name -> loss class ``(**params)(ce, expected_latency_ms, target_ms) -> Tensor`` of gradient strategies."""
REWARDS: Registry[Any] = Registry("reward", dict.fromkeys(
    ("mnas-soft", "mnas-hard", "tunas-abs", "soft", "hard", "abs"), "hwnas.search.losses"))
"""name -> reward class ``(**params)(accuracy, latency_ms, target_ms) -> float`` of sampling strategies."""

ALL: dict[str, Registry[Any]] = {"spaces": SPACES, "op_specs": OP_SPECS, "ops": OPS, "runtimes": RUNTIMES,
                                 "predictors": PREDICTORS, "strategies": STRATEGIES, "losses": LOSSES,
                                 "rewards": REWARDS}


# -- the public register_* functions ----------------------------------------------------------------------------
def register_space(name: str, *, default_resolution: int, default_num_classes: int, total_stride: int,
                   description: str, replace: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a space factory ``(resolution, num_classes) -> SearchSpace`` as ``name`` (see
    :func:`hwnas.spaces.registry.register_space`)."""
    from hwnas.spaces.registry import register_space as register

    return register(name, default_resolution=default_resolution, default_num_classes=default_num_classes,
                    total_stride=total_stride, description=description, replace=replace)


def register_runtime(name: str, cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a :class:`hwnas.runtimes.Runtime` subclass as backend ``name`` (a decorator without ``cls``)."""
    return RUNTIMES.register(name, cls, replace=replace)


def register_predictor(cls: type | None = None, *, replace: bool = False) -> Any:
    """Class decorator: register a :class:`~hwnas.latency.predictors.Predictor` subclass by its ``kind``, so that
    its files load (``@register_predictor`` or ``@register_predictor(replace=True)``)."""
    if cls is None:
        return lambda decorated: register_predictor(decorated, replace=replace)
    return PREDICTORS.register(getattr(cls, "kind", ""), cls, replace=replace)


def register_strategy(name: str, cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a search strategy (an :class:`~hwnas.search.strategies.ArchStep` subclass taking keyword
    parameters) as ``name`` (a decorator without ``cls``)."""
    return STRATEGIES.register(name, cls, replace=replace)


def register_loss(name: str, cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a latency loss class (its fields are the loss's parameters) as ``name``."""
    return LOSSES.register(name, cls, replace=replace)


def register_reward(name: str, cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a reward class (its fields are the reward's parameters) as ``name``."""
    return REWARDS.register(name, cls, replace=replace)


def register_op(kind: str, builder: Callable[..., Any] | None = None, *, replace: bool = False) -> Any:
    """Register the module builder ``(in_channels, out_channels, stride, **fields) -> nn.Module`` of op ``kind``;
    the kind's spec is an :class:`hwnas.ops.OpSpec` subclass with ``kind = "<kind>"``, registered by defining it."""
    return OPS.register(kind, builder, replace=replace)


__all__ = ["ALL", "LOSSES", "OPS", "OP_SPECS", "PLUGIN_GROUP", "PREDICTORS", "REWARDS", "RUNTIMES", "Registry",
           "SPACES", "STRATEGIES", "load_plugins", "register_loss", "register_op", "register_predictor",
           "register_reward", "register_runtime", "register_space", "register_strategy"]
