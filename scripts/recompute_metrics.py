"""Add metrics to a finished run from its saved samples, without sampling again and without
rewriting records (cdlbench/run/recompute.py: each cell is committed again, its rows unchanged
plus the new ones; cells whose samples do not suffice are listed as needing a rerun).

    python scripts/recompute_metrics.py RUN_DIR --metric '{name: energy, n_samples: 1000}' [--metric ...] [--dry-run]

Each --metric is a suite metric entry (YAML or JSON mapping), validated like one (exit 2).
"""
from __future__ import annotations

import sys

from cdlbench.run.recompute import main

if __name__ == "__main__":
    sys.exit(main())
