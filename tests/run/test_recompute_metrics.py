"""Metrics added to a finished run from its saved samples: the same values a
run measuring them gives, appended through the commit protocol (earlier lines byte for byte
unchanged, `verify` clean with a note), never twice; bad metrics exit 2."""
from __future__ import annotations

import json
import yaml
from click.testing import CliRunner

import fault_components
from cdlbench.cli import cli
from cdlbench.run.coordinator import samples_file
from cdlbench.run.rundir import RunDir
from cdlbench.run.recompute import main as recompute_main

MMD = {"name": "mmd", "bandwidth": 0.03, "n_samples": 100}
ENERGY = {"name": "energy", "n_samples": 100}
SLICED = {"name": "sliced_wasserstein", "n_samples": 100, "projections": 8}


def _run(tmp_path, name, metrics):
    suite = {**fault_components.TINY_SUITE, "seeds": [0], "losses": [{"name": "ddpm"}],
             "samplers": [{"name": "ddpm", "steps": 20}, {"name": "picard", "steps": 20, "tolerance": 0.1}],
             "metrics": metrics}
    path, out = tmp_path / f"{name}.yaml", tmp_path / name
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    res = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def _values(run, metric):
    return {r["cell"]: r["value"] for r in RunDir(run).load_records() if r["metric"] == metric}


def test_recomputed_records_equal_a_runs_and_keep_every_line(tmp_path, capsys):
    run = _run(tmp_path, "run", [MMD])
    both = _run(tmp_path, "both", [MMD, ENERGY, SLICED])          # a run that measured them itself
    before = (run / "records.jsonl").read_bytes()
    old_rows = RunDir(run).load_records()
    assert recompute_main([str(run), "--metric", yaml.safe_dump(ENERGY), "--metric", json.dumps(SLICED)]) == 0
    assert (run / "records.jsonl").read_bytes().startswith(before)           # appended, nothing rewritten
    for metric in ("energy", "sliced_wasserstein", "mmd"):
        assert _values(run, metric) == _values(both, metric) and len(_values(run, metric)) == 2
    rows = RunDir(run).load_records()
    assert all(r in rows for r in old_rows) and len(rows) == len(old_rows) + 4
    check = CliRunner().invoke(cli, ["verify", str(run)])
    assert check.exit_code == 0 and "no damage found" in check.output and "gained records" in check.output
    # again: already there, nothing appended
    size = (run / "records.jsonl").stat().st_size
    assert recompute_main([str(run), "--metric", yaml.safe_dump(ENERGY)]) == 0
    assert (run / "records.jsonl").stat().st_size == size and "already recorded" in capsys.readouterr().out
    # a report reads the extended run
    assert CliRunner().invoke(cli, ["report", str(run)]).exit_code == 0


def test_cells_without_samples_need_a_rerun(tmp_path, capsys):
    run = _run(tmp_path, "run", [MMD])
    cell = next(iter(_values(run, "mmd")))
    samples_file(run, cell).unlink()
    assert recompute_main([str(run), "--metric", yaml.safe_dump(ENERGY)]) == 0
    out = capsys.readouterr().out
    assert "1 cell(s) gained 1 record(s)" in out and f"needs a rerun: {cell} energy (no saved samples)" in out
    assert cell not in _values(run, "energy")


class _NeedsTheModel:
    """A metric that scores the trained denoiser (as score_error does)."""

    def __init__(self, n_samples: int = 10):
        self.n_samples = n_samples

    def __call__(self, samples, reference, denoiser=None):
        return 0.0


def test_bad_metrics_exit_2_and_write_nothing(tmp_path, capsys):
    from cdlbench.registry import METRICS
    from cdlbench.specs import MetricSpec

    METRICS.register("needs_model_test", spec=MetricSpec(context=("denoiser",)))(_NeedsTheModel)
    try:
        run = _run(tmp_path, "run", [MMD])
        before = (run / "records.jsonl").read_bytes()
        for bad, words in (("{name: energy, n_samples: 1}", ("metrics[0].n_samples", "must be an integer >= 2")),
                           ("{name: data_nll}", ("exact density", "gmm1d")),
                           ("{name: needs_model_test}", ("metrics[0].name", "denoiser", "rerun")),
                           ("{name: nosuch}", ("nosuch",)),
                           ("[1, 2]", ("must be a mapping",))):
            assert recompute_main([str(run), "--metric", bad]) == 2, bad
            err = capsys.readouterr().err
            assert all(w in err for w in words), (bad, err)
        assert recompute_main([str(tmp_path / "nothing"), "--metric", "{name: energy}"]) == 2
        assert (run / "records.jsonl").read_bytes() == before
    finally:
        METRICS.unregister("needs_model_test")


def test_an_extending_group_must_repeat_the_rows_it_extends(tmp_path):
    from cdlbench.run.rundir import rows_digest

    run = RunDir(tmp_path / "r")
    ident = {"suite": "s", "suite_version": 1, "cell": "c", "seed": 0}
    first = [{**ident, "metric": "nfe", "value": 3, "unit": "evals", "higher_is_better": False}]
    extra = [{**ident, "metric": "energy", "value": 0.5, "unit": "", "higher_is_better": False}]
    run.commit_cell(first, [], "h")
    run.commit_cell(first + extra, [], "h", extends=rows_digest(first))
    scan = run.scan("h")
    assert scan.extended == 1 and not scan.issues and run.load_records() == first + extra
    changed = [{**first[0], "value": 4}]                    # claims to extend, but changes a row
    run.commit_cell(changed + extra, [], "h", extends=rows_digest(first + extra))
    scan = run.scan("h")
    assert scan.extended == 1 and [i.kind for i in scan.issues] == ["superseded"]
    run.commit_cell(changed, [], "h", extends=rows_digest(changed + extra))   # fewer rows: not an extension
    assert [i.kind for i in run.scan("h").issues] == ["superseded", "superseded"]


def test_snapshot_and_reordered_cells_find_their_suite_cell():
    from cdlbench.run.recompute import _cell_key, _suite_cell

    cell = object()
    cells = {"dino/mlp/ddpm/picard/seed=1": cell}
    row = {"seed": 1, "p_model_width": 8, "p_train_step": 20000, "p_metric_bandwidth": 0.03}
    assert _suite_cell("dino/mlp/ddpm/picard/seed=1/step=20000", row, cells, {}) is cell
    by_key = {_cell_key({"seed": 1, "p_model_width": 8}): cell}      # a label with parameters in another order
    assert _suite_cell("dino/mlp[b=1,a=2]/ddpm/picard/seed=1", row, {}, by_key) is cell
    assert _suite_cell("other/seed=2", {**row, "seed": 2}, cells, by_key) is None
