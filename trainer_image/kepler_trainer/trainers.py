"""The trainer catalogue: each trainer is a scikit-learn regressor behind a MaxAbsScaler.

A `PowerModel` fits one such pipeline per power component (package, core, ... or platform) and
predicts them all; a component whose measured power never changes gets a constant model, because
no regressor has anything to learn there (RAPL `core`/`uncore` often read 0 on servers).
Names and hyperparameters follow upstream kepler-model-server's trainer catalogue; `max_rows` bounds the
cost of the super-linear fitters (kernel SVR) on long windows.

Beyond upstream's catalogue (docs/quality.md): extra trees, and histogram gradient boosting that fits
the conditional median (absolute-error loss, the loss the headline MAE measures), one variant of it
constrained so that power never falls when activity grows. Their settings are tuned per component by
cross-validation inside the training rows only (contiguous folds in time by default), on at most
`TUNING_ROWS` rows, so a run's cost stays bounded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LinearRegression, SGDRegressor
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, PolynomialFeatures
from sklearn.svm import SVR
from threadpoolctl import threadpool_limits

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
    grid: tuple[dict, ...] = ()      # candidate settings, tuned by cross-validation on the training rows
    monotonic: bool = False          # predicted power may not fall when an activity feature grows


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
                                                       random_state=seed), max_rows=2500, relative_cost=10),
    TrainerSpec("KNeighborsRegressorTrainer", "scikit", lambda seed: KNeighborsRegressor(n_neighbors=6)),
    TrainerSpec("LinearRegressionTrainer", "scikit", lambda seed: LinearRegression(positive=True),
                weight_kind="linear"),
    TrainerSpec("SVRRegressorTrainer", "scikit", lambda seed: SVR(C=1.0, epsilon=0.2), max_rows=1500,
                relative_cost=5),
    TrainerSpec("XgboostFitTrainer", "xgboost", _xgboost, max_rows=4000, relative_cost=5),
    TrainerSpec("SGDRegressorTrainer", "scikit", lambda seed: SGDRegressor(max_iter=1000, random_state=seed),
                max_rows=4000,
                weight_kind="linear"),
    TrainerSpec("LogarithmicRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("logarithmic"),
                weight_kind="curvefit", curve="logarithmic", max_rows=3000, relative_cost=3),
    TrainerSpec("LogisticRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("logistic"),
                weight_kind="curvefit", curve="logistic", max_rows=3000, relative_cost=3),
    TrainerSpec("ExponentialRegressionTrainer", "curvefit", lambda seed: CurveFitRegressor("exponential"),
                weight_kind="curvefit", curve="exponential", max_rows=3000, relative_cost=3),
)}


def _hist_gradient_boosting(seed: int) -> HistGradientBoostingRegressor:
    # Absolute-error loss: the conditional median, which the headline MAE rewards and which samples
    # straddling a load change (power and counters read a moment apart) cannot drag.
    return HistGradientBoostingRegressor(loss="absolute_error", max_iter=100, learning_rate=0.1,
                                         max_leaf_nodes=15, early_stopping=False, random_state=seed)


def _monotonic_gradient_boosting(seed: int) -> HistGradientBoostingRegressor:
    # Squared-error loss: the absolute-error loss re-estimates leaf values after the constrained split
    # search, which can break the monotonic constraint (scikit-learn 1.9).
    return HistGradientBoostingRegressor(loss="squared_error", max_iter=100, learning_rate=0.1,
                                         max_leaf_nodes=15, early_stopping=False, random_state=seed)


def _extra_trees(seed: int) -> ExtraTreesRegressor:
    # Leaf count bounded: unbounded trees on a few thousand rows are tens of MB per component on disk
    # for no accuracy gain on nx12 (docs/quality.md).
    return ExtraTreesRegressor(n_estimators=50, max_leaf_nodes=256, n_jobs=1, random_state=seed)


QUALITY_TRAINERS = (
    TrainerSpec("HistGradientBoostingTrainer", "scikit", _hist_gradient_boosting, max_rows=5000, relative_cost=4,
                grid=({"max_leaf_nodes": 15}, {"max_leaf_nodes": 31, "min_samples_leaf": 5})),
    TrainerSpec("MonotonicHistGradientBoostingTrainer", "scikit", _monotonic_gradient_boosting, max_rows=5000,
                relative_cost=2, monotonic=True),
    TrainerSpec("ExtraTreesTrainer", "scikit", _extra_trees, max_rows=5000, relative_cost=3,
                grid=({"max_leaf_nodes": 256}, {"max_leaf_nodes": 64, "min_samples_leaf": 3})),
)
UPSTREAM_TRAINERS = tuple(TRAINERS)
TRAINERS.update({s.name: s for s in QUALITY_TRAINERS})

# The default stays upstream's ten: what Kepler users know, and a bounded run and volume (the extra
# trees of one nx12 pipeline alone take about 200 MB). The quality trainers are asked for by name or `all`.
DEFAULT_TRAINERS = UPSTREAM_TRAINERS


def trainer_names(value: str | None) -> list[str]:
    """Parse a comma list; `default` (or empty) and `upstream` mean upstream's ten, `all` the whole
    catalogue. Short names are accepted."""
    if not value or value in ("default", "upstream"):
        return list(DEFAULT_TRAINERS)
    if value == "all":
        return list(TRAINERS)
    names = []
    for raw in (v.strip() for v in value.split(",") if v.strip()):
        name = raw if raw in TRAINERS else f"{raw}Trainer"
        if name not in TRAINERS:
            raise ConfigError(f"unknown trainer {raw!r} (known: {', '.join(TRAINERS)})")
        names.append(name)
    return names


MIN_TRAIN_ROWS = 5
TUNING_ROWS = 800    # candidates are compared on at most this many training rows (evenly spaced in time)
TUNING_FOLDS = 3
TUNING = ("blocked", "random", "off")


def _evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


def grows_with_load(feature: str) -> bool:
    """Activity features (time, cycles, instructions, misses, interrupts, page-cache hits) can only add
    power; sizes of memory held cannot be said to."""
    return "memory" not in feature


def _with(pipeline: Pipeline, settings: dict) -> Pipeline:
    return pipeline.set_params(**{f"model__{k}": v for k, v in settings.items()})


def cross_validated_mae(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, folds: KFold) -> float:
    """Mean absolute error of `pipeline` over `folds` of (x, y), refitted on each fold's other rows."""
    total, count = 0.0, 0
    for train, test in folds.split(x):
        fitted = clone(pipeline).fit(x[train], y[train])
        total += float(np.abs(fitted.predict(x[test]) - y[test]).sum())
        count += len(test)
    return total / count


class PowerModel(RegressorMixin, BaseEstimator):
    """One trainer fitted per power component: `fit(X, Y)` with Y's columns the components in watts.

    `tuning`: how a trainer with candidate settings (`TrainerSpec.grid`) picks one per component, by
    cross-validation on the training rows it is given (never on anything else): `blocked` compares
    them on contiguous folds in row order (rows are in time order, so each fold is a later or earlier
    window the others did not see), `random` on shuffled folds, `off` takes the first candidate.
    The choice is kept in `tuned_`.
    """

    def __init__(self, trainer: str = "LinearRegressionTrainer", main_features: dict | None = None,
                 random_state: int = 0, tuning: str = "blocked"):
        self.trainer = trainer
        self.main_features = main_features
        self.random_state = random_state
        self.tuning = tuning

    @property
    def spec(self) -> TrainerSpec:
        return TRAINERS[self.trainer]

    def _component_pipeline(self, component: str, features: list[str]) -> Pipeline:
        regressor = self.spec.regressor(self.random_state)
        if isinstance(regressor, CurveFitRegressor):
            main = (self.main_features or {}).get(component, features[0])
            regressor.set_params(feature_index=features.index(main))
        if self.spec.monotonic:
            regressor.set_params(monotonic_cst=[int(grows_with_load(f)) for f in features])
        return Pipeline([("scale", MaxAbsScaler()), ("model", regressor)])

    def _tune(self, pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> dict:
        """The candidate setting with the lowest cross-validated MAE on these (training) rows."""
        grid = self.spec.grid
        if not grid:
            return {}
        if self.tuning not in TUNING:
            raise ConfigError(f"unknown tuning {self.tuning!r} (known: {', '.join(TUNING)})")
        rows = _evenly_spaced(len(x), TUNING_ROWS)
        if self.tuning == "off" or len(grid) == 1 or len(rows) < 10 * TUNING_FOLDS:
            return dict(grid[0])
        shuffle = self.tuning == "random"
        folds = KFold(TUNING_FOLDS, shuffle=shuffle, random_state=self.random_state if shuffle else None)
        scores = [cross_validated_mae(_with(clone(pipeline), candidate), x[rows], y[rows], folds)
                  for candidate in grid]
        return dict(grid[int(np.argmin(scores))])

    def fit(self, X: pd.DataFrame, Y: pd.DataFrame):
        if len(X) < MIN_TRAIN_ROWS:
            raise TrainerSkipped(f"too few rows to train ({len(X)} < {MIN_TRAIN_ROWS})")
        self.features_ = list(X.columns)
        self.components_ = [c.removesuffix("_power") for c in Y.columns]
        rows = _evenly_spaced(len(X), self.spec.max_rows)
        x = X.to_numpy(dtype=float)[rows]
        varying = {c: Y[col].to_numpy(dtype=float)[rows] for c, col in zip(self.components_, Y.columns, strict=False)}
        if all(np.ptp(y) == 0 for y in varying.values()):
            raise TrainerSkipped("the measured power is constant: nothing to learn")
        self.models_: dict[str, Pipeline] = {}
        self.offsets_: dict[str, float] = {c: 0.0 for c in self.components_}
        self.tuned_: dict[str, dict] = {}
        # One thread per fit: the pipeline runs fits in parallel processes, and OpenMP fitters
        # (histogram gradient boosting) slow down many times over when their threads oversubscribe.
        with threadpool_limits(limits=1):
            for component, y in varying.items():
                if np.ptp(y) == 0:
                    model = Pipeline([("scale", MaxAbsScaler()), ("model", DummyRegressor(strategy="mean"))])
                else:
                    model = self._component_pipeline(component, self.features_)
                    self.tuned_[component] = self._tune(model, x, y)
                    _with(model, self.tuned_[component])
                self.models_[component] = model.fit(x, y)
        return self

    def predict_components(self, X: pd.DataFrame) -> pd.DataFrame:
        x = X[self.features_].to_numpy(dtype=float)
        return pd.DataFrame({f"{c}_power": np.clip(m.predict(x) - self.offsets_[c], 0.0, None)
                             for c, m in self.models_.items()}, index=X.index)

    def shifted(self, offsets: dict[str, float]) -> PowerModel:
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
