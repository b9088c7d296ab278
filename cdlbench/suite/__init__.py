"""Suites: YAML loading, schema, matrix expansion, compatibility checks."""
from .schema import Cell, Component, Suite, load_suite, parse_suite
from .yaml_loading import SuiteError, load_yaml

__all__ = ["Cell", "Component", "Suite", "SuiteError", "load_suite", "load_yaml", "parse_suite"]
