"""The trainer catalogue: each trainer is a scikit-learn regressor behind a MaxAbsScaler.

A `PowerModel` fits one such pipeline per power component (package, core, ... or platform) and
predicts them all; a component whose measured power never changes gets a constant model, because
no regressor has anything to learn there (RAPL `core`/`uncore` often read 0 on servers).
Names and hyperparameters follow upstream's catalogue (docs: reference §3.5); `max_rows` bounds the
cost of the super-linear fitters (kernel SVR) on long windows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, SGDRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, PolynomialFeatures
from sklearn.svm import SVR

from .errors import ConfigError


class TrainerSkipped(Exception):
    """A trainer cannot fit this data; the run records the reason and goes on."""


# -- curve fits ------------------------------------------------------------------------------------

def _logarithmic(x, a, b, c):
    return a * np.log(np.maximum(b * x + 1.0, 1e-12)) + c


def _logistic(x, A, x0, k, off):
    return A / (1.0 + np.exp(np.clip(-k * (x - x0), -500, 500))) + off


def _exponential(x, a, b, c):
    return a * np.exp(np.clip(b * x, -500, 500)) + c


def _p0(kind: str, y: np.ndarray) -> list[float]:
    lo, hi, sd = float(y.min()), float(y.max()), float(y.std()) or 1.0
    if kind == "logarithmic":
        return [hi - lo, 1.0, lo]
    if kind == "logistic":
        return [hi - lo, 0.5, max((hi - lo) // sd, 1.0), lo]
    a = max((hi - lo) // np.e, 1.0)
    return [a, 1.0, lo - a]


CURVES: dict[str, Callable[..., np.ndarray]] = {
    "logarithmic": _logarithmic, "logistic": _logistic, "exponential": _exponential,
}


class CurveFitRegressor(RegressorMixin, BaseEstimator):
    """Fits a one-feature curve (`kind`) on column `feature_index` of the scaled input."""

    def __init__(self, kind: str = "logarithmic", feature_index: int = 0):
        self.kind = kind
        self.feature_index = feature_index

    def fit(self, X, y):
        x = np.asarray(X, dtype=float)[:, self.feature_index]
        y = np.asarray(y, dtype=float)
        try:
            params, _ = curve_fit(CURVES[self.kind], x, y, p0=_p0(self.kind, y), maxfev=5000)
        except (RuntimeError, ValueError, FloatingPointError) as exc:
            raise TrainerSkipped(f"{self.kind} curve did not converge: {exc}") from None
        if not np.all(np.isfinite(params)):
            raise TrainerSkipped(f"{self.kind} curve fit gave non-finite parameters")
        self.params_ = params
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        x = np.asarray(X, dtype=float)[:, self.feature_index]
        return CURVES[self.kind](x, *self.params_)


# -- the catalogue -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainerSpec:
    """How to build one trainer's regressor, and what it can be exported as."""

    name: str
    model_class: str                 # scikit | xgboost | curvefit (as upstream's metadata says)
    regressor: Callable[[int], object]
    weight_kind: str | None = None   # linear | curvefit: Kepler's estimator can run it from weight.json
    max_rows: int | None = None      # fit on at most this many rows (evenly spaced in time)
    curve: str | None = None
    relative_cost: float = 1.0       # for scheduling: the slow fits start first


def _xgboost(seed: int):
    try:
        from xgboost import XGBRegressor
    except ImportError:
        raise TrainerSkipped("xgboost is not installed (pip install 'kepler-model-operator[xgboost]')") from None
    return XGBRegressor(n_estimators=100, learning_rate=0.1, n_jobs=1, random_state=seed, tree_method="hist")


TRAINERS: dict[str, TrainerSpec] = {s.name: s for s in (
    TrainerSpec("PolynomialRegressionTrainer", "scikit",
                lambda seed: make_pipeline(PolynomialFeatures(degree=2), LinearRegression())),
    TrainerSpec("GradientBoostingRegressorTrainer", "scikit",
                lambda seed: GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.1,
                                                       random_state=seed), max_rows=3000, relative_cost=10),
    TrainerSpec("KNeighborsRegressorTrainer", "scikit", lambda seed: KNeighborsRegressor(n_neighbors=6)),
    TrainerSpec("LinearRegressionTrainer", "scikit", lambda seed: LinearRegression(positive=True),
                weight_kind="linear"),
    TrainerSpec("SVRRegressorTrainer", "scikit", lambda seed: SVR(C=1.0, epsilon=0.2), max_rows=2000,
                relative_cost=5),
    TrainerSpec("XgboostFitTrainer", "xgboost", _xgboost, relative_cost=5),
    TrainerSpec("SGDRegressorTrainer", "scikit", lambda seed: SGDRegressor(max_iter=1000, random_state=seed),
                weight_kind="linear"),
    TrainerSpec("LogarithmicRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("logarithmic"),
                weight_kind="curvefit", curve="logarithmic", max_rows=3000, relative_cost=3),
    TrainerSpec("LogisticRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("logistic"),
                weight_kind="curvefit", curve="logistic", max_rows=3000, relative_cost=3),
    TrainerSpec("ExponentialRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("exponential"),
                weight_kind="curvefit", curve="exponential", max_rows=3000, relative_cost=3),
)}

DEFAULT_TRAINERS = tuple(TRAINERS)


def trainer_names(value: str | None) -> list[str]:
    """Parse a comma list; `default` (or empty) means the whole catalogue. Short names are accepted."""
    if not value or value == "default":
        return list(DEFAULT_TRAINERS)
    names = []
    for raw in (v.strip() for v in value.split(",") if v.strip()):
        name = raw if raw in TRAINERS else f"{raw}Trainer"
        if name not in TRAINERS:
            raise ConfigError(f"unknown trainer {raw!r} (known: {', '.join(TRAINERS)})")
        names.append(name)
    return names


MIN_TRAIN_ROWS = 5


def _evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


class PowerModel(RegressorMixin, BaseEstimator):
    """One trainer fitted per power component: `fit(X, Y)` with Y's columns the components in watts."""

    def __init__(self, trainer: str = "LinearRegressionTrainer", main_features: dict | None = None,
                 random_state: int = 0):
        self.trainer = trainer
        self.main_features = main_features
        self.random_state = random_state

    @property
    def spec(self) -> TrainerSpec:
        return TRAINERS[self.trainer]

    def _component_pipeline(self, component: str, features: list[str]) -> Pipeline:
        regressor = self.spec.regressor(self.random_state)
        if isinstance(regressor, CurveFitRegressor):
            main = (self.main_features or {}).get(component, features[0])
            regressor.set_params(feature_index=features.index(main))
        return Pipeline([("scale", MaxAbsScaler()), ("model", regressor)])

    def fit(self, X: pd.DataFrame, Y: pd.DataFrame):
        if len(X) < MIN_TRAIN_ROWS:
            raise TrainerSkipped(f"too few rows to train ({len(X)} < {MIN_TRAIN_ROWS})")
        self.features_ = list(X.columns)
        self.components_ = [c.removesuffix("_power") for c in Y.columns]
        rows = _evenly_spaced(len(X), self.spec.max_rows)
        x = X.to_numpy(dtype=float)[rows]
        varying = {c: Y[col].to_numpy(dtype=float)[rows] for c, col in zip(self.components_, Y.columns)}
        if all(np.ptp(y) == 0 for y in varying.values()):
            raise TrainerSkipped("the measured power is constant: nothing to learn")
        self.models_: dict[str, Pipeline] = {}
        self.offsets_: dict[str, float] = {c: 0.0 for c in self.components_}
        for component, y in varying.items():
            if np.ptp(y) == 0:
                model = Pipeline([("scale", MaxAbsScaler()), ("model", DummyRegressor(strategy="mean"))])
            else:
                model = self._component_pipeline(component, self.features_)
            self.models_[component] = model.fit(x, y)
        return self

    def predict_components(self, X: pd.DataFrame) -> pd.DataFrame:
        x = X[self.features_].to_numpy(dtype=float)
        return pd.DataFrame({f"{c}_power": np.clip(m.predict(x) - self.offsets_[c], 0.0, None)
                             for c, m in self.models_.items()}, index=X.index)

    def shifted(self, offsets: dict[str, float]) -> "PowerModel":
        """This model predicting `target - offsets` instead of `target`, sharing the fitted regressors.

        Every trainer here fits a free intercept (or constant term), so fitting `y - c` gives the model
        for `y` minus `c`: a DynPower model whose isolator subtracted a constant per component is
        derived from the AbsPower fit instead of fitted again.
        """
        derived = copy.copy(self)
        derived.offsets_ = {c: self.offsets_[c] + offsets.get(f"{c}_power", 0.0) for c in self.components_}
        return derived

    def predict(self, X):
        return self.predict_components(X).to_numpy()

    def is_constant(self, component: str) -> bool:
        return isinstance(self.models_[component][-1], DummyRegressor)


def fresh(model: PowerModel) -> PowerModel:
    return clone(model)
