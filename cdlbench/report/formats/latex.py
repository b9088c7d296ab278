"""LaTeX tabulars (booktabs-free `tabular`), titles as % comments; MMD^2 typesets as MMD$^2$."""
from __future__ import annotations

import re

from ..markup import Markup
from .registry import FORMATS, FormatSpec

# one pass over the text, so that a replacement is never escaped again
SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "|": r"\textbar{}", "<": "$<$", ">": "$>$", "±": r"$\pm$",
           "·": r"$\cdot$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$"}
PATTERN = re.compile("|".join(re.escape(k) for k in SPECIAL))


class LatexMarkup(Markup):
    tablefmt = "latex_raw"

    def escape_plain(self, text: str) -> str:
        return PATTERN.sub(lambda m: SPECIAL[m.group(0)], text)

    def superscript(self, text: str) -> str:
        return f"$^{text}$" if len(text) == 1 else f"$^{{{text}}}$"

    def bold(self, text: str) -> str:
        return rf"\textbf{{{text}}}"


@FORMATS.register("latex", spec=FormatSpec(suffix=".tex"))
def latex(doc) -> str:
    m = LatexMarkup()
    parts = []
    for b in doc.blocks(m):
        text = f"% {b.title}\n{b.table}\n"
        if b.comparison is not None:
            text += (f"% {b.title}: compared with the reference numbers\n{b.comparison}\n"
                     + "".join(f"% {n}\n" for n in b.notes))
        elif b.notes:
            text += "".join(f"% {n}\n" for n in b.notes)
        parts.append(text)
    return f"% {m.escape(doc.title)}\n" + "\n".join(parts)
