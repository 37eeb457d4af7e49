"""Idle-power isolation: transformers that turn node power (AbsPower) into dynamic power (DynPower).

Each isolator learns what idle (or background) power is in `fit` and subtracts it in `transform`, on
the power columns of a feature table; the features pass through. The learned idle watts are saved in
the pipeline so that `estimate` can compare a DynPower model with measured dynamic power.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from kepler_contract.vocabulary import ISOLATORS

from .errors import ConfigError, InputError


def _power_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.endswith("_power")]


class _Isolator(TransformerMixin, BaseEstimator):
    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        table = table.copy()
        for column, idle in self.idle_.items():
            if column in table:
                table[column] = np.clip(table[column] - idle, 0.0, None)
        return table


class NoneIsolator(_Isolator):
    """Keeps node power as it is: DynPower models then learn the same target as AbsPower."""

    def fit(self, table: pd.DataFrame, y=None):
        self.idle_ = {c: 0.0 for c in _power_columns(table)}
        return self


class MinIdleIsolator(_Isolator):
    """Idle power is the lowest power seen in the training window, per component (upstream default)."""

    def fit(self, table: pd.DataFrame, y=None):
        self.idle_ = {c: float(table[c].min()) for c in _power_columns(table)}
        return self


class ProfileIsolator(_Isolator):
    """Idle power comes from a profile of the idle machine: the midpoint of its min and max power."""

    def __init__(self, profile: dict | None = None):
        self.profile = profile

    def fit(self, table: pd.DataFrame, y=None):
        if not self.profile:
            raise ConfigError("isolator 'profile' needs --profile (a query output of the idle machine)")
        self.idle_ = {}
        for column in _power_columns(table):
            entry = self.profile.get(column.removesuffix("_power"))
            if entry is None:
                raise InputError(f"the idle profile has no {column.removesuffix('_power')!r} power")
            self.idle_[column] = (entry["min_watt"] + entry["max_watt"]) / 2.0
        return self


class TrainerIsolator(_Isolator):
    """Idle power is what a linear model of power over usage predicts at zero usage (its intercept).

    Upstream's `trainer` isolator predicts background containers' power with the models of another
    pipeline; this one needs no second pipeline: it fits power ~ usage on the window itself.
    """

    def __init__(self, features: list[str] | None = None):
        self.features = features

    def fit(self, table: pd.DataFrame, y=None):
        from sklearn.linear_model import LinearRegression

        features = self.features or [c for c in table.columns if c not in ("timestamp", "instance")
                                     and not c.endswith("_power")]
        x = table[features].to_numpy(float)
        scale = np.abs(x).max(axis=0)
        scale[scale == 0] = 1.0
        self.idle_ = {}
        for column in _power_columns(table):
            y_ = table[column].to_numpy(float)
            fit = LinearRegression(positive=True).fit(x / scale, y_)
            self.idle_[column] = float(np.clip(fit.intercept_, 0.0, y_.min()))
        return self


def make_isolator(name: str, profile: dict | None = None) -> _Isolator:
    if name == "none":
        return NoneIsolator()
    if name == "min":
        return MinIdleIsolator()
    if name == "profile":
        return ProfileIsolator(profile)
    if name == "trainer":
        return TrainerIsolator()
    raise ConfigError(f"unknown isolator {name!r} (known: {', '.join(ISOLATORS)})")


def idle_profile(power: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A profile from the power of an idle machine: `{component: {min_watt, max_watt, #unit}}`."""
    return {c.removesuffix("_power"): {"min_watt": float(power[c].min()), "max_watt": float(power[c].max()),
                                       "#unit": 1}
            for c in _power_columns(power)}
