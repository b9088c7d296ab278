"""Paper tables from fixed synthetic records: golden markdown, statistics, the bold rule, and one
number format per column."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from cdlbench import report
from cdlbench.report import Candidate, NumberFormat, clear_best
from cdlbench.report.formats.markdown import MarkdownMarkup

from .synthetic import GOLDEN, VALUES


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
    assert report.fmt_cell(hit) == "26.0 ± 1.4 (2/3 reached)"


def test_same_run_twice_counts_once(run_dir):
    s = report.summarise(report.load([run_dir, run_dir]))
    assert set(s["n_runs"]) == {3}


def test_columns_follow_the_declared_order_and_visibility(run_dir):
    secs = report.sections(report.summarise(report.load([run_dir])))
    picard = next(sec for sec in secs if sec.sampler == "picard")
    # quality figures first, then the runner's, then the threshold; train_seconds is not shown
    assert picard.metrics == ["mmd", "iterations", "wall_clock", "mmd_iters_to_threshold"]
    assert report.metric_order({"fid", "kid", "class_accuracy", "nfe", "mmd", "converged", "zzz", "score_error_id"}) \
        == ["fid", "mmd", "kid", "class_accuracy", "nfe", "score_error_id", "zzz"]
    assert report.header("mmd") == "MMD^2" and report.header("wall_clock") == "wall-clock (s)"
    assert report.header("unknown_metric", "px") == "unknown_metric (px)"


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


def test_bold_only_where_the_difference_exceeds_the_spread(run_dir):
    secs = report.sections(report.summarise(report.load([run_dir])))
    seq = next(sec for sec in secs if sec.sampler == "ddpm")
    # wall-clock: cdl 9.1 ± 0.1 vs ddpm 9.0 ± 0.5: 0.1 apart, spread 0.5: nothing is bold
    assert report.best_rows(seq, "wall_clock") == set()
    # MMD: cdl 2.33e-4 ± 5.8e-5 vs ddpm 5e-4 ± 1e-4: 2.7e-4 apart > 1e-4: cdl bold
    assert report.best_rows(seq, "mmd") == {1}
    frame = report.table_frame(seq, MarkdownMarkup())
    assert frame.loc[1, "MMD^2"].startswith("**") and not frame.loc[0, "wall-clock (s)"].startswith("**")


def test_clear_best_rule_values():
    c = [Candidate("a", 1.0, 0.1, 3), Candidate("b", 1.5, 0.2, 3)]
    assert clear_best(c, higher_is_better=False) == {"a"}           # 0.5 apart > max(0.1, 0.2)
    assert clear_best(c, higher_is_better=True) == {"b"}
    assert clear_best([Candidate("a", 1.0, 0.6, 3), Candidate("b", 1.5, 0.2, 3)], False) == set()   # 0.5 < 0.6
    assert clear_best([Candidate("a", 1.0, 0.5, 3), Candidate("b", 1.5, 0.2, 3)], False) == set()   # equal: not more
    # it must beat every other row, not just the runner-up
    three = [Candidate("a", 1.0, 0.1, 3), Candidate("b", 2.0, 0.1, 3), Candidate("c", 1.05, 0.3, 3)]
    assert clear_best(three, False) == set()
    # one seed has no spread: no mark
    assert clear_best([Candidate("a", 1.0, 0.0, 1), Candidate("b", 5.0, 0.0, 1)], False) == set()
    # fewer censored runs wins outright; a single candidate is never marked
    assert clear_best([Candidate("a", 30.0, 1.0, 3, 0.0), Candidate("b", 20.0, 9.0, 1, 2 / 3)], False) == {"a"}
    assert clear_best([Candidate("a", 1.0, 0.1, 3)], False) == set()


def test_title_says_what_bold_means(run_dir):
    text = report.render([run_dir], "markdown")
    first = text.splitlines()[0]
    assert "bold: the best mean, ahead of every other row of its column by more than the larger of their two " \
           "standard deviations" in first


def test_number_format_per_column_values():
    # 3 significant digits of the smallest mean, one more decimal for the smallest spread (at most 2 more)
    f = NumberFormat.for_values([0.00563, 0.00147], [0.00287, 0.000449])
    assert (f.decimals, f.scientific) == (5, False) and [f(0.00563), f(0.000449)] == ["0.00563", "0.00045"]
    assert NumberFormat.for_values([1000.0, 1000.0], [0.0, 0.0])(1000.0) == "1,000"
    assert NumberFormat.for_values([11.9, 12.4], [0.0318, 0.1]).decimals == 2
    sci = NumberFormat.for_values([-9.02e-05, -4.6e-05])
    assert sci.scientific and sci(-9.02e-05) == "-9.02e-05" and sci(0.0) == "0"
    assert NumberFormat.for_values([1e-3, 20.0]).scientific is True                # spans 1e4
    assert NumberFormat.for_values([])(float("nan")) == "-"


def _cells(frame: pd.DataFrame, column: str) -> list[str]:
    return [v.strip("*") for v in frame[column] if v != "-" and not v.startswith("never")]


def test_one_number_format_per_column():
    """A column whose values would have read '0.00287' and '4.49e-04' shows one format."""
    rows = []
    for loss, vals in (("a", (0.0083, 0.0061, 0.0025)), ("b", (0.0019, 0.0012, 0.0013))):
        for seed, v in enumerate(vals):
            rows.append({"suite": "s", "cell": f"d/m/{loss}/ddpm/seed={seed}", "dataset": "d", "model": "m",
                         "loss": loss, "sampler": "ddpm", "seed": seed, "metric": "mmd", "value": v, "unit": "",
                         "higher_is_better": False})
    df = pd.DataFrame(rows)
    sec = report.sections(report.summarise(df))[0]
    cells = _cells(report.table_frame(sec, MarkdownMarkup()), "MMD^2")
    assert cells == ["0.00563 ± 0.00293 (n=3)", "0.00147 ± 0.00038 (n=3)"]     # not 3.80e-04
    numbers = [tok for c in cells for tok in c.split(" ") if tok[0].isdigit()]
    assert not any("e" in t for t in numbers) and len({len(t.split(".")[1]) for t in numbers}) == 1


def test_parallel_samplers_side_by_side_with_censored_threshold():
    from cdlbench.report.sweeps import parallel_table

    rows = []
    for sampler, rounds in (("picard", 30), ("taa", 18)):
        for loss in ("ddpm", "cdl"):
            for seed in range(3):
                cell = f"dino/mlp/{loss}/{sampler}/seed={seed}"
                hit = None if loss == "ddpm" else 20 + seed
                for metric, v in (("iterations", rounds + seed), ("nfe", 1000 * rounds), ("wall_clock", 1.0),
                                  ("mmd", 0.001 * (seed + 1)), ("mmd_iters_to_threshold", hit)):
                    rows.append({"suite": "s", "cell": cell, "dataset": "dino", "model": "mlp", "loss": loss,
                                 "sampler": sampler, "seed": seed, "metric": metric, "value": v, "unit": "",
                                 "higher_is_better": False})
    t = parallel_table(pd.DataFrame(rows), "mmd")
    assert list(t["sampler"]) == ["picard", "taa"]
    assert t.loc[1, "ddpm: iterations (passes or steps)"].startswith("19.0 ± 1.0 (n=3)")
    thr = [c for c in t.columns if c.startswith("ddpm:") and "thr" in c][0]
    assert t.loc[0, thr] == "never (0/3 reached)"
    assert t.loc[0, thr.replace("ddpm", "cdl")].startswith("21")
    one = pd.DataFrame([r for r in rows if r["sampler"] == "picard"])
    assert parallel_table(one, "mmd") is None            # one parallel sampler: no side-by-side table
