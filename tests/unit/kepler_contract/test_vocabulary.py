"""The vocabulary's names that the operator offers are the ones the trainer implements."""

from __future__ import annotations

import pytest

from kepler_contract import layout, vocabulary


def test_the_trainer_ships_every_feature_set_preset():
    featuresets = pytest.importorskip("kepler_trainer.featuresets")
    assert set(featuresets.PRESETS) == {p.value for p in vocabulary.FeatureSetPreset}


def test_the_trainer_reads_every_energy_source_the_operator_offers():
    features = pytest.importorskip("kepler_trainer.features")
    for source in vocabulary.EnergySource:
        assert features.energy_source(source.value).components == vocabulary.ENERGY_SOURCE_COMPONENTS[source.value]


def test_the_operator_uses_the_vocabulary_enums():
    api = pytest.importorskip("kepler_operator.api")
    assert api.EnergySource is vocabulary.EnergySource and api.FeatureSetPreset is vocabulary.FeatureSetPreset


def test_the_estimations_folder_is_not_a_pipeline_name():
    assert vocabulary.pipeline_name_problem(layout.ESTIMATIONS) == "it is reserved"
