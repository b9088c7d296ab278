"""The metric protocol the runner calls, with its defaults (DESIGN.md: `metric(samples, reference,
**context) -> value`). What a metric *is* (unit, direction, needs, context) is declared in its
MetricSpec; this base class gives every metric the same runner-facing methods."""
from __future__ import annotations

from types import MappingProxyType


class Metric:
    #: samples it scores (None: every sample of the cell)
    n_samples: int | None = None
    #: threshold of a per-iteration metric (iterations to threshold); None: none
    threshold: float | None = None
    #: `<=` instead of `<` at the threshold
    threshold_inclusive: bool = False
    #: where the points it compares with come from: "train" (the training set) or "fresh"
    #: (new draws from the dataset's law)
    reference_source: str = "train"
    #: points of the final value's reference set when it differs from the per-iteration one (None: the same)
    final_reference_count: int | None = None
    #: arrays for plots made by the last call (an instance attribute where a metric has any)
    artifacts = MappingProxyType({})

    def reference_count(self, cell_samples: int) -> int | None:
        """Reference points to compare with (None: the whole training split)."""
        return self.n_samples if self.n_samples is not None else cell_samples

    @staticmethod
    def preflight(params: dict) -> None:
        """Checked before any training: optional packages and weight files present."""
        return None
