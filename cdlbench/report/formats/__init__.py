"""Output formats of `cdlbench report`: one file per format, each registering its renderer in
`registry.FORMATS` (see registry.py for the renderer protocol)."""
from .registry import FORMATS, FormatSpec, format_names, format_spec, renderer
from . import csv, html, json, latex, markdown  # noqa: E402,F401  (each registers its format)

__all__ = ["FORMATS", "FormatSpec", "format_names", "format_spec", "renderer"]
