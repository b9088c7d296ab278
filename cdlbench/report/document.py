"""`cdlbench report`: records -> a Document (statistics, tables, comparisons, plots) -> one output
format's renderer (formats/). A format only lays the Document out: `doc.blocks(markup)` gives its
tables already escaped for that format, `doc.long_frame()` the tidy table of csv and json."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError
from .baselines import load_baselines
from .claims import claim_notes, claims_frame, evaluate_all, load_claims
from .formats import FORMATS, format_spec, renderer
from .markup import BOLD_RULE, Markup
from .sweeps import sweep_frames
from .tables import Section, comparison_frame, comparisons, footnote_lines, load, load_curves, long_frame, sections, \
    summarise, table_frame


@dataclass
class Block:
    """One table of the report, for one format: its title, the table, and (paper tables with a
    baseline) the comparison table and its footnotes; all text escaped for that format."""

    title: str
    table: str
    comparison: str | None = None
    notes: list = field(default_factory=list)


@dataclass
class Document:
    records: pd.DataFrame
    summary: pd.DataFrame
    sections: list[Section]
    comparisons: list = field(default_factory=list)     # (section, row, Comparison)
    images: list = field(default_factory=list)          # PNG paths
    plots_dir: Path | None = None
    claims: list = field(default_factory=list)          # ClaimResult (cdlbench/report/claims.py)

    @property
    def title(self) -> str:
        suites = ", ".join(sorted(set(self.records["suite"]))) if "suite" in self.records.columns else "results"
        return (f"{suites}: mean ± std over seeds (n = seeds that reached a value); "
                + BOLD_RULE.format(other="row of its column"))

    def blocks(self, markup: Markup) -> list[Block]:
        """The sweep tables, then one paper table per (dataset, sampler), for this markup."""
        out = [Block(title, markup.table(frame)) for title, frame in sweep_frames(self.records, markup)]
        for sec in self.sections:
            mine = [it for it in self.comparisons if it[0] is sec]
            block = Block(markup.escape(sec.title), markup.table(table_frame(sec, markup)))
            if mine:
                block.comparison = markup.table(comparison_frame(mine, markup))
                block.notes = [markup.escape(line) for line in footnote_lines(mine)]
            out.append(block)
        if self.claims:
            out.append(Block(markup.escape(CLAIMS_TITLE), markup.table(claims_frame(self.claims).map(markup.escape)),
                             notes=[markup.escape(n) for n in claim_notes(self.claims)]))
        return out

    def long_frame(self) -> pd.DataFrame:
        """The summary (one row per row and metric), with reference columns where a baseline applies."""
        return long_frame(self.summary, self.comparisons)


CLAIMS_TITLE = ("Claims of the paper: treatment and control paired per seed (same data, x_T and noise); exact "
                "sign-flip test (Gehan pair scores where censored), Holm over the table; t interval beside it")


def document(df: pd.DataFrame, baselines=None, images: list[Path] | None = None,
             plots_dir: str | Path | None = None, claims=None) -> Document:
    summary = summarise(df)
    secs = sections(summary)
    return Document(df, summary, secs, comparisons(secs, baselines) if baselines else [], list(images or []),
                    Path(plots_dir) if plots_dir is not None else None,
                    evaluate_all(claims, df) if claims else [])


def render_frame(df: pd.DataFrame, fmt: str = "markdown", baselines=None, images: list[Path] | None = None,
                 plots_dir: str | Path | None = None) -> str:
    """The report of a records DataFrame (what `render` does after loading)."""
    draw = renderer(fmt)
    return draw(document(df, baselines, images, plots_dir))


def render(run_dirs: list[str | Path], fmt: str = "markdown", baseline: str | Path | None = None,
           plots: str | Path | None = None, claims: str | Path | None = None) -> str:
    """`cdlbench report`: tables in fmt; with `baseline`, the reference comparison; with `plots`,
    PNGs written there (a format that embeds plots, html, draws them in a temporary folder without it)."""
    draw = renderer(fmt)
    df = load(run_dirs)
    baselines = load_baselines(baseline)[0] if baseline else None
    claim_list = load_claims(claims) if claims else None
    if plots is None and not format_spec(fmt).embeds_plots:
        return draw(document(df, baselines, claims=claim_list))
    try:
        from . import plots as plotting
    except ImportError as exc:
        raise UserError(f"--plots and --format html need matplotlib ({exc}); pip install 'cdlbench[plots]'") from None

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(plots) if plots is not None else Path(tmp)
        if plots is not None:
            _check_plots_folder(out)
        try:
            images = plotting.write_all(run_dirs, df, load_curves(run_dirs), out)
        except OSError as exc:      # a figure that cannot be written there (not one that cannot be read)
            if plots is None or not _inside(exc.filename, out):
                raise
            raise UserError(f"--plots: cannot write {exc.filename} ({exc.strerror or exc}); "
                            f"give a folder this user can write to") from None
        return draw(document(df, baselines, images, plots, claim_list))


def _check_plots_folder(out: Path) -> None:
    """UserError naming --plots unless the folder exists (or can be made) and takes files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not out.is_dir():
            raise NotADirectoryError(20, "not a directory", str(out))
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"--plots: cannot write PNGs to {out} ({exc.strerror or exc}); "
                        f"give a folder this user can write to") from None


def _inside(filename, folder: Path) -> bool:
    if not filename:
        return False
    try:
        return Path(filename).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError, TypeError):
        return False


__all__ = ["Block", "Document", "FORMATS", "document", "render", "render_frame"]
