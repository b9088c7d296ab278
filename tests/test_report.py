"""Reports from fixed synthetic records: golden markdown, statistics, best marks, direction-aware
comparisons with baselines, and plots (non-empty PNGs of the size the figure code promises)."""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cdlbench import report
from cdlbench.report.baselines import Baseline, compare_metric, crossed_settings, load_baselines, verdict
from cdlbench.cli import cli
from cdlbench.run.rundir import append_jsonl

GOLDEN = Path(__file__).parent / "golden" / "report_markdown.md"
PAPER = Path(__file__).parents[1] / "baselines" / "paper.yaml"

# (loss, sampler) -> per-seed values of (mmd, iterations, wall_clock, iters_to_threshold or None)
VALUES = {
    ("ddpm", "picard"): [(0.0031, 37, 1.9, None), (0.0035, 38, 2.1, None), (0.0027, 36, 2.0, None)],
    ("cdl", "picard"): [(0.0012, 36, 1.4, 27), (0.0014, 35, 1.3, None), (0.0010, 36, 1.5, 25)],
    ("ddpm", "ddpm"): [(0.0005, 1000, 9.0, None), (0.0004, 1000, 9.5, None), (0.0006, 1000, 8.5, None)],
    ("cdl", "ddpm"): [(0.0002, 1000, 9.1, None), (0.0003, 1000, 9.2, None), (0.0002, 1000, 9.0, None)],
}


def synthetic_rows() -> list[dict]:
    rows = []
    for (loss, sampler), seeds in VALUES.items():
        for seed, (mmd, iters, wall, hit) in enumerate(seeds):
            cell = f"dino/mlp/{loss}/{sampler}/seed={seed}"
            ident = {"suite": "synthetic", "suite_version": 1, "cell": cell, "dataset": "dino", "model": "mlp",
                     "loss": loss, "sampler": sampler, "seed": seed, "p_sampler_steps": 1000,
                     "p_sampler_tolerance": 0.1, "p_sampler_drift": "ddpm", "p_train_steps": 20000,
                     "env_device": "cpu (x86_64, 2 threads)"}
            metric = {"p_metric_n_samples": 2000, "p_metric_bandwidth": 0.03, "p_metric_threshold": 0.002}
            cell_rows = [
                {**ident, "metric": "iterations", "value": iters, "unit": "passes", "higher_is_better": False},
                {**ident, "metric": "wall_clock", "value": wall, "unit": "s", "higher_is_better": False},
                {**ident, "metric": "train_seconds", "value": 10.0, "unit": "s", "higher_is_better": False},
                {**ident, **metric, "metric": "mmd", "value": mmd, "unit": "", "higher_is_better": False},
            ]
            if sampler == "picard":
                r = {**ident, **metric, "metric": "mmd_iters_to_threshold", "value": hit, "unit": "passes",
                     "higher_is_better": False}
                if hit is None:
                    r["censored"] = True
                cell_rows.append(r)
            cell_rows.append({**ident, "metric": "_complete", "value": len(cell_rows), "unit": "records",
                              "higher_is_better": None})
            rows += cell_rows
    return rows


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    append_jsonl(d / "records.jsonl", synthetic_rows())
    curves = []
    for (loss, sampler), seeds in VALUES.items():
        if sampler != "picard":
            continue
        for seed in range(len(seeds)):
            for x in range(1, 11):
                curves.append({"suite": "synthetic", "cell": f"dino/mlp/{loss}/{sampler}/seed={seed}",
                               "dataset": "dino", "model": "mlp", "loss": loss, "sampler": sampler, "seed": seed,
                               "metric": "mmd", "x": x, "value": 0.05 / x + 0.001 * seed,
                               "p_metric_threshold": 0.002})
    append_jsonl(d / "curves.jsonl", curves)
    g = np.random.default_rng(0)
    (d / "samples").mkdir()
    for (loss, sampler), seeds in VALUES.items():
        for seed in range(len(seeds)):
            cell = f"dino/mlp/{loss}/{sampler}/seed={seed}"
            np.savez(d / "samples" / f"{loss}_{sampler}_{seed}.npz", cell=np.array(cell),
                     samples=g.normal(size=(300, 2)).astype(np.float32),
                     data=g.normal(size=(300, 2)).astype(np.float32))
    return d


def test_markdown_matches_golden(run_dir):
    text = report.render([run_dir], "markdown")
    if os.environ.get("CDLBENCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_mean_std_n(run_dir):
    s = report.summarise(report.load([run_dir]))
    row = s[(s.loss == "cdl") & (s.sampler == "picard") & (s.metric == "mmd")].iloc[0]
    vals = [v[0] for v in VALUES[("cdl", "picard")]]
    assert row["mean"] == pytest.approx(np.mean(vals))
    assert row["std"] == pytest.approx(np.std(vals, ddof=1))
    assert row["n"] == 3 and row["censored"] == 0
    hit = s[(s.loss == "cdl") & (s.sampler == "picard") & (s.metric == "mmd_iters_to_threshold")].iloc[0]
    assert (hit["n"], hit["n_runs"], hit["censored"]) == (2, 3, 1)
    assert hit["mean"] == pytest.approx(26.0)
    never = s[(s.loss == "ddpm") & (s.sampler == "picard") & (s.metric == "mmd_iters_to_threshold")].iloc[0]
    assert never["n"] == 0 and math.isnan(never["mean"])
    assert report.fmt_cell(never) == "never (0/3)"
    assert report.fmt_cell(hit).endswith("(2/3 reached)")


def test_same_run_twice_counts_once(run_dir):
    s = report.summarise(report.load([run_dir, run_dir]))
    assert set(s["n_runs"]) == {3}


def test_best_marks_follow_direction(run_dir):
    secs = report.sections(report.summarise(report.load([run_dir])))
    picard = next(sec for sec in secs if sec.sampler == "picard")
    losses = [r.labels["loss"] for r in picard.rows]
    assert {losses[i] for i in report.best_rows(picard, "mmd")} == {"cdl"}              # lower is better
    assert {losses[i] for i in report.best_rows(picard, "mmd_iters_to_threshold")} == {"cdl"}   # fewer censored
    for r in picard.rows:                                                              # flip the direction
        r.stats["mmd"] = {**r.stats["mmd"], "higher_is_better": True}
    assert {losses[i] for i in report.best_rows(picard, "mmd")} == {"ddpm"}
    seq = next(sec for sec in secs if sec.sampler == "ddpm")
    assert report.best_rows(seq, "iterations") == set()                                # all tie: no mark


def test_verdict_is_direction_aware():
    assert verdict(1.0, 2.0, higher_is_better=False) == (-1.0, "better")
    assert verdict(1.0, 2.0, higher_is_better=True) == (-1.0, "worse")
    assert verdict(3.0, 2.0, higher_is_better=True) == (1.0, "better")
    assert verdict(None, 27.0, False)[1] == "worse (ours never reached)"
    assert verdict(30.0, None, False)[1] == "better (reference never reached)"
    assert verdict(None, None, False)[1] == "neither reached"


def test_compare_metric_matches_and_lists_crossed_settings():
    b = Baseline("x", "exp", "reference_code", "src", {"dataset": "dino", "loss": "cdl", "sampler": "picard"},
                 {"p_sampler_steps": 1000, "p_metric_n_samples": 2000}, {"mmd": 0.00123, "iterations": 36})
    row = {"dataset": "dino[n_train=5000]", "loss": "cdl", "sampler": "picard[steps=100]",
           "p_sampler_steps": 100, "p_metric_n_samples": 2000.0}
    stats = {"mean": 0.002, "n": 3, "n_runs": 3, "higher_is_better": False}
    c = compare_metric([b], row, "mmd", stats)
    assert c.reference == 0.00123 and c.delta == pytest.approx(0.002 - 0.00123) and c.verdict == "worse"
    assert c.crossed == ["sampler_steps: ours 100, reference 1000"]
    assert compare_metric([b], {**row, "loss": "ddpm"}, "mmd", stats) is None
    assert crossed_settings(b, {**row, "p_sampler_steps": 1000}) == []


def test_paper_baselines_hold_every_spec_number():
    entries, sources = load_baselines(PAPER)
    assert {e.provenance for e in entries} == {"paper", "reference_code", "third_party"}
    numbers = sorted(v for e in entries for v in e.values.values() if v is not None)
    for expected in (36, 13983, 1.368, 0.00123, 27, 37, 14397, 1.871, 0.00311, 21, 4565, 0.0075, 22, 6459,
                     0.0090, 2.0e-4, 4.8e-4, 7.35, 7.19, 1.99, 1.81, 2.00, 2.29, 1.79, 1.97, 1.96, 2.39):
        assert any(math.isclose(expected, n, rel_tol=1e-9) for n in numbers), expected
    fid = [e for e in entries if "fid" in e.values]
    assert all(e.provenance in ("third_party", "paper") for e in fid)
    ddpm = next(e for e in entries if e.id == "dino-picard-ddpm1000-ddpm")
    assert "mmd_iters_to_threshold" in ddpm.censored


def test_report_with_paper_baseline(run_dir):
    text = report.render([run_dir], "markdown", baseline=PAPER)
    assert "Compared with the reference numbers" in text
    assert "0.00123 (reference code)" in text
    assert "train_steps: ours 20000, reference 782000" in text
    assert "env_accelerator: ours cpu, reference gpu" in text       # wall-clock crosses devices
    table = json.loads(report.render([run_dir], "json", baseline=PAPER))
    cdl_mmd = next(r for r in table if r["loss"] == "cdl" and r["sampler"] == "picard" and r["metric"] == "mmd")
    assert cdl_mmd["reference"] == 0.00123 and cdl_mmd["verdict"] == "better"      # lower MMD
    assert cdl_mmd["delta"] == pytest.approx(0.0012 - 0.00123)


def test_latex_and_csv(run_dir):
    tex = report.render([run_dir], "latex")
    assert r"\textbf{" in tex and r"$\pm$" in tex and "\\begin{tabular}" in tex
    csv = report.render([run_dir], "csv")
    assert csv.splitlines()[0].startswith("dataset,model,loss,sampler,metric,mean,std,n")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_plots_are_written_with_expected_size(run_dir, tmp_path):
    from cdlbench.report import plots

    out = tmp_path / "plots"
    written = plots.write_all([run_dir], report.load([run_dir]), report.load_curves([run_dir]), out)
    names = sorted(p.name for p in written)
    assert names == ["figure3_samples_dino_ddpm.png", "figure3_samples_dino_picard.png",
                     "figure4_mmd_vs_iteration_dino_picard.png"]
    w, h = plots.PANEL[0] * plots.DPI, plots.PANEL[1] * plots.DPI
    assert png_size(out / "figure3_samples_dino_picard.png") == (round(3 * w), round(h))   # data + 2 losses
    assert png_size(out / "figure4_mmd_vs_iteration_dino_picard.png") == (round(w), round(h))
    assert all(p.stat().st_size > 5000 for p in written)


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


def test_cli_bad_baseline_is_usage_error(run_dir, tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("entries:\n  - {provenance: blog, source: x, values: {mmd: 1}}\n")
    res = CliRunner().invoke(cli, ["report", str(run_dir), "--baseline", str(bad)])
    assert res.exit_code == 2 and "provenance" in res.output


def test_sweep_figures_need_a_sweep(tmp_path):
    """Figure 5 needs >= 2 NFE values per line, Figure 6 >= 2 S_churn values; one line per setting."""
    import pandas as pd

    from cdlbench.report import plots

    rows = []
    for loss in ("edm", "cdl"):
        for steps in (5, 18):
            for churn in (0, 30):
                sampler = f"heun[steps={steps},S_churn={churn}]"
                common = {"cell": f"d/m/{loss}/{sampler}/seed=0", "dataset": "d", "model": "m", "loss": loss,
                          "sampler": sampler, "seed": 0, "p_sampler_steps": steps, "p_sampler_S_churn": churn}
                rows += [{**common, "metric": "nfe", "value": 2 * steps - 1},
                         {**common, "metric": "mmd", "value": 0.1 / steps + churn * 1e-3}]
    df = pd.DataFrame(rows)
    five, six = plots.figure5_quality_vs_nfe(df, tmp_path), plots.figure6_quality_vs_churn(df, tmp_path)
    assert [p.name for p in five] == ["figure5_quality_vs_nfe_d.png"]
    assert [p.name for p in six] == ["figure6_quality_vs_schurn_d.png"]
    assert png_size(five[0]) == (round(plots.PANEL[0] * plots.DPI), round(plots.PANEL[1] * plots.DPI))
    one = df[df["p_sampler_steps"] == 5]
    assert plots.figure5_quality_vs_nfe(one, tmp_path / "x") == []
    assert plots.figure6_quality_vs_churn(df[df["p_sampler_S_churn"] == 0], tmp_path / "x") == []
