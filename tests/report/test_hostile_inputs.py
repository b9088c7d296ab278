"""Hostile inputs to `report`, `list` and suites (issue 25, promises 11, 13, 14, 17, 18, 19, 20):
baseline and claims files as strict and bounded as suites, labels escaped in every output format
and in matplotlib text, an unwritable --plots folder, a plugin that fails to import, unbounded
train.snapshots, and the same cells in two run directories. Real files, real CLI invocations
(click's CliRunner, or a subprocess where a plugin must be installed), a real plugin installed
through a temporary dist-info entry point."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdlbench.cli import cli
from cdlbench.run.rundir import append_jsonl

from .synthetic import synthetic_rows, write_run

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def alias_bomb(top: str) -> str:
    """About 640 bytes; 10^9 leaves once every alias is expanded, under the key `top`."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    return text + f"{top}: [" + ", ".join(["*i"] * 10) + "]\n"


# ---------------------------------------------------------------- promise 11
GOOD_ENTRY = ("  - id: e1\n    experiment: dino\n    provenance: paper\n    source: s\n"
              "    match: {dataset: dino, loss: cdl}\n    settings: {p_sampler_steps: 1000}\n    values: {mmd: 0.001}\n")
GOOD_HEAD = "sources: {s: a paper}\nentries:\n"


@pytest.mark.parametrize("text, field", [
    (GOOD_HEAD + "  - 1\n", "entries[0]"),                                              # TypeError before
    (GOOD_HEAD + GOOD_ENTRY.replace("{mmd: 0.001}", "{mmd: abc}"), "entries[0].values.mmd"),   # ValueError
    (GOOD_HEAD + GOOD_ENTRY.replace("{mmd: 0.001}", "{mmd: [1, 2]}"), "entries[0].values.mmd"),
    (GOOD_HEAD + GOOD_ENTRY.replace("{dataset: dino, loss: cdl}", "[dino, cdl]"), "entries[0].match"),
    (GOOD_HEAD + GOOD_ENTRY.replace("{p_sampler_steps: 1000}", "7"), "entries[0].settings"),
    (GOOD_HEAD + GOOD_ENTRY + "    censored: 3\n", "entries[0].censored"),
    (GOOD_HEAD + GOOD_ENTRY + "    note: [a, b]\n", "entries[0].note"),
    ("sources: [s]\nentries:\n" + GOOD_ENTRY, "sources"),
    ("defaults: {p_x: {a: 1}}\n" + GOOD_HEAD + GOOD_ENTRY, "defaults.p_x"),
    (GOOD_HEAD + GOOD_ENTRY + GOOD_ENTRY, "entries[1].id"),                             # duplicate id
    (GOOD_HEAD + GOOD_ENTRY.replace("mmd: 0.001", "mmd: .nan"), "entries[0].values.mmd"),
    ("entries: [] \nentries: []\n", ""),                                                  # duplicate key
])
def test_promise_11_baseline_file_is_validated_naming_file_and_field(run_dir, tmp_path, text, field):
    """Before: TypeError / ValueError tracebacks (exit 1) or silently accepted values."""
    bad = tmp_path / "baseline.yaml"
    bad.write_text(text)
    res = invoke("report", run_dir, "--baseline", bad)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert str(bad) in res.output and field in res.output


@pytest.mark.parametrize("option, top", [("--baseline", "entries"), ("--claims", "claims")])
def test_promise_11_alias_bomb_and_huge_files_are_refused_quickly(run_dir, tmp_path, option, top):
    """Before: the bomb ran for a minute and gigabytes, then MemoryError."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(top))
    assert bomb.stat().st_size < 700
    start = time.perf_counter()
    res = invoke("report", run_dir, option, bomb)
    assert time.perf_counter() - start < 5.0
    assert res.exit_code == 2 and str(bomb) in res.output and "aliases are expanded" in res.output, res.output
    huge = tmp_path / "huge.yaml"
    with open(huge, "w") as f:
        f.write(f"{top}: []\n")
        f.write("#" * (5 * 1024 * 1024) + "\n")
    res = invoke("report", run_dir, option, huge)
    assert res.exit_code == 2 and str(huge) in res.output and "at most 4.0 MB" in res.output, res.output


@pytest.mark.parametrize("text, field", [
    ("claims:\n  - 1\n", "claims[0]"),
    ("claims: {a: 1}\n", "claims"),
    ("claims: []\nclaims: []\n", "duplicate key"),
    ("claims: []\nother: 1\n", "other"),
])
def test_promise_11_claims_file_is_strict(run_dir, tmp_path, text, field):
    bad = tmp_path / "claims.yaml"
    bad.write_text(text)
    res = invoke("report", run_dir, "--claims", bad)
    assert res.exit_code == 2 and str(bad) in res.output and field in res.output, res.output


def test_promise_11_committed_baselines_and_claims_still_load():
    from cdlbench.report.baselines import load_baselines
    from cdlbench.report.claims import load_claims

    entries, sources = load_baselines(ROOT / "baselines" / "paper.yaml")
    assert len(entries) >= 10 and sources
    assert len(load_claims(ROOT / "baselines" / "claims.yaml")) >= 3


# ---------------------------------------------------------------- promise 13
PIPE = "dino|x\n| injected | row | here |"
HTML = "<img src=x onerror=alert(1)>"


def hostile_run(d: Path, dataset: str = PIPE, loss: str = HTML, suite: str = "s<b>|x") -> Path:
    """A run directory (crafted records) whose labels hold markup of every format."""
    write_run(d)
    rows = []
    for r in synthetic_rows():
        r = dict(r, dataset=dataset, suite=suite)
        if r["loss"] == "cdl":
            r["loss"] = loss
        r["cell"] = f"{r['dataset']}/{r['model']}/{r['loss']}/{r['sampler']}/seed={r['seed']}"
        rows.append(r)
    (d / "records.jsonl").unlink()
    (d / "curves.jsonl").unlink()
    shutil.rmtree(d / "samples")
    append_jsonl(d / "records.jsonl", rows)
    return d


def test_promise_13_labels_are_escaped_in_every_format(tmp_path):
    """Before: markdown escaped nothing (a '|' or newline in a label added table rows, raw HTML in
    headings), and a newline ended a LaTeX % comment, leaving the rest of the label as LaTeX."""
    d = hostile_run(tmp_path / "run")
    md = invoke("report", d, "--format", "markdown")
    assert md.exit_code == 0, md.output
    lines = md.output.splitlines()
    assert not any(line.startswith("| injected") for line in lines)
    assert "<img" not in md.output and "<b>" not in md.output
    for block in re.split(r"\n\s*\n", md.output):           # every table: one column count
        rows = [line for line in block.splitlines() if line.startswith("|")]
        counts = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(counts) <= 1, block
    assert any(r"dino\|x" in line for line in lines)          # the label is shown, escaped
    assert any(line.startswith("## ") and "s&lt;b&gt;" in line for line in lines)

    tex = invoke("report", d, "--format", "latex")
    assert tex.exit_code == 0
    for line in tex.output.splitlines():                      # the label's second line stays commented out
        if "injected" in line and not line.startswith("%"):
            assert line.lstrip().startswith("dino") or "&" in line, line
    assert not any(line.startswith("| injected") for line in tex.output.splitlines())

    page = invoke("report", d, "--format", "html")
    assert page.exit_code == 0
    assert "<img src=x" not in page.output and "&lt;img src=x onerror=alert(1)&gt;" in page.output

    table = list(csv.DictReader(io.StringIO(invoke("report", d, "--format", "csv").output)))
    assert {r["dataset"] for r in table} == {PIPE} and HTML in {r["loss"] for r in table}
    rows = json.loads(invoke("report", d, "--format", "json").output)
    assert {r["dataset"] for r in rows} == {PIPE} and HTML in {r["loss"] for r in rows}


# ---------------------------------------------------------------- promise 14
def test_promise_14_dollar_signs_in_labels_are_text_for_matplotlib(tmp_path):
    """Before: report --format html / --plots died with a mathtext ValueError traceback."""
    d = tmp_path / "run"
    write_run(d)
    odd = "images[root=run$\\q$]"
    rows = [dict(r, dataset=odd, cell=r["cell"].replace("dino", odd, 1)) for r in synthetic_rows()]
    curves = [dict(json.loads(line), dataset=odd) for line in (d / "curves.jsonl").read_text().splitlines()]
    for c in curves:
        c["cell"] = c["cell"].replace("dino", odd, 1)
    (d / "records.jsonl").unlink()
    (d / "curves.jsonl").unlink()
    append_jsonl(d / "records.jsonl", rows)
    append_jsonl(d / "curves.jsonl", curves)
    for f in (d / "samples").glob("*.npz"):                   # the samples' cells as in the records
        import numpy as np
        with np.load(f) as z:
            blob = {k: z[k] for k in z.files}
        np.savez(f, **{**blob, "cell": np.array(str(blob["cell"]).replace("dino", odd, 1))})
    res = invoke("report", d, "--format", "html", "--plots", tmp_path / "plots")
    assert res.exit_code == 0, res.output
    assert "images[root=run$\\q$]" in res.output            # html shows the label as it is
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3
    import matplotlib.cbook

    from cdlbench.report.markup import plot_text

    for text in (odd, "$x$", "a\\$b$", "cost: 5$"):
        assert not matplotlib.cbook.is_math_text(plot_text(text))


# ---------------------------------------------------------------- promise 17
def test_promise_17_unwritable_plots_directory_exits_2(run_dir, tmp_path):
    """Before: FileExistsError / IsADirectoryError tracebacks (exit 1). Root-proof cases: the
    folder's parent is a file; a figure's file name is taken by a directory."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = invoke("report", run_dir, "--plots", blocker / "plots")
    assert res.exit_code == 2 and "--plots" in res.output and str(blocker / "plots") in res.output, res.output
    taken = tmp_path / "plots"
    (taken / "figure4_mmd_vs_iteration_dino_picard.png").mkdir(parents=True)
    res = invoke("report", run_dir, "--plots", taken)
    assert res.exit_code == 2 and "--plots" in res.output and str(taken) in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


# ---------------------------------------------------------------- promise 18
def broken_plugin(site: Path) -> Path:
    """A plugin package installed through a dist-info entry point that raises on import."""
    (site / "brokenplug").mkdir(parents=True)
    (site / "brokenplug" / "__init__.py").write_text("raise RuntimeError('the plugin is broken on purpose')\n")
    info = site / "brokenplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cdlbench.plugins]\nbroken = brokenplug\n")
    return site


def cdlbench(args, site: Path, cwd: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cdlbench", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_promise_18_a_plugin_that_fails_to_import_is_named_and_builtins_work(tmp_path):
    """Before: `list`, `run` and `report` died with the plugin's traceback, not naming the plugin."""
    site = broken_plugin(tmp_path / "site")
    named = ["broken", "brokenplug", "the plugin is broken on purpose"]
    res = cdlbench(["list", "samplers"], site, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "picard" in res.stdout and all(n in res.stderr for n in named), res.stderr
    assert "Traceback" not in res.stderr

    run = write_run(tmp_path / "run")
    res = cdlbench(["report", run], site, tmp_path)
    assert res.returncode == 0 and "| cdl" in res.stdout and all(n in res.stderr for n in named), res.stderr

    suite = tmp_path / "needs_plugin.yaml"
    suite.write_text("name: needs_plugin\ndataset: {name: dino}\nmodel: {name: mlp}\nlosses: {name: ddpm}\n"
                     "samplers: {name: from_the_plugin}\nmetrics: {name: mmd}\n")
    res = cdlbench(["run", suite, "--dry-run"], site, tmp_path)
    assert res.returncode == 2 and "samplers.name" in res.stderr and all(n in res.stderr for n in named), res.stderr
    assert "Traceback" not in res.stderr
    builtin = tmp_path / "builtin.yaml"
    builtin.write_text(suite.read_text().replace("from_the_plugin", "ddpm").replace("needs_plugin", "builtin"))
    res = cdlbench(["run", builtin, "--dry-run"], site, tmp_path)
    assert res.returncode == 0 and "1 cells" in res.stdout and "broken" in res.stderr, res.stderr


# ---------------------------------------------------------------- promise 19
def test_promise_19_snapshots_and_the_expansion_are_bounded():
    """Before: 90,000 snapshots were accepted (180,000 evaluations)."""
    from cdlbench.suite import SuiteError
    from cdlbench.suite.schema import MAX_EVALUATIONS, MAX_SNAPSHOTS, parse_suite

    base = {"name": "big", "dataset": {"name": "dino"}, "model": {"name": "mlp"}, "losses": {"name": "ddpm"},
            "samplers": [{"name": "ddpm"}, {"name": "picard"}], "metrics": {"name": "mmd"}}
    start = time.perf_counter()
    with pytest.raises(SuiteError, match=f"at most {MAX_SNAPSHOTS:,} snapshots") as info:
        parse_suite({**base, "train": {"steps": 100_000, "snapshots": list(range(1, 90_001))}}, "big.yaml")
    assert info.value.field == "train.snapshots" and info.value.file == "big.yaml"
    assert time.perf_counter() - start < 5.0
    ok = parse_suite({**base, "train": {"steps": 1000, "snapshots": list(range(1, MAX_SNAPSHOTS + 1))}}, "ok.yaml")
    assert len(ok.trains[0]["snapshots"]) == MAX_SNAPSHOTS
    # every axis within its own bound, the product beyond: refused naming the axes' sizes
    with pytest.raises(SuiteError, match=f"at most {MAX_EVALUATIONS:,}") as info:
        parse_suite({**base, "seeds": list(range(1000)),
                     "train": {"steps": 1000, "snapshots": list(range(1, MAX_SNAPSHOTS + 1))}}, "big.yaml")
    assert "seeds 1000" in str(info.value) and f"snapshots {MAX_SNAPSHOTS}" in str(info.value)
    with pytest.raises(SuiteError, match="at most 1,000 are allowed") as info:      # one axis' entries
        parse_suite({**base, "samplers": [{"name": "picard", "tolerance": 0.1 + i} for i in range(1001)]}, "big.yaml")
    assert info.value.field == "samplers"


# ---------------------------------------------------------------- promise 20
def test_promise_20_the_same_cells_in_two_run_directories(tmp_path):
    """Before: the first directory's values were kept and the other's dropped without a word."""
    a = write_run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    res = invoke("report", a, b)                         # identical values: counted once, said so
    assert res.exit_code == 0
    assert str(a) in res.stderr and str(b) in res.stderr and "12 cells" in res.stderr, res.stderr
    assert res.stdout == invoke("report", a).stdout
    rows = [json.loads(line) for line in (b / "records.jsonl").read_text().splitlines()]
    for r in rows:
        if r.get("cell") == "dino/mlp/cdl/picard/seed=0" and r.get("metric") == "mmd":
            r["value"] = 0.5
    (b / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for order in ((a, b), (b, a)):                       # differing values: refused, whatever the order
        res = invoke("report", *order)
        assert res.exit_code == 2, res.output
        assert str(a) in res.output and str(b) in res.output and "dino/mlp/cdl/picard/seed=0" in res.output
        assert "mmd" in res.output
