"""The output formats: a registry of renderers (one file each), LaTeX and HTML typesetting, and
the self-contained HTML page with captioned plots."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from cdlbench import report
from cdlbench.cli import cli
from cdlbench.report import FORMATS, FormatSpec
from cdlbench.report.formats.html import HtmlMarkup, caption
from cdlbench.report.formats.latex import LatexMarkup

from .synthetic import PAPER


def test_builtin_formats_are_registered_one_file_each():
    from pathlib import Path

    import cdlbench.report.formats as formats

    assert report.format_names() == ["csv", "html", "json", "latex", "markdown"]
    files = sorted(p.stem for p in Path(formats.__file__).parent.glob("*.py") if p.stem not in ("__init__", "registry"))
    assert files == report.format_names()
    assert report.format_spec("html").embeds_plots and not report.format_spec("markdown").embeds_plots


def test_a_new_format_is_one_registration(run_dir):
    @FORMATS.register("test-tsv", spec=FormatSpec(suffix=".tsv"))
    def tsv(doc) -> str:
        return doc.long_frame()[["loss", "sampler", "metric", "mean"]].to_csv(sep="\t", index=False)

    try:
        assert "test-tsv" in report.format_names()
        text = report.render([run_dir], "test-tsv")
        lines = text.splitlines()
        assert lines[0] == "loss\tsampler\tmetric\tmean"
        cdl = next(line.split("\t") for line in lines if line.startswith("cdl\tpicard\tmmd\t"))
        assert float(cdl[3]) == pytest.approx(0.0012)
        # a renderer may use the tables, escaped by its own markup
        @FORMATS.register("test-titles")
        def titles(doc) -> str:
            return "\n".join(b.title for b in doc.blocks(LatexMarkup()))

        assert report.render([run_dir], "test-titles") == "dino $\\cdot$ picard\ndino $\\cdot$ ddpm"
    finally:
        FORMATS.unregister("test-tsv")
        FORMATS.unregister("test-titles")
    assert "test-tsv" not in report.format_names()


def test_unknown_format_names_the_closest(run_dir):
    with pytest.raises(ValueError, match="unknown format 'mardown'; did you mean 'markdown'"):
        report.render([run_dir], "mardown")


def test_latex_typesets_headers_and_symbols(run_dir):
    tex = report.render([run_dir], "latex")
    assert r"\textbf{" in tex and r"$\pm$" in tex and "\\begin{tabular}" in tex
    head = next(line for line in tex.splitlines() if line.lstrip().startswith("loss"))
    assert "MMD$^2$" in head and r"iteration MMD$^2$ $<$ thr (pass)" in head
    assert r"\^{}" not in tex and "MMD^2" not in tex
    assert "% dino $\\cdot$ picard" in tex
    m = LatexMarkup()
    assert m.escape("a_b 50% & #1 {x} $ ~ 10^{12}") == r"a\_b 50\% \& \#1 \{x\} \$ \textasciitilde{} 10$^{12}$"
    assert m.escape("x ^ y") == r"x \^{} y"                       # a lone caret stays a caret


def test_html_shows_superscripts(run_dir):
    page = report.render_frame(report.load([run_dir]), "html")
    assert re.search(r"<th>MMD<sup>2</sup>\s*</th>", page) and re.search(r"<th>iteration MMD<sup>2</sup> &lt; thr", page)
    assert "MMD^2" not in page and "MMD&lt;sup" not in page
    assert HtmlMarkup().escape("a<b & MMD^2") == "a&lt;b &amp; MMD<sup>2</sup>"


def test_csv_long_table(run_dir):
    csv = report.render([run_dir], "csv")
    assert csv.splitlines()[0].startswith("dataset,model,loss,sampler,metric,mean,std,n")
    assert "train_seconds" in csv                          # hidden from the tables, kept in csv


def test_cli_html_report_is_self_contained(run_dir, tmp_path):
    out = tmp_path / "plots"
    res = CliRunner().invoke(cli, ["report", str(run_dir), "--format", "html", "--plots", str(out),
                                   "--baseline", str(PAPER)])
    assert res.exit_code == 0, res.output
    page = res.output
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert page.count("<table") == 4 and "<b>" in page and "reference code" in page    # 2 tables + 2 comparisons
    assert 'src="http' not in page and "<link" not in page
    assert len(list(out.glob("*.png"))) == 3
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 3 and not any(".png" in c or "figure4_" in c for c in captions)
    assert any(c.startswith("<b>Figure 4 · dino: MMD<sup>2</sup> per iteration of picard</b>") for c in captions)
    assert any("Figure 3 · dino: samples of ddpm beside the training data" in c for c in captions)
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert all(a.startswith("Figure ") for a in alts)


def test_html_draws_its_plots_without_a_plots_folder(run_dir):
    """html declares that it embeds plots (FormatSpec.embeds_plots): drawn in a temporary folder."""
    page = report.render([run_dir], "html")
    assert page.count("data:image/png;base64,") == 3
    assert "data:image" not in report.render([run_dir], "markdown")


def test_caption_of_a_png_without_text_is_its_name_in_words(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.savefig(tmp_path / "my_plot.png")
    fig.savefig(tmp_path / "titled.png", metadata={"Title": "A title ± 2", "Description": "what it shows"})
    plt.close(fig)
    assert caption(tmp_path / "my_plot.png") == ("my plot", "")
    assert caption(tmp_path / "titled.png") == ("A title ± 2", "what it shows")
