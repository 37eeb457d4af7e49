"""Shared pytest configuration: the real-component fixtures live in tests/support."""

pytest_plugins = ["tests.support.prometheus", "tests.support.apiserver"]
