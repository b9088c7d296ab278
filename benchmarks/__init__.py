"""asv benchmarks of cdlbench (run with `asv run`; see README, section Performance)."""
