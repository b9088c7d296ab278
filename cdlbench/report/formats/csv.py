"""CSV: the tidy summary, one row per (dataset, model, loss, sampler, metric), with reference columns."""
from __future__ import annotations

from .registry import FORMATS, FormatSpec


@FORMATS.register("csv", spec=FormatSpec(suffix=".csv"))
def csv(doc) -> str:
    return doc.long_frame().to_csv(index=False)
