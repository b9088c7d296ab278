"""GitHub markdown: '## title', one '### section' per table, bold as **text**."""
from __future__ import annotations

import re

from ..markup import Markup
from .registry import FORMATS, FormatSpec

# What markdown would read as structure in a label: a backslash, '|' (a table cell's end), '$'
# (GitHub math), '*' and '`' (emphasis, code), '_' not inside a word, a link's '](' , a tag or
# autolink '<x', '>' and an entity '&x;'. Line breaks never reach here (Markup.escape).
SPECIAL = re.compile(r"[\\|$*`~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|\]\(|<(?=[A-Za-z/!?])|>|&(?=#?\w+;)")
REPLACE = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "](": "]\\("}


class MarkdownMarkup(Markup):
    tablefmt = "github"

    def escape_plain(self, text: str) -> str:
        return SPECIAL.sub(lambda m: REPLACE.get(m.group(0), "\\" + m.group(0)), text)

    def superscript(self, text: str) -> str:       # GitHub markdown has no superscript: MMD^2
        return "^" + text

    def bold(self, text: str) -> str:
        return f"**{text}**"


@FORMATS.register("markdown", spec=FormatSpec(suffix=".md"))
def markdown(doc) -> str:
    m = MarkdownMarkup()
    parts = []
    for b in doc.blocks(m):
        text = f"### {b.title}\n\n{b.table}\n"
        if b.comparison is not None:
            text += (f"\nCompared with the reference numbers:\n\n{b.comparison}\n\n"
                     + "".join(f"- {n}\n" for n in b.notes))
        elif b.notes:
            text += "\n" + "".join(f"- {n}\n" for n in b.notes)
        parts.append(text)
    text = f"## {m.escape(doc.title)}\n\n" + "\n".join(parts)
    if doc.images:
        where = f" in {m.escape(doc.plots_dir)}" if doc.plots_dir else ""
        text += f"\nPlots{where}: " + ", ".join(p.name for p in doc.images) + "\n"
    return text
