"""Run-directory integrity (issue 14): atomic, verifiable cell commits; unreadable lines; verify
and repair; resume checks that read the records; write errors; temporaries; report loading.
Tiny synthetic records only (no training)."""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from cdlbench.cli import cli
from cdlbench.errors import UserError
from cdlbench.report.tables import load as report_load
from cdlbench.run.rundir import (MARKER, RunDir, RunDirMismatch, RunDirUnwritable, append_jsonl, read_jsonl,
                                 rows_digest, suite_config_hash)
from cdlbench.run.verify import repair_run, verify_run

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ["reference", "digits", "digits-conditional", "gaussian1d-proposal"]

RESOLVED = {"name": "tiny", "version": 1, "seeds": [0, 1], "device": "auto",
            "dataset": [{"name": "dino", "n_train": 500}], "model": [{"name": "mlp", "width": 16}],
            "train": [{"steps": 20, "batch_size": 32}], "losses": [{"name": "ddpm"}, {"name": "cdl", "weight": 1.0}],
            "samplers": [{"name": "ddpm", "steps": 10}], "metrics": [{"name": "mmd", "bandwidth": 0.03}]}
HASH = suite_config_hash(RESOLVED)
CELLS = [("ddpm", 0), ("cdl[weight=1.0]", 0), ("ddpm", 1), ("cdl[weight=1.0]", 1)]


def cell_name(loss: str, seed: int) -> str:
    return f"dino[n_train=500]/mlp[width=16]/{loss}/ddpm[steps=10]/seed={seed}"


def cell_rows(loss: str, seed: int, suite: str = "tiny", steps: int = 20) -> list[dict]:
    ident = {"suite": suite, "suite_version": 1, "cell": cell_name(loss, seed), "dataset": "dino[n_train=500]",
             "model": "mlp[width=16]", "loss": loss, "sampler": "ddpm[steps=10]", "seed": seed,
             "p_dataset_n_train": 500, "p_model_width": 16, "p_train_steps": steps, "p_train_batch_size": 32,
             "p_sampler_steps": 10, **({"p_loss_weight": 1.0} if loss.startswith("cdl") else {}),
             "env_torch": "2.13.0+cpu", "env_git_sha": "abc", "env_device": "cpu (x86_64, 2 threads)"}
    return [{**ident, "metric": "iterations", "value": 10, "unit": "passes", "higher_is_better": False},
            {**ident, "metric": "wall_clock", "value": 0.5 + seed, "unit": "s", "higher_is_better": False},
            {**ident, "metric": "train_final_loss", "value": float("nan"), "unit": "", "higher_is_better": False},
            {**ident, "p_metric_bandwidth": 0.03, "metric": "mmd", "value": 0.001 * (seed + 1) + len(loss) * 1e-5,
             "unit": "", "higher_is_better": False}]


def curve_rows(loss: str, seed: int) -> list[dict]:
    return [{"suite": "tiny", "suite_version": 1, "cell": cell_name(loss, seed), "metric": "mmd", "x": x,
             "value": 0.1 / x, "p_metric_bandwidth": 0.03} for x in (1, 2, 3)]


def clean_run(path: Path, cells=CELLS) -> RunDir:
    run = RunDir(path)
    run.write_config(RESOLVED)
    for loss, seed in cells:
        run.commit_cell(cell_rows(loss, seed), curve_rows(loss, seed), HASH)
    return run


def keyed(records: list[dict]) -> dict:
    return {(r["suite"], r["cell"], r["metric"]): r for r in records}


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def line_index(lines: list[bytes], cell: str, metric: str) -> int:
    return next(i for i, raw in enumerate(lines)
                if json.loads(raw)["cell"] == cell and json.loads(raw)["metric"] == metric)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ commits
def test_commit_cell_writes_rows_and_a_marker_with_digest_and_config_hash(tmp_path):
    run = clean_run(tmp_path / "run")
    rows = [json.loads(raw) for raw in lines_of(run.records)]
    assert len(rows) == len(CELLS) * 5
    marker = rows[4]
    assert marker["metric"] == MARKER and marker["value"] == 4 and marker["unit"] == "records"
    assert marker["higher_is_better"] is None and marker["config_hash"] == HASH
    assert marker["digest"] == rows_digest(rows[:4])              # the rows as written: NaN already null
    assert rows[2]["value"] is None
    assert "p_metric_bandwidth" not in marker and marker["cell"] == rows[0]["cell"]
    assert run.complete_cells() == run.complete_cells(HASH) == {cell_name(*c) for c in CELLS}
    assert run.complete_cells("another-hash") == set()           # a row of another config never counts
    assert len(run.load_records()) == 16 and len(run.load_curves()) == 12
    assert len(pd.read_json(run.records, lines=True)) == 20
    with pytest.raises(ValueError, match="one commit is one cell"):
        run.commit_cell(cell_rows("ddpm", 0) + cell_rows("ddpm", 1), [], HASH)


# ------------------------------------------------------------------ damaged groups
def test_a_duplicated_row_inside_a_group_is_damage_and_the_cell_is_rerun(tmp_path):
    """The old rule ('the marker commits the last n rows of its cell') let the duplicate push the
    cell's first row out and called the cell complete."""
    clean = keyed(clean_run(tmp_path / "clean").load_records())
    run = clean_run(tmp_path / "run")
    victim = cell_name("cdl[weight=1.0]", 0)
    lines = lines_of(run.records)
    i = line_index(lines, victim, "wall_clock")
    lines.insert(i + 1, lines[i])                                   # the same row twice inside the group
    run.records.write_bytes(b"".join(lines))
    assert victim not in run.complete_cells()
    got = keyed(run.load_records())
    assert got == {k: v for k, v in clean.items() if k[1] != victim}
    result = verify_run(run.path)
    assert result.damaged
    assert any(p.kind == "damaged" and p.line == 11 and victim in p.message and
               f"line {i + 2} repeats line {i + 1}" in p.message for p in result.problems), result.text()
    run.commit_cell(cell_rows("cdl[weight=1.0]", 0), curve_rows("cdl[weight=1.0]", 0), HASH)   # the rerun
    assert keyed(run.load_records()) == clean
    assert run.complete_cells() == {cell_name(*c) for c in CELLS}


def test_a_row_of_another_suite_inside_a_group_never_enters_a_report(tmp_path):
    """Same cell name, another suite: the old rule counted it in the cell's group."""
    clean = keyed(clean_run(tmp_path / "clean").load_records())
    run = clean_run(tmp_path / "run")
    victim = cell_name("ddpm", 1)
    lines = lines_of(run.records)
    i = line_index(lines, victim, "wall_clock")
    foreign = {**json.loads(lines[i]), "suite": "other", "value": 999.0}
    lines.insert(i + 1, (json.dumps(foreign) + "\n").encode())
    run.records.write_bytes(b"".join(lines))
    assert victim not in run.complete_cells()
    got = run.load_records()
    assert all(r["suite"] == "tiny" and r["value"] != 999.0 for r in got)
    assert keyed(got) == {k: v for k, v in clean.items() if k[1] != victim}
    problems = verify_run(run.path).problems
    assert any(p.kind == "damaged" and f"line {i + 2} belongs to another cell or suite" in p.message for p in problems)
    run.commit_cell(cell_rows("ddpm", 1), curve_rows("ddpm", 1), HASH)
    assert keyed(run.load_records()) == clean


def test_a_complete_group_of_another_suite_or_config_is_not_counted(tmp_path):
    clean = keyed(clean_run(tmp_path / "clean").load_records())
    run = RunDir(tmp_path / "run")
    run.write_config(RESOLVED)
    run.commit_cell(cell_rows("ddpm", 0, suite="other"), [], HASH)      # first in the file: the old rule took it
    run.commit_cell(cell_rows("cdl[weight=1.0]", 0, steps=99), [], "0" * 64)   # same suite, another config
    for loss, seed in CELLS:
        run.commit_cell(cell_rows(loss, seed), curve_rows(loss, seed), HASH)
    assert keyed(run.load_records()) == clean
    kinds = [p.kind for p in verify_run(run.path).problems]
    assert kinds.count("foreign") == 2


def test_unreadable_lines_are_skipped_with_a_warning_naming_file_and_line(tmp_path):
    run = clean_run(tmp_path / "run", CELLS[:2])
    lines = lines_of(run.records)
    bad = [b"null\n", b"[1, 2]\n", b"42\n", b'"text"\n', b'\xff\xfe{"cell": "x"}\n', b'{"suite": "tiny", "cel\n']
    text = lines[:5] + bad[:3] + lines[5:] + bad[3:]
    run.records.write_bytes(b"".join(text))
    with pytest.warns(UserWarning) as caught:
        rows = read_jsonl(run.records)
    assert all(isinstance(r, dict) for r in rows) and len(rows) == 10
    messages = [str(w.message) for w in caught]
    for lineno in (6, 7, 8, 14, 15, 16):
        want = f"{run.records}:{lineno}: truncated or corrupt line ignored"
        assert any(m.startswith(want) for m in messages), messages
    assert any("not UTF-8" in m for m in messages) and any("a JSON list, not an object" in m for m in messages)
    assert quiet(run.complete_cells) == {cell_name(*c) for c in CELLS[:2]}
    assert len(quiet(run.load_records)) == 8


# ------------------------------------------------------------------ verify and repair
def test_verify_and_repair_a_damaged_run_directory(tmp_path):
    clean = keyed(clean_run(tmp_path / "clean").load_records())
    run = clean_run(tmp_path / "run", CELLS[:3])
    # a killed write of the last cell (two rows, then a cut line), then the resumed run's full write
    last = cell_rows(*CELLS[3])
    partial = "".join(json.dumps(r) + "\n" for r in last[:2]) + json.dumps(last[2])[:40]
    with open(run.records, "a") as fh:
        fh.write(partial)
    append_jsonl(run.curves, curve_rows(*CELLS[3])[:2])
    run.commit_cell(cell_rows(*CELLS[3]), curve_rows(*CELLS[3]), HASH)
    lines = lines_of(run.records)                                   # and a duplicated row in cell 2
    i = line_index(lines, cell_name(*CELLS[1]), "mmd")
    lines.insert(i, lines[i])
    run.records.write_bytes(b"".join(lines) + b"\x00\x01garbage\n")
    damaged_bytes = run.records.read_bytes()
    with pytest.raises(ValueError):
        pd.read_json(run.records, lines=True)                        # what a killed-and-resumed file did to pandas
    result = CliRunner().invoke(cli, ["verify", str(run.path)])
    assert result.exit_code == 1, result.output
    assert "DAMAGED" in result.output and f"{run.records}:11: cell {cell_name(*CELLS[1])!r}" in result.output
    assert f"line {i + 2} repeats line {i + 1}" in result.output
    assert "without a marker (an interrupted write)" in result.output and "not valid JSON" in result.output
    want = {k: v for k, v in clean.items() if k[1] != cell_name(*CELLS[1])}
    assert keyed(quiet(run.load_records)) == want

    result = CliRunner().invoke(cli, ["repair", str(run.path)])
    assert result.exit_code == 0, result.output
    backups = sorted(run.path.glob("records.jsonl.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged_bytes
    assert sorted(run.path.glob("curves.jsonl.bak-*"))
    frame = pd.read_json(run.records, lines=True)                   # the repaired file loads
    assert len(frame) == 3 * 5 and (frame["metric"] == MARKER).sum() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # no unreadable line left
        assert keyed(run.load_records()) == want
        assert run.load_curves() == [c for c in RunDir(tmp_path / "clean").load_curves()
                                     if c["cell"] != cell_name(*CELLS[1])]
    assert not list(run.path.glob(".*.tmp"))
    assert CliRunner().invoke(cli, ["verify", str(run.path)]).exit_code == 0
    again = CliRunner().invoke(cli, ["repair", str(run.path)])
    assert again.exit_code == 0 and "already clean" in again.output
    assert len(list(run.path.glob("records.jsonl.bak-*"))) == 1
    assert CliRunner().invoke(cli, ["verify", str(tmp_path / "nothing")]).exit_code == 2


def legacy_group(loss: str, seed: int) -> list[dict]:
    rows = cell_rows(loss, seed)
    ident = {k: v for k, v in rows[0].items() if k not in ("metric", "value", "unit", "higher_is_better")}
    return rows + [{**ident, "metric": MARKER, "value": len(rows), "unit": "records", "higher_is_better": None}]


def test_legacy_markers_are_accepted_and_repair_upgrades_them(tmp_path):
    """Markers without digest (the committed runs have them): accepted when the n rows right above
    belong to the cell and no other row of the cell is in between since its previous marker."""
    clean = keyed(clean_run(tmp_path / "clean").load_records())
    run = RunDir(tmp_path / "run")
    run.write_config(RESOLVED)
    append_jsonl(run.records, legacy_group(*CELLS[0]))
    with open(run.records, "a") as fh:                               # a killed write, then the rerun
        fh.write(json.dumps(cell_rows(*CELLS[1])[0]) + "\n" + json.dumps(cell_rows(*CELLS[1])[1])[:30])
    append_jsonl(run.records, legacy_group(*CELLS[1]))
    dup = legacy_group(*CELLS[2])
    append_jsonl(run.records, dup[:1] + dup)                         # a duplicated row: not accepted
    append_jsonl(run.records, legacy_group(*CELLS[3]))
    assert quiet(run.complete_cells) == {cell_name(*c) for i, c in enumerate(CELLS) if i != 2}
    assert keyed(quiet(run.load_records)) == {k: v for k, v in clean.items() if k[1] != cell_name(*CELLS[2])}
    result = verify_run(run.path)
    assert [p.kind for p in result.problems] == ["interrupted", "unreadable", "damaged"], result.text()
    assert result.legacy == 3 and "legacy markers" in result.text()

    repair_run(run.path)
    markers = [r for r in read_jsonl(run.records) if r["metric"] == MARKER]
    assert len(markers) == 3 and all(m["config_hash"] == HASH and len(m["digest"]) == 64 for m in markers)
    assert keyed(run.load_records()) == {k: v for k, v in clean.items() if k[1] != cell_name(*CELLS[2])}
    after = verify_run(run.path)
    assert not after.damaged and after.legacy == 0


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_run_directories_verify_clean(name):
    path = ROOT / "results" / name
    if not (path / "records.jsonl").exists():
        pytest.skip(f"{path} is not in this checkout")
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    assert len(RunDir(path).complete_cells()) == verify_run(path).cells > 0


# ------------------------------------------------------------------ resuming
def changed_suite() -> dict:
    new = copy.deepcopy(RESOLVED)
    new["train"][0]["steps"] = 21
    return new


def test_check_resumable_reads_the_records_not_only_config_yaml(tmp_path):
    run = clean_run(tmp_path / "run")
    run.check_resumable(RESOLVED, HASH)                                  # the same suite resumes
    more_seeds = {**RESOLVED, "seeds": [0, 1, 2]}
    run.check_resumable(more_seeds, suite_config_hash(more_seeds))       # and so do extra seeds
    new = changed_suite()
    with pytest.raises(RunDirMismatch, match="changed: train"):
        run.check_resumable(new, suite_config_hash(new))
    run.config.unlink()                                                  # config.yaml deleted
    with pytest.raises(RunDirMismatch, match="config.yaml is missing"):
        run.check_resumable(new, suite_config_hash(new))
    run.write_config(new)                                                # or rewritten to the new suite
    with pytest.raises(RunDirMismatch, match=r"records.jsonl holds records .*changed: train"):
        run.check_resumable(new, suite_config_hash(new))
    legacy = RunDir(tmp_path / "legacy")                                 # legacy markers: their p_* columns
    legacy.write_config(new)
    for c in CELLS:
        append_jsonl(legacy.records, legacy_group(*c))
    with pytest.raises(RunDirMismatch, match=r"changed: train; e\.g\. line 5"):
        legacy.check_resumable(new, suite_config_hash(new))
    legacy.write_config(RESOLVED)
    legacy.check_resumable(RESOLVED, HASH)


@pytest.mark.parametrize("text", ["name: [unclosed\n", "42\n", "", "- a\n- b\n", b"\xff\xfe"])
def test_an_unparseable_or_scalar_config_yaml_refuses_to_resume(tmp_path, text):
    run = clean_run(tmp_path / "run", CELLS[:1])
    run.config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RunDirMismatch, match="config.yaml: not a valid run configuration") as info:
        run.check_resumable(RESOLVED, HASH)
    assert isinstance(info.value, UserError)


# ------------------------------------------------------------------ writes and temporaries
def test_write_errors_are_clear_and_record_failure_never_raises(tmp_path):
    (tmp_path / "afile").write_text("x")
    blocked = RunDir(tmp_path / "afile" / "run")
    with pytest.raises(RunDirUnwritable,
                       match=r"cannot write .*afile.*(a component of the path is a file|not a directory)"):
        blocked.write_config(RESOLVED)
    assert blocked.record_failure({"cell": "c", "reason": "boom"}) is False
    # a link to /dev/full is not written through (issue 25: no write through links in a run directory)
    linked = clean_run(tmp_path / "linked", CELLS[:1])
    linked.records.unlink()
    linked.records.symlink_to("/dev/null")
    with pytest.raises(RunDirUnwritable, match="symbolic link") as info:
        linked.commit_cell(cell_rows(*CELLS[1]), [], HASH)
    assert str(linked.records) in str(info.value)
    # a real full disk: a tiny tmpfs filled to the last byte (root and mount needed)
    disk = tmp_path / "disk"
    disk.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        run = clean_run(disk / "run", CELLS[:1])
        before = run.records.read_bytes()
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 512):                              # every write: the disk is full
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        with pytest.raises(RunDirUnwritable, match="the disk is full") as info:
            run.commit_cell(cell_rows(*CELLS[1]), [], HASH)
        assert isinstance(info.value, OSError) and str(run.records) in str(info.value)
        assert run.record_failure({"cell": "c", "reason": "boom"}) is False
        assert run.records.read_bytes() == before                          # cut back to its old length
        assert run.complete_cells() == {cell_name(*CELLS[0])}
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_clean_temporaries_removes_interrupted_writes_only(tmp_path):
    run = clean_run(tmp_path / "run", CELLS[:1])
    (run.path / "samples").mkdir()
    temps = [run.path / "config.yaml.tmp", run.path / ".records.jsonl.repair.tmp", run.path / ".config.yaml.123.tmp",
             run.path / "samples" / "cell-abc.tmp.npz"]
    for p in temps:
        p.write_text("partial")
    (run.path / "samples" / "cell-abc.npz").write_text("kept")
    assert sorted(run.clean_temporaries()) == sorted(temps)
    assert not any(p.exists() for p in temps)
    assert (run.path / "samples" / "cell-abc.npz").exists() and run.records.exists() and run.config.exists()


def test_report_load_keeps_complete_groups_and_drops_unused_env_columns(tmp_path):
    run = clean_run(tmp_path / "run")
    lines = lines_of(run.records)
    del lines[line_index(lines, cell_name(*CELLS[2]), "mmd")]           # cell 3 loses a row
    run.records.write_bytes(b"".join(lines))
    df = report_load([run.path])
    want = pd.DataFrame(run.load_records())
    want = want[[c for c in want.columns if not c.startswith("env_") or c == "env_device"]]
    assert (df["train"] == "").all()                  # one kind of training: no label (report.tables)
    pd.testing.assert_frame_equal(df.drop(columns="train"), want)
    assert set(df["cell"]) == {cell_name(*c) for i, c in enumerate(CELLS) if i != 2}
    assert "env_torch" not in df.columns and "env_device" in df.columns
    assert math.isnan(df.loc[df["metric"] == "iterations", "p_metric_bandwidth"].iloc[0])
