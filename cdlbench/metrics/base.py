"""The metric protocol the runner calls, with its defaults (DESIGN.md: `metric(samples, reference,
**context) -> value`). What a metric *is* (unit, direction, needs, context) is declared in its
MetricSpec; this base class gives every metric the same runner-facing methods."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class MetricValue:
    """One of several values a metric returns as a list: recorded as `<name>` (part None) or
    `<name>_<part>`, with `params` as its own p_metric_<key> columns (replacing the metric's own
    column of that key), so values at different settings (e.g. two MMD bandwidths) are records of
    different identities and never pool. unit / higher_is_better None: the MetricSpec's."""

    value: float
    part: str | None = None
    params: dict = field(default_factory=dict)
    unit: str | None = None
    higher_is_better: bool | None = None


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

    #: p_metric_<key> columns of the per-iteration curve and its threshold record that replace the
    #: metric's own (e.g. the one bandwidth a multi-bandwidth MMD traces); empty: none
    curve_params = MappingProxyType({})

    def per_iteration(self, state, reference) -> float:
        """The scalar traced after every pass of a parallel sampler (default: the metric itself)."""
        return self(state, reference)

    @staticmethod
    def preflight(params: dict) -> None:
        """Checked before any training: optional packages and weight files present."""
        return None
