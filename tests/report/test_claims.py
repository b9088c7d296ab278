"""Paired statistics of the claims table (cdlbench/report/claims.py) on constructed records with
known answers, including censored values."""
import math

import pandas as pd
import pytest

from cdlbench.report.claims import (Claim, bootstrap_interval, evaluate, load_claims, t_interval, t_quantile_975,
                                    verdict)


def test_t_interval_known_answer():
    lo, hi = t_interval([1.0, 2.0, 3.0])              # mean 2, sd 1, t_{0.975,2} = 4.3027
    half = 4.3027 / math.sqrt(3)
    assert lo == pytest.approx(2 - half, abs=1e-4) and hi == pytest.approx(2 + half, abs=1e-4)
    assert t_interval([5.0]) is None
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_t_quantiles_beyond_the_table():
    assert t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=2e-4)
    assert t_quantile_975(60) == pytest.approx(2.0003, abs=2e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=2e-4)


def test_bootstrap_only_from_five_values_and_seeded():
    assert bootstrap_interval([1.0, 2.0, 3.0, 4.0]) is None
    d = [0.5, 1.0, 1.5, 2.0, 2.5]
    a, b = bootstrap_interval(d), bootstrap_interval(d)
    assert a == b and a[0] < 1.5 < a[1] and a[0] >= 0.5 and a[1] <= 2.5
    assert bootstrap_interval([3.0] * 6) == (3.0, 3.0)


@pytest.mark.parametrize("direction, interval, expected", [
    ("lower", (-2, -1), "supported"), ("lower", (1, 2), "contradicted"), ("lower", (-1, 1), "inconclusive"),
    ("lower", (-1, 0), "inconclusive"), ("higher", (1, 2), "supported"), ("higher", (-2, -1), "contradicted"),
    ("lower_or_equal", (0, 0), "supported"), ("lower_or_equal", (-1, 0), "supported"),
    ("lower_or_equal", (-1, 1), "inconclusive"), ("lower_or_equal", (0.5, 1), "contradicted"),
    ("higher_or_equal", (0, 0), "supported"), ("lower", None, "inconclusive")])
def test_verdicts(direction, interval, expected):
    assert verdict(direction, interval) == expected


def records(values: dict) -> pd.DataFrame:
    """values: (loss, seed) -> {metric: value or None (censored)}."""
    rows = []
    for (loss, seed), metrics in values.items():
        for metric, v in metrics.items():
            rows.append({"suite": "s", "cell": f"dino/mlp/{loss}/picard/seed={seed}", "dataset": "dino", "model": "mlp",
                         "loss": loss, "sampler": "picard", "seed": seed, "metric": metric, "value": v,
                         "p_train_steps": 100})
    return pd.DataFrame(rows)


def claim(metric, direction="lower", censored_as=None):
    return Claim("c", "statement", "src", metric, direction, {"dataset": "dino", "sampler": "picard"},
                 {"loss": "cdl"}, {"loss": "ddpm"}, censored_as)


def test_paired_differences_by_seed():
    df = records({("cdl", 0): {"mmd": 1.0}, ("cdl", 1): {"mmd": 2.0}, ("cdl", 2): {"mmd": 4.0},
                  ("ddpm", 0): {"mmd": 2.0}, ("ddpm", 1): {"mmd": 4.0}, ("ddpm", 2): {"mmd": 7.0},
                  ("ddpm", 3): {"mmd": 9.0}})                 # seed 3 has no partner: not used
    (r,) = evaluate(claim("mmd"), df)
    assert r.seeds == [0, 1, 2] and r.diffs == [-1.0, -2.0, -3.0] and r.mean == -2.0
    assert r.t_interval == pytest.approx((-2 - 4.3027 / math.sqrt(3), -2 + 4.3027 / math.sqrt(3)), abs=1e-4)
    assert r.verdict == "inconclusive" and r.bootstrap_interval is None and r.censored == 0


def test_censored_values_count_as_the_total_passes_and_are_flagged():
    df = records({("cdl", s): {"mmd_iters_to_threshold": 20 + s, "iterations": 30} for s in range(5)}
                 | {("ddpm", s): {"mmd_iters_to_threshold": None, "iterations": 31 + s} for s in range(5)})
    (r,) = evaluate(claim("mmd_iters_to_threshold", censored_as="iterations"), df)
    assert r.diffs == [-11.0] * 5 and r.censored == 5
    assert r.t_interval == (-11.0, -11.0) and r.bootstrap_interval == (-11.0, -11.0) and r.verdict == "supported"
    # without a stand-in the censored pairs cannot be formed: no result, never a silent zero
    assert evaluate(claim("mmd_iters_to_threshold"), df) == []


def test_contradicted_when_cdl_is_worse():
    df = records({("cdl", s): {"iterations": 33 + (s % 2)} for s in range(4)}
                 | {("ddpm", s): {"iterations": 31} for s in range(4)})
    (r,) = evaluate(claim("iterations", "lower_or_equal"), df)
    assert r.mean == 2.5 and r.verdict == "contradicted"


def test_shipped_claims_file_loads():
    claims = load_claims("baselines/claims.yaml")
    assert {"dino-parallel-mmd", "dino-parallel-threshold", "dino-parallel-passes", "gaussian1d-ood-score",
            "images-parallel-fid", "images-heun-fid", "dino-churn-mmd"} <= {c.id for c in claims}


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html"])
def test_reports_carry_the_claims_table(fmt):
    from cdlbench.report import document
    from cdlbench.report.formats import renderer

    df = records({("cdl", s): {"mmd": 1.0 + s} for s in range(3)} | {("ddpm", s): {"mmd": 3.0 + s} for s in range(3)})
    df = df.assign(unit="", higher_is_better=False)
    text = renderer(fmt)(document(df, claims=[claim("mmd")]))
    assert "Claims of the paper" in text and "supported" in text and "statement" in text


def test_cli_names_a_missing_claims_file(tmp_path):
    from click.testing import CliRunner

    from cdlbench.cli import cli

    (tmp_path / "records.jsonl").write_text("")
    out = CliRunner().invoke(cli, ["report", str(tmp_path), "--claims", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 2 and "--claims" in out.output
