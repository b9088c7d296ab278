"""The claims table (cdlbench/report/claims.py) on constructed records with known answers:
pairing, censoring, margins, same-evidence merging and Holm."""
import math

import numpy as np
import pandas as pd
import pytest

from cdlbench.report import stats
from cdlbench.report.claims import Claim, ClaimsError, Margin, claims_frame, evaluate_all, load_claims


def records(values: dict, suite="s", sampler="picard", extra=None) -> pd.DataFrame:
    """values: (loss, seed) -> {metric: value, or None (censored: never reached)}."""
    rows = []
    for (loss, seed), metrics in values.items():
        for metric, v in metrics.items():
            rows.append({"suite": suite, "cell": f"dino/mlp/{loss}/{sampler}/seed={seed}", "dataset": "dino",
                         "model": "mlp", "loss": loss, "sampler": sampler, "seed": seed, "metric": metric,
                         "value": v, "p_train_steps": 100, **({"censored": True} if v is None else {}),
                         **(extra or {})})
    return pd.DataFrame(rows)


def claim(metric, direction="lower", censored_at=None, observed_only_if=None, margin=None, cid="c"):
    return Claim(cid, "statement", "src", metric, direction, {"dataset": "dino", "sampler": "picard"},
                 {"loss": "cdl"}, {"loss": "ddpm"}, censored_at, observed_only_if,
                 Margin(margin, "test margin") if margin is not None else None)


def test_paired_differences_by_seed_and_n_too_small():
    df = records({("cdl", 0): {"mmd": 1.0}, ("cdl", 1): {"mmd": 2.0}, ("cdl", 2): {"mmd": 4.0},
                  ("ddpm", 0): {"mmd": 2.0}, ("ddpm", 1): {"mmd": 4.0}, ("ddpm", 2): {"mmd": 7.0},
                  ("ddpm", 3): {"mmd": 9.0}})                 # seed 3 has no partner: not used
    (r,) = evaluate_all([claim("mmd")], df)
    assert r.seeds == [0, 1, 2] and r.diffs == [-1.0, -2.0, -3.0] and r.mean == -2.0
    assert r.t_interval == pytest.approx((-2 - 4.302653 / math.sqrt(3), -2 + 4.302653 / math.sqrt(3)), abs=1e-5)
    assert r.p == 0.25 and r.min_p == 0.25                    # the exact test's floor at n = 3
    assert r.verdict == "inconclusive" and r.reason == "n too small: minimum attainable p = 0.25"


def test_equal_integer_counts_at_n3_are_not_contradicted():
    """Issue 22 finding 5: passes +1 in all 3 seeds gave the t interval [1, 1], printed 'contradicted'."""
    df = records({("cdl", s): {"iterations": 33} for s in range(3)} | {("ddpm", s): {"iterations": 32} for s in range(3)})
    (r,) = evaluate_all([claim("iterations", "lower")], df)
    assert r.t_interval == (1.0, 1.0) and math.isnan(r.t_p)
    assert r.verdict == "inconclusive" and "minimum attainable p = 0.25" in r.reason


def test_supported_once_n_allows_it():
    df = records({("cdl", s): {"mmd": 1.0 + 0.1 * s} for s in range(8)}
                 | {("ddpm", s): {"mmd": 2.0 + 0.13 * s} for s in range(8)})
    (r,) = evaluate_all([claim("mmd")], df)
    assert r.p == pytest.approx(2 / 256) and r.verdict == "supported"
    (r,) = evaluate_all([claim("mmd", "higher")], df)
    assert r.verdict == "contradicted"


def test_censored_in_both_arms_gives_no_number_and_no_verdict():
    """Issue 22 finding 1: neither loss reaches the threshold; a 'no worse' threshold claim was
    'supported' from the difference of total passes."""
    df = records({("cdl", s): {"mmd_iters_to_threshold": None, "iterations": 30} for s in range(5)}
                 | {("ddpm", s): {"mmd_iters_to_threshold": None, "iterations": 30} for s in range(5)})
    (r,) = evaluate_all([claim("mmd_iters_to_threshold", "lower_or_equal", "iterations", margin=1)], df)
    assert r.reached == (0, 0) and r.diffs == [] and math.isnan(r.mean) and math.isnan(r.p)
    assert r.censored.both_censored == 5 and r.verdict == "no test"
    assert "censored in both arms in all 5 pairs" in r.reason
    row = claims_frame([r]).iloc[0]
    assert row["reached (CDL · control)"] == "0/5 · 0/5" and "no mean" in row["mean [95% t interval]"]


def test_treatment_censored_is_never_credited_with_reaching_early():
    """Issue 22 finding 1: a CDL run that never reaches the threshold but stops early (10 passes)
    was credited with reaching it at pass 10, 'supported' against a control reaching it at 20."""
    df = records({("cdl", s): {"mmd_iters_to_threshold": None, "iterations": 10} for s in range(8)}
                 | {("ddpm", s): {"mmd_iters_to_threshold": 20, "iterations": 30} for s in range(8)})
    (r,) = evaluate_all([claim("mmd_iters_to_threshold", censored_at="iterations")], df)
    assert r.reached == (0, 8) and r.censored.unknown == 8 and math.isnan(r.p)
    assert r.verdict == "no test"
    # the same CDL runs against a control that reached the threshold by pass 8: CDL known later
    df = records({("cdl", s): {"mmd_iters_to_threshold": None, "iterations": 10} for s in range(8)}
                 | {("ddpm", s): {"mmd_iters_to_threshold": 8, "iterations": 30} for s in range(8)})
    (r,) = evaluate_all([claim("mmd_iters_to_threshold", censored_at="iterations")], df)
    assert r.censored.later == 8 and r.p == pytest.approx(2 / 256) and r.verdict == "contradicted"


def test_control_censored_orders_the_pair_and_shows_k_of_n_reached():
    df = records({("cdl", s): {"mmd_iters_to_threshold": 24, "iterations": 33} for s in range(3)}
                 | {("ddpm", s): {"mmd_iters_to_threshold": None, "iterations": 32} for s in range(3)})
    (r,) = evaluate_all([claim("mmd_iters_to_threshold", censored_at="iterations")], df)
    assert r.reached == (3, 0) and r.censored.earlier == 3 and r.p == 0.25
    assert r.verdict == "inconclusive" and "0.25" in r.reason
    assert claims_frame([r]).iloc[0]["reached (CDL · control)"] == "3/3 · 0/3"


def test_a_run_that_did_not_converge_is_censored():
    """Issue 22 finding 7: a Picard run stopped by max_iters counted as an observed pass count."""
    df = records({("cdl", s): {"iterations": 50, "converged": 0.0} for s in range(6)}
                 | {("ddpm", s): {"iterations": 32, "converged": 1.0} for s in range(6)})
    c = claim("iterations", "lower_or_equal", "iterations", "converged", margin=1)
    (r,) = evaluate_all([c], df)
    assert r.reached == (0, 6) and r.censored.later == 6 and r.verdict == "contradicted"
    # no converged record: stopping at p_sampler_max_iters is the rule
    df = records({("cdl", s): {"iterations": 50} for s in range(6)} | {("ddpm", s): {"iterations": 32} for s in range(6)},
                 extra={"p_sampler_max_iters": 50})
    (r,) = evaluate_all([c], df)
    assert r.reached == (0, 6)


def test_no_worse_is_judged_against_its_margin():
    """Issue 22 finding 4: 'no worse' needs a margin; within it, the non-inferiority test decides."""
    within = records({("cdl", s): {"iterations": 33 + 0.1 * s} for s in range(8)}
                     | {("ddpm", s): {"iterations": 33} for s in range(8)})    # CDL worse by 0-0.7 < 1
    (r,) = evaluate_all([claim("iterations", "lower_or_equal", margin=1.0)], within)
    assert r.null == 1.0 and r.p == pytest.approx(2 / 256) and r.verdict == "supported"
    beyond = records({("cdl", s): {"iterations": 35 + 0.1 * s} for s in range(8)}
                     | {("ddpm", s): {"iterations": 33} for s in range(8)})    # worse by 2-2.7 > 1
    (r,) = evaluate_all([claim("iterations", "lower_or_equal", margin=1.0)], beyond)
    assert r.verdict == "contradicted"
    small = records({("cdl", s): {"iterations": 33} for s in range(3)} | {("ddpm", s): {"iterations": 33} for s in range(3)})
    (r,) = evaluate_all([claim("iterations", "lower_or_equal", margin=1.0)], small)
    assert r.verdict == "inconclusive"                      # an interval [0, 0] no longer "supports" at n = 3
    (r,) = evaluate_all([claim("iterations", "equal", margin=1.0)], within)
    assert r.p == pytest.approx(stats.tost(r.diffs, -1.0, 1.0)) and r.verdict == "supported"


def test_a_no_worse_claim_without_margin_is_refused(tmp_path):
    f = tmp_path / "claims.yaml"
    f.write_text("claims:\n  - {id: a, statement: s, metric: mmd, direction: lower_or_equal, "
                 "treatment: {loss: cdl}, control: {loss: ddpm}}\n")
    with pytest.raises(ClaimsError, match=r"claims\[0\]\.margin: required"):
        load_claims(f)
    f.write_text("claims:\n  - {id: a, statement: s, metric: mmd, direction: lower_or_equal, "
                 "treatment: {loss: cdl}, control: {loss: ddpm}, margin: {value: -1, source: x}}\n")
    with pytest.raises(ClaimsError, match=r"margin\.value: must be a positive"):
        load_claims(f)


def test_two_bandwidths_never_pool():
    """Issue 22 finding 6: one metric at two bandwidths paired across them (n = 12 from 3 seeds)."""
    frames = [records({("cdl", s): {"mmd": 1.0 + s + bw} for s in range(3)}
                      | {("ddpm", s): {"mmd": 2.0 + s + 2 * bw} for s in range(3)}, extra={"p_metric_bandwidth": bw})
              for bw in (0.03, 0.1)]
    (a, b) = evaluate_all([claim("mmd")], pd.concat(frames, ignore_index=True))
    assert a.n == b.n == 3
    assert a.diffs == pytest.approx([-1.03] * 3) and b.diffs == pytest.approx([-1.1] * 3)
    assert "bandwidth=0.03" in a.where and "bandwidth=0.1" in b.where


def test_rows_on_the_same_evidence_merge():
    base = {("cdl", s): {"mmd": 1.0 + s} for s in range(3)} | {("ddpm", s): {"mmd": 2.5 + s} for s in range(3)}
    same_config = pd.concat([records(base, "parallel"), records(base, "parallel-accel")], ignore_index=True)
    (r,) = evaluate_all([claim("mmd")], same_config)
    assert r.suite == "parallel, parallel-accel" and len(r.runs) == 2
    # a sampler setting that changed nothing (S_noise at S_churn = 0): identical values merge
    noise = pd.concat([records(base, extra={"p_sampler_S_noise": 1.0}),
                       records(base, sampler="picard[S_noise=1.007]", extra={"p_sampler_S_noise": 1.007})],
                      ignore_index=True)
    (r,) = evaluate_all([claim("mmd")], noise)
    assert len(r.runs) == 2
    # a different sampler setting with different values, or a different training: separate rows
    other = {k: {"mmd": v["mmd"] + 0.01 * (k[0] == "cdl")} for k, v in base.items()}
    apart = pd.concat([records(base, extra={"p_sampler_S_noise": 1.0}),
                       records(other, sampler="picard[S_noise=1.007]", extra={"p_sampler_S_noise": 1.007})],
                      ignore_index=True)
    assert len(evaluate_all([claim("mmd")], apart)) == 2
    trained = pd.concat([records(base, "a"), records(base, "b", extra={"p_train_lr": 0.1})], ignore_index=True)
    assert len(evaluate_all([claim("mmd")], trained)) == 2


def test_holm_over_the_table():
    rows = []
    for i, spread in enumerate((0.1, 0.5, 3.0)):            # three claims, three strengths of evidence
        rng = np.random.default_rng(i)
        diffs = -1.0 + spread * rng.standard_normal(8)
        rows.append(records({("cdl", s): {f"m{i}": float(d)} for s, d in enumerate(diffs)}
                            | {("ddpm", s): {f"m{i}": 0.0} for s in range(8)}))
    claims = [claim(f"m{i}", cid=f"c{i}") for i in range(3)]
    results = evaluate_all(claims, pd.concat(rows, ignore_index=True))
    p = [r.p for r in results]
    assert [r.p_holm for r in results] == pytest.approx(list(stats.holm(p)))
    for r in results:
        assert r.verdict == ("supported" if r.p_holm <= 0.05 else "inconclusive")
    assert results[0].p_holm == pytest.approx(3 * results[0].p)      # the smallest p times m = 3


def test_shipped_claims_file_loads_with_margins():
    claims = load_claims("baselines/claims.yaml")
    assert {"dino-parallel-mmd", "dino-parallel-threshold", "dino-parallel-passes", "gaussian1d-ood-score",
            "images-parallel-fid", "images-heun-fid", "dino-churn-mmd"} <= {c.id for c in claims}
    for c in claims:
        if c.direction.endswith("_or_equal"):
            assert c.margin is not None and c.margin.value > 0 and c.margin.source
    assert {c.id: c.censored_at for c in claims}["dino-parallel-threshold"] == "iterations"


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html"])
def test_reports_carry_the_claims_table(fmt):
    from cdlbench.report import document
    from cdlbench.report.formats import renderer

    df = records({("cdl", s): {"mmd": 1.0 + s} for s in range(3)} | {("ddpm", s): {"mmd": 3.0 + s} for s in range(3)})
    df = df.assign(unit="", higher_is_better=False)
    text = renderer(fmt)(document(df, claims=[claim("mmd")]))
    assert "Claims of the paper" in text and "inconclusive" in text and "statement" in text and "Holm" in text


def test_cli_names_a_missing_claims_file(tmp_path):
    from click.testing import CliRunner

    from cdlbench.cli import cli

    (tmp_path / "records.jsonl").write_text("")
    out = CliRunner().invoke(cli, ["report", str(tmp_path), "--claims", str(tmp_path / "nope.yaml")])
    assert out.exit_code == 2 and "--claims" in out.output


def test_two_bandwidths_survive_loading_a_run_directory(tmp_path):
    """The same through `cdlbench report`'s loader: a cell's two MMD records (bandwidths 0.03 and
    0.1) are both kept and judged apart."""
    from cdlbench.report.tables import load
    from cdlbench.run.rundir import append_jsonl
    from .synthetic import synthetic_rows

    rows = []
    for r in synthetic_rows():
        if r["metric"] == "mmd":
            rows += [r, {**r, "p_metric_bandwidth": 0.1, "value": r["value"] * 2}]
        elif r["metric"] == "_complete":
            rows.append({**r, "value": r["value"] + 1})
        else:
            rows.append(r)
    append_jsonl(tmp_path / "records.jsonl", rows)
    results = evaluate_all([claim("mmd")], load([tmp_path]))
    assert sorted((r.n, r.where.split("[")[-1]) for r in results) == [(3, "bandwidth=0.03]"), (3, "bandwidth=0.1]")]


def test_claims_table_script_writes_the_page_and_the_readme_block(tmp_path, monkeypatch):
    """scripts/claims_table.py is the one owner of docs/claims.md and README's summary block."""
    import importlib.util
    import sys
    from pathlib import Path

    from .synthetic import write_run

    run = write_run(tmp_path / "run")
    readme = tmp_path / "README.md"
    script = Path(__file__).parents[2] / "scripts" / "claims_table.py"
    spec = importlib.util.spec_from_file_location("claims_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme.write_text(f"intro\n{module.README_START}\nold text\n{module.README_END}\nrest\n")
    out = tmp_path / "claims.md"
    monkeypatch.setattr(sys, "argv", ["claims_table.py", str(run), "--out", str(out), "--readme", str(readme),
                                      "--claims", str(Path(__file__).parents[2] / "baselines" / "claims.yaml")])
    module.main()
    page = out.read_text()
    assert "| dino-parallel-threshold | synthetic |" in page and "Holm" in page
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old text" not in text
    assert "**Decided:** 0 of" in text and "**What it would take:**" in text


def test_a_censoring_record_that_no_run_holds():
    df = records({("cdl", s): {"iterations": 33, "converged": 1.0} for s in range(3)}
                 | {("ddpm", s): {"iterations": 32, "converged": 1.0} for s in range(3)})
    with pytest.raises(ClaimsError, match=r"claim c\.censored_at: no record named 'iteration'"):
        evaluate_all([claim("iterations", "lower_or_equal", "iteration", "converged", margin=1)], df)
    # no such status record: the max_iters rule decides, and the row says so
    (r,) = evaluate_all([claim("iterations", "lower_or_equal", "iterations", "convergd", margin=1)], df)
    assert "no 'convergd' record" in claims_frame([r]).iloc[0]["why"]
