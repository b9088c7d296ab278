"""Tests of cdlbench.run (mirrors the package)."""
