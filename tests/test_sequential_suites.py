"""suites/sequential.yaml and suites/stochastic.yaml end to end at toy size (the shipped files,
with training, data and sample counts shrunk), and their report tables. Issue 3."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cdlbench.suite import load_yaml, parse_suite
from cdlbench.report import NumberFormat, load, render
from cdlbench.report.sweeps import churn_table, nfe_table
from cdlbench.run.coordinator import Runner

SUITES = Path(__file__).resolve().parent.parent / "suites"


def toy(name: str, **changes):
    data = load_yaml(SUITES / f"{name}.yaml")
    data["seeds"] = [0]
    data["dataset"]["n_train"] = 1000
    data["train"].update(steps=20, log_every=10)
    data["metrics"][0]["n_samples"] = 100
    data.update(changes)
    return parse_suite(data, file=f"{name}.yaml")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    out = {}
    for name in ("sequential", "stochastic"):
        suite = toy(name)
        summary = Runner(suite, root / name, device="cpu", cache_dir=root / "cache", progress=False,
                         log=lambda *a: None).execute()
        assert not summary.failed, summary.failed
        out[name] = root / name
    return out


def test_suites_state_their_runtime_and_the_paper_settings():
    seq = load_yaml(SUITES / "sequential.yaml")
    sto = load_yaml(SUITES / "stochastic.yaml")
    for data in (seq, sto):
        assert "cpu" in data["expected_runtime"] and data["seeds"] == [0, 1, 2]
        assert [lo["name"] for lo in data["losses"]] == ["edm", "cdl"] and data["losses"][1]["base"] == "edm"
        assert data["model"]["precond"] == "edm"
    heun = sorted(s["steps"] for s in seq["samplers"] if s["name"] == "heun")
    ddim = sorted(s["steps"] for s in seq["samplers"] if s["name"] == "ddim")
    assert heun == [5, 10, 18, 40] and ddim == [10, 50, 100]
    assert {"name": "ddpm", "steps": 1000} in seq["samplers"]
    grid = {(s["S_churn"], s["S_noise"]) for s in sto["samplers"]}
    assert {(c, n) for c in (0, 10, 30, 80) for n in (1.0, 1.007)} <= grid


def test_sequential_suite_table_quality_against_nfe(runs):
    df = load([runs["sequential"]])
    assert set(df["loss"]) == {"edm", "cdl[base=edm]"}
    table = nfe_table(df, "mmd")
    heun = table[table["sampler"] == "heun"]
    assert list(heun["NFE"]) == [9, 19, 35, 79] and list(heun["steps"]) == [5, 10, 18, 40]
    assert list(table.loc[table["sampler"] == "ddim", "NFE"]) == [10, 50, 100]
    assert list(table.loc[table["sampler"] == "ddpm", "NFE"]) == [1000]
    # each cell is mean ± std (n): one seed here, in the one number format of its column
    cell = df[(df["metric"] == "mmd") & (df["loss"] == "edm") & (df["sampler"] == "heun[steps=5]")]["value"]
    sequential = set(table["sampler"])
    column = df[(df["metric"] == "mmd") & (df["loss"] == "edm") & df["sampler"].str.split("[").str[0].isin(sequential)]
    number = NumberFormat.for_values(column["value"])
    assert heun.iloc[0]["edm"] == f"{number(cell.iloc[0])} ± {number(0.0)} (n=1)"
    assert churn_table(df, "mmd") is None
    text = render([runs["sequential"]])
    assert "MMD^2 against NFE" in text and "against S_churn" not in text


def test_stochastic_suite_table_quality_against_churn(runs):
    df = load([runs["stochastic"]])
    table = churn_table(df, "mmd")
    assert list(table["S_churn"]) == ["0", "10", "20", "30", "40", "80"]
    assert set(table["NFE"]) == {255}
    assert list(table.columns[-4:]) == ["edm, S_noise=1", "edm, S_noise=1.007",
                                        "cdl[base=edm], S_noise=1", "cdl[base=edm], S_noise=1.007"]
    # S_churn = 0 adds no noise, so S_noise cannot matter there; with churn it does
    first, last = table.iloc[0], table.iloc[-1]
    assert first["edm, S_noise=1"] == first["edm, S_noise=1.007"]
    assert last["edm, S_noise=1"] != last["edm, S_noise=1.007"]
    assert "against S_churn" in render([runs["stochastic"]])


def test_sweep_tables_mean_std_and_best_on_synthetic_records():
    rows = []
    for loss, base in (("a", 0.10), ("b", 0.05)):
        for seed, noise in enumerate((0.0, 0.001, 0.002)):
            for steps in (5, 10):
                cell = f"d/m/{loss}/heun[steps={steps}]/seed={seed}"
                common = {"suite": "s", "suite_version": 1, "cell": cell, "dataset": "d", "model": "m",
                          "loss": loss, "sampler": f"heun[steps={steps}]", "seed": seed, "p_sampler_steps": steps,
                          "p_sampler_S_churn": 0.0, "p_sampler_S_noise": 1.0}
                rows.append({**common, "metric": "nfe", "value": 2 * steps - 1, "higher_is_better": False})
                rows.append({**common, "metric": "mmd", "value": base / steps + noise, "higher_is_better": False})
    table = nfe_table(pd.DataFrame(rows), "mmd")
    assert list(table["NFE"]) == [9, 19]
    # one format per column: 3 significant digits of its smallest mean (a: 0.011, b: 0.006)
    assert table.loc[0, "a"] == "0.0210 ± 0.0010 (n=3)" and table.loc[1, "a"] == "0.0110 ± 0.0010 (n=3)"
    assert table.loc[0, "b"] == "0.01100 ± 0.00100 (n=3)" and table.loc[1, "b"] == "0.00600 ± 0.00100 (n=3)"
    # b is ahead by 0.01 and 0.005, more than the spread (0.001): bold in both rows
    assert table.attrs["best"] == {(0, "b"), (1, "b")}
    wide = [r if r["metric"] != "mmd" or r["loss"] != "b" else {**r, "value": r["value"] + 0.02 * (r["seed"] - 1)}
            for r in rows]                                     # b's spread (0.02) now exceeds the gaps
    assert nfe_table(pd.DataFrame(wide), "mmd").attrs["best"] == set()
