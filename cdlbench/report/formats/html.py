"""One self-contained HTML page: the tables, then the plots embedded as data URIs, each captioned
with the title (and description) its figure code wrote into the PNG; MMD^2 shows as MMD<sup>2</sup>."""
from __future__ import annotations

import base64
import html as _html
import struct
import zlib
from pathlib import Path

from ..markup import Markup
from .registry import FORMATS, FormatSpec

STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
         "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:13px}")


class HtmlMarkup(Markup):
    tablefmt = "unsafehtml"

    def escape_plain(self, text: str) -> str:
        return _html.escape(text)

    def superscript(self, text: str) -> str:
        return f"<sup>{text}</sup>"

    def bold(self, text: str) -> str:
        return f"<b>{text}</b>"


def png_text(path: Path) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG: keyword -> text (e.g. Title, Description)."""
    data, out, pos = Path(path).read_bytes(), {}, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        try:
            if kind == b"tEXt":
                key, _, text = body.partition(b"\0")
                out[key.decode("latin-1")] = text.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                out[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
            elif kind == b"IEND":
                break
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue
    return out


def caption(path: Path) -> tuple[str, str]:
    """(title, description) of a plot: from the PNG's text chunks, else the file name in words."""
    text = png_text(path)
    title = text.get("Title") or Path(path).stem.replace("_", " ")
    return title, text.get("Description", "")


def figure_html(path: Path, markup: Markup) -> str:
    title, description = caption(path)
    data = base64.b64encode(Path(path).read_bytes()).decode()
    text = f"<b>{markup.escape(title)}</b>" + (f". {markup.escape(description)}" if description else "")
    return (f'<figure><img alt="{_html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{text}</figcaption></figure>\n")


@FORMATS.register("html", spec=FormatSpec(embeds_plots=True, suffix=".html"))
def html(doc) -> str:
    m = HtmlMarkup()
    parts = []
    for b in doc.blocks(m):
        text = f"<h3>{b.title}</h3>\n{b.table}\n"
        if b.comparison is not None:
            text += (f"<p>Compared with the reference numbers:</p>\n{b.comparison}\n"
                     + "<ul>" + "".join(f"<li>{n}</li>" for n in b.notes) + "</ul>\n")
        elif b.notes:
            text += "<ul>" + "".join(f"<li>{n}</li>" for n in b.notes) + "</ul>\n"
        parts.append(text + "\n")
    title = m.escape(doc.title)
    figs = "".join(figure_html(p, m) for p in doc.images)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{_html.escape(doc.title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h2>{title}</h2>\n" + "".join(parts)
            + (f"<h3>Plots</h3>\n{figs}" if doc.images else "") + "</body></html>\n")
