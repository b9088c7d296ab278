"""JSON: the tidy summary as a list of objects, with reference columns."""
from __future__ import annotations

import json as _json

from .registry import FORMATS, FormatSpec


@FORMATS.register("json", spec=FormatSpec(suffix=".json"))
def json(doc) -> str:
    return _json.dumps(doc.long_frame().to_dict(orient="records"), indent=2, default=str) + "\n"
