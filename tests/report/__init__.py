"""Tests of cdlbench.report (mirrors the package): tables, baselines, formats, plots, declarations."""
