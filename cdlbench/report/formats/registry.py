"""The registry of output formats (cdlbench/report/formats/__init__.py imports every format file).

A renderer is a function `render(doc: Document) -> str` (cdlbench/report/document.py): it lays out
`doc.blocks(markup)` (the tables, escaped by the format's own `Markup`) or `doc.long_frame()`.
A new format is one file here (imported below) or in a plugin (entry-point group `cdlbench.plugins`):

    @FORMATS.register("tsv", spec=FormatSpec(suffix=".tsv"))
    def tsv(doc) -> str:
        return doc.long_frame().to_csv(sep="\\t", index=False)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...registry import Registry


@dataclass(frozen=True)
class FormatSpec:
    """What a format is: `embeds_plots` (it draws the plots into its output, so the report draws
    them even without --plots, in a temporary folder); `suffix` of its files."""

    embeds_plots: bool = False
    suffix: str = ""


FORMATS = Registry("format")


def _entry(name: str):
    if name not in FORMATS:
        raise ValueError(FORMATS.unknown_message(name))      # the CLI turns ValueError into a usage error
    return FORMATS.entry(name)


def renderer(name: str) -> Callable:
    """The renderer of format `name`; unknown names: ValueError naming the closest and all formats."""
    return _entry(name).obj


def format_spec(name: str) -> FormatSpec:
    return _entry(name).spec or FormatSpec()


def format_names() -> list[str]:
    return FORMATS.names()
