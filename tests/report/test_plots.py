"""Plots: sizes the figure code promises, Figure 4's mean over seeds that stop at different
iterations, the sequential twins found from the samplers' declarations, and Figure 3's panels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdlbench import report
from cdlbench.report import plots
from cdlbench.report.formats.html import png_text

from .synthetic import png_size


def test_plots_are_written_with_expected_size(run_dir, tmp_path):
    out = tmp_path / "plots"
    written = plots.write_all([run_dir], report.load([run_dir]), report.load_curves([run_dir]), out)
    names = sorted(p.name for p in written)
    assert names == ["figure3_samples_dino_ddpm.png", "figure3_samples_dino_picard.png",
                     "figure4_mmd_vs_iteration_dino_picard.png"]
    w, h = plots.PANEL[0] * plots.DPI, plots.PANEL[1] * plots.DPI
    # data + 2 losses per row, one row per seed
    assert png_size(out / "figure3_samples_dino_picard.png") == (round(3 * w), round(3 * h))
    assert png_size(out / "figure4_mmd_vs_iteration_dino_picard.png") == \
        tuple(round(v * plots.DPI) for v in plots.CURVE_SIZE)
    assert all(png_size(p)[0] >= 1000 for p in written)        # readable: at least 1000 px wide
    assert all(p.stat().st_size > 5000 for p in written)
    assert png_text(out / "figure4_mmd_vs_iteration_dino_picard.png")["Title"] == \
        "Figure 4 · dino: MMD^2 per iteration of picard"
    assert "carried forward" in png_text(out / "figure4_mmd_vs_iteration_dino_picard.png")["Description"]


def _curve(lengths: dict, value=lambda seed, x: 1.0 / x + seed) -> pd.DataFrame:
    rows = [{"cell": f"c{seed}", "seed": seed, "x": x, "value": value(seed, x)}
            for seed, k in lengths.items() for x in range(1, k + 1)]
    return pd.DataFrame(rows)


def test_figure4_carries_converged_runs_forward():
    """Seeds stopping at iterations 2, 3 and 5: from 3 on, the shorter runs keep their last value."""
    t = plots.iteration_stats(_curve({0: 2, 1: 3, 2: 5})).set_index("x")
    assert list(t.index) == [1, 2, 3, 4, 5]
    assert list(t["n"]) == [3, 3, 3, 3, 3] and list(t["carried"]) == [0, 0, 1, 2, 2]
    # at x = 4: seed 0 carries 1/2 + 0, seed 1 carries 1/3 + 1, seed 2 has 1/4 + 2
    vals = [0.5, 1 / 3 + 1, 0.25 + 2]
    assert t.loc[4, "mean"] == pytest.approx(np.mean(vals)) and t.loc[4, "std"] == pytest.approx(np.std(vals, ddof=1))
    assert t.loc[1, "mean"] == pytest.approx(np.mean([1, 2, 3]))
    assert plots.series_label("cdl", t.reset_index()) == "cdl (n=3 runs; converged runs carried forward (dashed))"


def test_figure4_does_not_carry_a_run_that_stopped_unconverged():
    t = plots.iteration_stats(_curve({0: 2, 1: 4}), converged={"c0": False, "c1": True}).set_index("x")
    assert list(t["n"]) == [2, 2, 1, 1] and list(t["carried"]) == [0, 0, 0, 0]
    assert t.loc[3, "mean"] == pytest.approx(1 / 3 + 1) and t.loc[3, "std"] == 0.0
    assert plots.series_label("ddpm", t.reset_index()) == "ddpm (n=2 to 1 runs)"
    same = plots.iteration_stats(_curve({0: 3, 1: 3}))
    assert plots.series_label("x", same) == "x (n=2 runs)"


def test_figure4_legend_n_and_twin_from_records(tmp_path):
    """Curves of a parallel sampler and records of its sequential twin (found from fixed_point)."""
    curves = pd.concat([_curve({0: 2, 1: 4}).assign(dataset="d", model="m", loss="l", sampler="picard[steps=10]",
                                                    metric="mmd")])
    recs = []
    for seed in (0, 1):
        par = {"cell": f"c{seed}", "dataset": "d", "model": "m", "loss": "l", "sampler": "picard[steps=10]",
               "seed": seed, "p_sampler_steps": 10, "p_sampler_drift": "ddpm"}
        recs.append({**par, "metric": "converged", "value": 1.0})
        for sampler, steps, value in (("ddpm[steps=10]", 10, 0.1 + seed), ("ddpm[steps=20]", 20, 9.0),
                                      ("ddim[steps=10]", 10, 7.0)):
            recs.append({"cell": f"{sampler}{seed}", "dataset": "d", "model": "m", "loss": "l", "sampler": sampler,
                         "seed": seed, "p_sampler_steps": steps, "metric": "mmd", "value": value})
    records = pd.DataFrame(recs)
    assert plots.twin_final(records, ["c0", "c1"], "mmd") == ("ddpm[steps=10]", pytest.approx(0.6), 2)
    ddim = records.assign(p_sampler_drift=records["p_sampler_drift"].where(records["metric"] != "converged", "ddim"))
    assert plots.twin_final(ddim, ["c0", "c1"], "mmd") == ("ddim[steps=10]", 7.0, 2)
    written = plots.figure4_curves(curves, tmp_path, records)
    assert [p.name for p in written] == ["figure4_mmd_vs_iteration_d_picard_steps=10.png"]


def test_figure1_pairs_the_parallel_cell_with_its_declared_twin():
    def item(sampler, **params):
        return {"loss": "l", "sampler": sampler, **{f"p_sampler_{k}": v for k, v in params.items()}}

    par = item("picard[drift=ddim]", steps=100, drift="ddim")
    ddpm, ddim = item("ddpm", steps=100), item("ddim", steps=100, eta=0.0)
    pick = plots.figure1_pairs([ddpm, par, ddim])
    assert pick["l"][0] is par and pick["l"][1] is ddim
    par2 = item("picard", steps=100, drift="ddpm", variance="beta")
    ddpm_beta = item("ddpm", steps=100, variance="beta")
    assert plots.figure1_pairs([ddpm, par2, ddpm_beta])["l"][1] is ddpm_beta
    assert plots.figure1_pairs([ddpm])["l"] == (ddpm, None)


def test_figure3_rows_per_seed_with_each_seeds_training_data(run_dir):
    items = plots.load_samples([run_dir], report.load([run_dir]))
    group = [it for it in items if it["sampler"] == "picard"]
    grid = plots.figure3_grid(group)
    assert len(grid) == 3 and all(len(row) == 3 for row in grid)
    for seed, row in enumerate(grid):
        (data_title, data), (t1, s1), (t2, s2) = row
        mine = {it["loss"]: it for it in group if int(it["seed"]) == seed}
        assert data_title == f"training data, 300 points · seed {seed}"
        assert data is mine["ddpm"]["data"]                      # what this seed's metric compared with
        assert t1 == f"ddpm · picard · seed {seed}" and s1 is mine["ddpm"]["samples"]
        assert t2 == f"cdl · picard · seed {seed}" and s2 is mine["cdl"]["samples"]


def test_sweep_figures_need_a_sweep(tmp_path):
    """Figure 5 needs >= 2 NFE values per line, Figure 6 >= 2 S_churn values; one line per setting."""
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
    assert png_size(five[0]) == (round(plots.MIN_WIDTH * plots.DPI), round(plots.PANEL[1] * plots.DPI))
    assert png_size(six[0])[0] >= 1000
    assert png_text(five[0])["Title"] == "Figure 5 · MMD^2: d: quality vs NFE"
    one = df[df["p_sampler_steps"] == 5]
    assert plots.figure5_quality_vs_nfe(one, tmp_path / "x") == []
    assert plots.figure6_quality_vs_churn(df[df["p_sampler_S_churn"] == 0], tmp_path / "x") == []


def test_headline_quality_metric_is_declared():
    df = pd.DataFrame({"metric": ["kid", "mmd", "fid", "nfe"]})
    assert plots._quality_metric(df) == "fid"                 # lowest declared headline rank
    assert plots._quality_metric(df[df.metric != "fid"]) == "mmd"
    assert plots._quality_metric(pd.DataFrame({"metric": ["nfe", "score_error_id"]})) is None


def test_figure1_draws_from_synthetic_artifacts(tmp_path):
    t, z = np.arange(0, 1000, 100), np.linspace(-3, 3, 21)
    base = {"dataset": "g", "model": "m", "loss": "l", "seed": 0, "order": 0, "p_sampler_steps": 1000,
            "score_error.t": t, "score_error.z": z, "score_error.grid": np.ones((len(t), len(z))),
            "score_error.inside": np.abs(z)[None].repeat(len(t), 0) < 1}
    par = {**base, "sampler": "picard", "p_sampler_drift": "ddpm",
           "score_error.paths": np.zeros((3, 1000, 2))}
    seq = {**base, "sampler": "ddpm", "order": 1, "score_error.paths": np.zeros((1, 1000, 2))}
    written = plots.figure1_score_error([seq, par], tmp_path)
    assert [p.name for p in written] == ["figure1_score_error_g.png"]
    assert png_text(written[0])["Title"].startswith("Figure 1 · g")


def _spy_on_figures(monkeypatch) -> list:
    """Record, for every figure saved, its axes' y limits and line data and its legends (before it closes)."""
    seen = []
    real = plots.save

    def save(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        seen.append({"ylim": ax.get_ylim(), "yscale": ax.get_yscale(), "width_px": fig.get_size_inches()[0] * plots.DPI,
                     "lines": {ln.get_label(): np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()},
                     "bands": [p for p in ax.patches], "axes_legend": ax.get_legend(), "figure_legends": fig.legends})
        return real(fig, path, *args, **kwargs)
    monkeypatch.setattr(plots, "save", save)
    return seen


def test_figure4_keeps_a_negative_mean_on_the_axis(tmp_path, monkeypatch):
    """The unbiased MMD^2 of converged runs is often below 0: such a mean line, and its twin, must
    stay inside the axis (a log axis dropped them), and the legend sits outside the axes."""
    seen = _spy_on_figures(monkeypatch)
    negative = lambda seed, x: 0.05 / x ** 3 - 4e-4 - 1e-4 * seed  # noqa: E731  ends near -5e-4
    curves = _curve({0: 6, 1: 6}, negative).assign(dataset="d", model="m", loss="l", sampler="picard[steps=10]",
                                                   metric="mmd")
    records = pd.DataFrame([{"cell": f"seq{seed}", "dataset": "d", "model": "m", "loss": "l", "seed": seed,
                             "sampler": "ddpm[steps=10]", "p_sampler_steps": 10, "metric": "mmd", "value": -6e-4}
                            for seed in (0, 1)]
                           + [{"cell": f"c{seed}", "dataset": "d", "model": "m", "loss": "l", "seed": seed,
                               "sampler": "picard[steps=10]", "p_sampler_steps": 10, "p_sampler_drift": "ddpm",
                               "metric": "converged", "value": 1.0} for seed in (0, 1)])
    written = plots.figure4_curves(curves, tmp_path, records)
    assert len(written) == 1 and len(seen) == 1
    fig = seen[0]
    lo, hi = fig["ylim"]
    assert fig["yscale"] != "log"
    mean = next(v for k, v in fig["lines"].items() if k.startswith("l (n=2"))
    assert mean.min() < 0 and lo <= mean.min() and mean.max() <= hi
    twin = next(v for k, v in fig["lines"].items() if "sequential twin" in k)
    assert twin[0] == pytest.approx(-6e-4) and lo <= twin[0] <= hi
    assert fig["axes_legend"] is None and len(fig["figure_legends"]) == 1
    assert fig["width_px"] >= 1000


def test_figure4_twin_of_a_snapshot_is_that_snapshots():
    """Twins are matched on the whole cell identity but the sampler: training step, training
    settings, suite and seed. Synthetic records of two snapshots (20k, 50k steps), two suites and
    seeds 0-2, where the sequential value encodes its cell: each parallel line's twin is the mean
    over exactly its own snapshot's, suite's and seeds' sequential cells."""
    rows = []
    for suite in ("a", "b"):
        for step in (20000, 50000):
            for seed in (0, 1, 2):
                common = {"suite": suite, "suite_version": 1, "dataset": "d", "model": "m", "loss": "l", "seed": seed,
                          "p_train_steps": 50000, "p_train_step": step, "p_sampler_steps": 10,
                          "p_metric_bandwidth": 0.03}
                value = step / 1e7 + seed * 1e-4 + (0.5 if suite == "b" else 0.0)
                rows.append({**common, "cell": f"{suite}/ddpm/seed={seed}/step={step}", "sampler": "ddpm",
                             "metric": "mmd", "value": value})
                rows.append({**common, "cell": f"{suite}/picard/seed={seed}/step={step}", "sampler": "picard",
                             "p_sampler_drift": "ddpm", "metric": "mmd", "value": 1.0})
    # the same twin measured with another bandwidth is another metric setting: never paired
    rows.append({**rows[0], "cell": "a/ddpm/bw/seed=0/step=20000", "p_metric_bandwidth": 0.1, "value": 99.0})
    records = pd.DataFrame(rows)
    twin = plots.twin_final(records, ["a/picard/seed=0/step=20000", "a/picard/seed=1/step=20000",
                                      "a/picard/seed=2/step=20000"], "mmd")
    assert twin == ("ddpm", pytest.approx(20000 / 1e7 + 1e-4), 3)
    assert plots.twin_final(records, ["b/picard/seed=2/step=50000"], "mmd") == \
        ("ddpm", pytest.approx(50000 / 1e7 + 2e-4 + 0.5), 1)
    # a legacy parallel cell without its own metric record still finds its twin (metric settings not compared)
    legacy = records[~((records["cell"] == "a/picard/seed=1/step=50000"))]
    legacy = pd.concat([legacy, pd.DataFrame([{**rows[-2], "cell": "a/picard/seed=1/step=50000", "suite": "a",
                                               "seed": 1, "p_train_step": 50000, "metric": "converged"}])])
    assert plots.twin_final(legacy, ["a/picard/seed=1/step=50000"], "mmd") == \
        ("ddpm", pytest.approx(50000 / 1e7 + 1e-4), 1)


def test_figure4_draws_the_mmd_noise_floor_from_saved_samples(tmp_path, monkeypatch):
    """With saved samples of its runs, an MMD^2 Figure 4 draws the permutation null's central 95%
    (report/noise_floor.py) as a band around 0, and the axis is linear inside it."""
    seen = _spy_on_figures(monkeypatch)
    g = np.random.default_rng(1)
    curves = _curve({0: 4, 1: 4}).assign(dataset="d", model="m", loss="l", sampler="picard[steps=10]", metric="mmd",
                                          p_metric_bandwidth=0.03, p_metric_n_samples=200)
    items = [{"cell": f"c{seed}", "order": seed, "samples": g.normal(size=(300, 2)), "data": g.normal(size=(200, 2))}
             for seed in (0, 1)]
    plots.figure4_curves(curves, tmp_path, None, items=items)
    band = plots.noise_band(items, curves, "mmd")
    assert band is not None and band[0] < 0 < band[1] and band[2:] == (200, 200)
    (patch,) = [p for p in seen[0]["bands"] if p.get_label().startswith("noise floor")]
    assert patch.get_y() == pytest.approx(band[0]) and patch.get_y() + patch.get_height() == pytest.approx(band[1])
    lo, hi = seen[0]["ylim"]
    assert lo < band[0] and band[1] < hi
    assert plots.noise_band(items, curves, "fid") is None                    # the null is MMD's
