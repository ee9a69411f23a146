"""What every learned latency predictor shares: metadata, a registry of kinds, and the JSON file format.

A predictor file is one JSON object (never a pickle)::

    {"schema": "hwnas.predictor/1", "kind": "calibrated", "meta": {...}, "model": {...}}

``meta`` (:class:`PredictorMeta`) says what the predictor is for and how it was made: the device, its
fingerprint, the space and resolution (for predictors of a space), the reference network and its quiet
latency, the feature list, the training data (rows, sources, date, cross-validated figures) and the versions
of hwnas, xgboost and the runtime. ``model`` is the kind's own content; XGBoost boosters are stored as their
JSON model inside it. Loading checks all of it and answers a foreign, stale or corrupt file with one line.
"""

from __future__ import annotations

import copy
import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from hwnas.errors import HwnasError
from hwnas.io import now_iso, read_json_file, write_json_atomic
from hwnas.latency.estimator import LatencyEstimator
from hwnas.latency.predictors.meta import PredictorMeta, versions  # noqa: F401 (re-exported)
from hwnas.latency.predictors.boosters import booster_from_json, booster_to_json  # noqa: F401 (re-exported)
from hwnas.latency.predictors.prediction import Prediction, model_input, unsupported
from hwnas.registry import PREDICTORS
from hwnas.spaces import Architecture, SearchSpace

if TYPE_CHECKING:
    from hwnas.devices import DeviceProfile

SCHEMA = "hwnas.predictor/1"
_KINDS = PREDICTORS  # kind -> class (hwnas.registry: built-ins imported on first lookup, plugins' kinds too)


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator: make a predictor kind loadable by its ``kind`` (:func:`hwnas.registry.register_predictor`)."""
    return PREDICTORS.register(cls.kind, cls)


def predictor_kinds() -> list[str]:
    _import_kinds()
    return sorted(_KINDS)


def predictor_class(kind: str, where: str = "kind") -> type[Predictor]:
    """The registered class of ``kind``; one line naming ``where`` and the choices otherwise."""
    _import_kinds()
    if kind not in _KINDS:
        raise HwnasError(f"{where}: expected one of {', '.join(sorted(_KINDS))}, got {kind!r}")
    return _KINDS[kind]


class Predictor(ABC):
    """A latency model fitted on measurements; subclasses give ``kind`` and the model's JSON content.

    The protocol every kind follows (scikit-learn's idea): fitting returns a new predictor and never changes its
    inputs, and predicting never changes the predictor. :meth:`predict` answers for any model the kind can read;
    :meth:`for_space` gives the latency estimator a search of a space uses; :meth:`with_rows` refits with added
    measured networks where the kind can (``supports_refit``); what a kind cannot do is one :class:`HwnasError` line.
    """

    kind: ClassVar[str] = ""
    reads_onnx: ClassVar[bool] = False  # predicts ONNX models and torch modules, not only a space's architectures
    supports_refit: ClassVar[bool] = False  # with_rows: refitted with added measured networks (the closed loop)
    fits_networks: ClassVar[bool] = False  # fit_networks: learns from measured networks (``hwnas predictor fit``)
    needs_prior: ClassVar[bool] = False  # fit_networks needs other devices' measurements as a prior (``--prior``)
    how_to_fit: ClassVar[str] = "see docs/predictors.md, 'Which predictor where'"

    def __init__(self, meta: PredictorMeta) -> None:
        self.meta = copy.deepcopy(meta)  # a predictor never shares (or later rewrites) the caller's meta
        self.path: Path | None = None

    @abstractmethod
    def model_to_dict(self) -> dict[str, Any]:
        """The kind's own content of the file (plain JSON)."""

    @classmethod
    @abstractmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> Predictor:
        """Rebuild from :meth:`model_to_dict`; one-line :class:`HwnasError` naming ``source`` on bad content."""

    @classmethod
    def expected_features(cls, meta: PredictorMeta) -> list[str] | None:
        """The feature names this hwnas computes for such a predictor (None: the kind does not check)."""
        return None

    @property
    def reference_ms(self) -> float | None:
        """The reference network's quiet latency its predictions are a multiple of (None: plain milliseconds)."""
        return self.meta.reference_ms

    def predict(self, model: Any, *, input_shape: Sequence[int] | None = None) -> Prediction:
        """Latency of ``model``: an :class:`Architecture`, an architecture ``.json`` or ``.onnx`` path, an
        ``onnx.ModelProto`` or a torch module (give ``input_shape``); see :mod:`.prediction`."""
        given = model_input(model, input_shape=input_shape, read_onnx=self.reads_onnx)
        if given.arch is not None:
            return self._predict_arch(given.arch)
        if not self.reads_onnx:
            raise unsupported(self.kind, f"predicts architectures of its search space, not {given.source}",
                              "use a kernel predictor for ONNX models and torch modules")
        return self._predict_onnx(given.onnx, given.source)

    @abstractmethod
    def _predict_arch(self, arch: Architecture) -> Prediction:
        """:meth:`predict` of an architecture of a search space."""

    def _predict_onnx(self, model: Any, source: str) -> Prediction:
        """:meth:`predict` of a loaded ONNX model (kinds with ``reads_onnx``)."""
        raise unsupported(self.kind, f"cannot read {source}", "use a kernel predictor for ONNX models")

    def for_space(self, space: SearchSpace) -> SpacePredictor:
        """The latency estimator of ``space``'s architectures that a search uses (differentiable, decodable)."""
        raise unsupported(self.kind, f"cannot estimate architectures of {space.name}@{space.resolution}",
                          "give a predictor of that space")

    @classmethod
    def fit_networks(cls, data: Any, *, table: Any = None, prior: Any = None, residual: str = "auto",
                     seed: int = 0) -> Predictor:
        """A new predictor of this kind fitted on measured networks (``data``: a
        :class:`~hwnas.latency.predictors.fit.Measurements`), as ``hwnas predictor fit`` does (kinds with
        ``fits_networks``); the inputs are read only."""
        raise unsupported(cls.kind, "does not learn from measured networks", cls.how_to_fit)

    def with_rows(self, archs: Sequence[Architecture], latencies_ms: Sequence[float], *, weight: float = 1.0,
                  source: str = "added") -> Predictor:
        """A new predictor fitted on this one's data plus these measured networks (kinds with ``supports_refit``)."""
        raise unsupported(self.kind, "cannot be refitted with added networks",
                          "the closed loop steps its target instead (a calibrated predictor refits)")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "kind": self.kind, "saved": now_iso(), "meta": self.meta.to_dict(),
                "model": self.model_to_dict()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        data = self.to_dict()
        try:
            json.dumps(data, allow_nan=False)
        except ValueError:
            raise HwnasError(f"{path}: predictor holds NaN or infinite values; refusing to save it") from None
        write_json_atomic(path, data)
        self.path = path
        return path


def load_predictor(path: str | Path) -> Predictor:
    """Load any kind of predictor file; a missing, corrupt, foreign-schema or stale file raises one line."""
    path = Path(path)
    predictor = predictor_from_dict(read_json_file(path, "predictor file"), str(path))
    predictor.path = path
    return predictor


def predictor_from_dict(data: Any, source: str) -> Predictor:
    if not isinstance(data, dict):
        raise HwnasError(f"{source}: not a predictor (expected a JSON object)")
    if data.get("schema") != SCHEMA:
        raise HwnasError(f"{source}: field 'schema': expected {SCHEMA!r}, got {data.get('schema')!r}")
    _import_kinds()
    kind = data.get("kind")
    if kind not in _KINDS:
        raise HwnasError(f"{source}: field 'kind': expected one of {', '.join(sorted(_KINDS))}, got {kind!r}")
    for name in ("meta", "model"):
        if not isinstance(data.get(name), dict):
            raise HwnasError(f"{source}: field {name!r}: expected an object")
        _check_all_finite(data[name], source, name)
    cls = _KINDS[kind]
    meta = PredictorMeta.from_dict(data["meta"], source)
    expected = cls.expected_features(meta)
    if expected is not None and list(meta.features) != expected:
        raise HwnasError(f"{source}: stale predictor: fitted with {len(meta.features)} features that this hwnas no "
                         f"longer computes the same way ({len(expected)} now); refit it with `hwnas predictor fit`")
    try:
        return cls.model_from_dict(meta, data["model"], source)
    except HwnasError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise HwnasError(f"{source}: corrupt predictor model ({exc.__class__.__name__}: {exc})") from None


def _check_all_finite(value: Any, source: str, where: str) -> None:
    """Every number inside ``value`` is finite: a NaN or infinite parameter (JSON readers accept the tokens; hwnas
    never writes them) would turn every prediction, and so every figure and decision, into NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        raise HwnasError(f"{source}: field {where!r}: {value!r}, expected a finite number (the file is corrupt; "
                         "refit the predictor)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_all_finite(item, source, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_all_finite(item, source, f"{where}[{index}]")


def check_device(predictor: Predictor, device: DeviceProfile, runtime: Mapping[str, Any] | None = None) -> str | None:
    """The one warning line for ``predictor`` used for ``device`` on this machine (fitted on another CPU, caches,
    CPU features, library versions or runtime settings), None when it was fitted here or its file does not say;
    a predictor of another device, backend or runtime release line raises one line. ``runtime``: the device's
    runtime fingerprint section when one was built here (else the installed libraries are compared). See
    :mod:`hwnas.latency.predictors.origin`."""
    from hwnas.latency.predictors.origin import check_origin

    return check_origin(predictor.meta, predictor.path or "predictor", device, runtime)


def rescale(predicted_ms: float, predictor: Predictor, reference_ms: float | None) -> float:
    """Move a prediction from the predictor's reference level to another set's (``None``: unchanged).

    Both are ``ratio x reference``; comparing at one reference level compares ratios, which is what survives a
    machine whose speed drifts between the day of fitting and the day of measuring.
    """
    own = predictor.reference_ms  # the property: a kind whose figures are not at this level says None
    if reference_ms is None or not own:
        return predicted_ms
    return predicted_ms * reference_ms / own


def _import_kinds() -> None:
    """Import the modules that register the built-in kinds (lazily: they import xgboost)."""
    import importlib

    for module in ("hwnas.latency.predictors.calibrated", "hwnas.latency.predictors.transfer",
                   "hwnas.latency.predictors.kernel"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise



class SpacePredictor(Predictor, LatencyEstimator):
    """A predictor of one search space's architectures, and a :class:`LatencyEstimator` of it: ``latency_ms``,
    ``expected_latency_ms`` (differentiable), ``layer_costs_ms``/``fixed_ms`` for the exact decoder, so search,
    decode and the closed loop use it in place of a table; a kind with a non-additive part linearizes them at an
    explicit architecture with ``anchored(arch)`` (a prediction never changes the predictor). Subclasses set
    ``self.space`` in ``__init__``."""

    space: SearchSpace

    def for_space(self, space: SearchSpace) -> SpacePredictor:
        ours, theirs = self.space, space
        if (ours.name, ours.resolution, ours.num_classes) != (theirs.name, theirs.resolution, theirs.num_classes):
            raise HwnasError(f"{self.path or 'predictor'}: a {self.kind} predictor of {ours.name}@{ours.resolution}/"
                             f"{ours.num_classes} classes, not of {theirs.name}@{theirs.resolution}/"
                             f"{theirs.num_classes} classes")
        return self

    def _predict_arch(self, arch: Architecture) -> Prediction:
        ours = (self.space.name, self.space.resolution, self.space.num_classes)
        if (arch.space, arch.resolution, arch.num_classes) != ours:  # building a space can take a second (mnasnet)
            self.for_space(_space_of_arch(arch))
        self.space.validate(arch)
        return Prediction(self.latency_ms(arch), tuple(self.terms(arch)), 0.0, self.kind)

    def terms(self, arch: Architecture) -> list[dict[str, Any]]:
        """The additive terms of ``arch`` (the fixed part, then one per searchable layer), linearized at ``arch``
        (a non-additive factor, if any, spread over them), so they sum to :meth:`latency_ms`."""
        linearized = self.anchored(arch)
        costs = linearized.layer_costs_ms()
        terms = [{"type": "fixed", "key": "stem, fixed blocks, head, runtime overhead", "ms": linearized.fixed_ms()}]
        for layer, choice, spec, cost in zip(self.space.layers, arch.choices, self.space.layer_specs(arch), costs):
            terms.append({"type": f"layer{layer.index}:{choice}", "key": spec.key(),
                          "ms": cost[layer.names.index(choice)]})
        return terms

    @staticmethod
    def space_of(meta: PredictorMeta, source: str) -> SearchSpace:
        from hwnas.spaces import get_space

        if meta.space is None or meta.resolution is None:
            raise HwnasError(f"{source}: field 'meta.space': a {meta.space!r} predictor needs a space and resolution")
        return get_space(meta.space, meta.resolution, meta.num_classes)


def _space_of_arch(arch: Architecture) -> SearchSpace:
    from hwnas.spaces import get_space

    return get_space(arch.space, arch.resolution, arch.num_classes)


class AnchoredView(LatencyEstimator):
    """A space predictor linearized at an anchor architecture: its additive costs times its non-additive factor
    there (``anchored(arch)``), for the decoder and the differentiable loss. ``latency_ms`` stays the predictor's
    own (the factor at each architecture). A view: nothing of the predictor changes."""

    def __init__(self, predictor: SpacePredictor, factor: float) -> None:
        self.predictor, self.space, self.factor = predictor, predictor.space, float(factor)

    def layer_costs_ms(self) -> list[list[float]]:
        return [[v * self.factor for v in costs] for costs in self.predictor.layer_costs_ms()]

    def fixed_ms(self) -> float:
        return self.predictor.fixed_ms() * self.factor

    def latency_ms(self, arch: Architecture) -> float:
        return self.predictor.latency_ms(arch)

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        return self.predictor.anchored(arch)
