"""The noise floor of a per-iteration quality curve: how far from 0 the metric lands by chance at
the curve's sample counts when samples and reference come from one law.

Permutation null (Gretton et al. 2012, section 5: the two-sample test by resampling): pool the
samples X (m points) and the reference Y (n points); a uniformly random split of the pool into m
and n points is a draw of two sets from one law (the pooled one), and the statistic of the split
is a draw of it under the null "same law". For the unbiased MMD^2 its spread is what differences
must exceed to mean anything: values inside it cannot be told from 0, or from each other, with
these sample counts. The statistic is the registered metric itself, built from the curve's
recorded parameters (a per-iteration metric is called as metric(samples, reference)), so the
null uses exactly the kernel and bandwidth of the curve.
"""
from __future__ import annotations

import json

import pandas as pd
import torch

from ..registry import METRICS


def permutation_null(statistic, samples: torch.Tensor, reference: torch.Tensor, permutations: int,
                     generator: torch.Generator) -> torch.Tensor:
    """[permutations] values of statistic(first, second) over random splits of the pooled samples
    (m) and reference (n) into m and n points, the splits drawn from `generator` (one batched
    statistic per split)."""
    pool = torch.cat([samples, reference])
    m = samples.shape[0]
    values = []
    for _ in range(permutations):
        order = torch.randperm(pool.shape[0], generator=generator)
        values.append(float(statistic(pool[order[:m]], pool[order[m:]])))
    return torch.tensor(values, dtype=torch.float64)


def curve_metric(metric: str, curve: pd.DataFrame):
    """The registered per-iteration metric of a curve, built with the curve's p_metric_* settings
    (one setting per parameter), or None (not a per-iteration metric, several settings mixed, or
    the records' settings no longer build it)."""
    if metric not in METRICS.names() or not METRICS.entry(metric).spec.per_iteration \
            or set(METRICS.entry(metric).spec.context) - {"generator"}:
        return None
    params = {}
    for col in [c for c in curve.columns if str(c).startswith("p_metric_")]:
        values = curve[col].dropna().unique()
        if len(values) > 1:
            return None
        if len(values) == 1:
            value = values[0]
            if isinstance(value, str) and value[:1] in "[{":
                value = json.loads(value)
            params[str(col)[len("p_metric_"):]] = value.item() if hasattr(value, "item") else value
    try:
        built = METRICS.build(metric, params, device=torch.device("cpu"))
    except (TypeError, ValueError):
        return None
    if "generator" not in METRICS.entry(metric).spec.context:
        return built
    # a metric that draws (MMD's permutation p-value) gets a fixed seed: the null band is a figure
    return lambda x, y: built(x, y, generator=torch.Generator().manual_seed(0))
