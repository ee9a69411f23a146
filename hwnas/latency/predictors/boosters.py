"""The one way predictor files store XGBoost boosters."""

from __future__ import annotations

import json
from typing import Any, Mapping

from hwnas.errors import HwnasError


def booster_to_json(booster: Any) -> str:
    """The one way a predictor file stores an XGBoost booster: its JSON model as one compact string (nested in the
    file's JSON, the indentation would triple its size). :func:`booster_from_json` also reads the nested object
    that calibrated predictors wrote before."""
    return bytes(booster.save_raw("json")).decode()


def booster_from_json(value: Any, source: str) -> Any:
    import xgboost as xgb

    try:
        model = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        model = None
    if not isinstance(model, Mapping) or "learner" not in model:
        raise HwnasError(f"{source}: expected an XGBoost JSON model")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(json.dumps(model).encode()))
    except xgb.core.XGBoostError as exc:
        raise HwnasError(f"{source}: corrupt XGBoost model ({str(exc).splitlines()[0][:120]})") from None
    return booster
