"""Reliability (issue 7, items 2-5): faults inside cells, interruption and resume, the run lock,
checkpoint integrity and determinism. Tiny suites (20 training steps, width 16) keep it fast.

Records are compared with `comparable`: every column and value equal to the last bit, except
the env_* columns (versions, git sha, device name) and the values of the timing records
`wall_clock` and `train_seconds`."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from fault_components import flip_tensor_byte
import yaml
from click.testing import CliRunner

import fault_components
from cdlbench.run.checkpoints import CheckpointInvalid, config_hash, load_checkpoint, save_checkpoint
from cdlbench.cli import cli
from cdlbench.suite import parse_suite
from cdlbench.run.lock import RunLock, RunLocked
from cdlbench.run.rundir import RunDir, read_jsonl
from cdlbench.run.coordinator import Runner
from cdlbench.run.rundir import RunDirMismatch

TESTS = Path(__file__).resolve().parents[1]      # tests/: fault_components.py
TIMING = {"wall_clock", "train_seconds"}

TINY = fault_components.TINY_SUITE


def tiny(**changes) -> dict:
    data = copy.deepcopy(TINY)
    data.update(changes)
    return data


def run(data: dict, out: Path, cache: Path | None = None, log=None):
    """Run a suite in-process; returns (summary, log lines)."""
    lines = []
    suite = parse_suite(data, file="test-suite.yaml")
    runner = Runner(suite, out, device="cpu", cache_dir=cache, progress=False, log=log or lines.append)
    return runner.execute(), lines


def comparable(records: list[dict]) -> dict:
    """(cell, metric, metric params) -> the row without env_* columns and without timing values."""
    out = {}
    for r in records:
        row = {k: v for k, v in r.items() if not k.startswith("env_")}
        if row["metric"] in TIMING:
            row.pop("value")
        key = (row["cell"], row["metric"], json.dumps({k: v for k, v in row.items() if k.startswith("p_metric_")}))
        assert key not in out, f"duplicate record {key}"
        out[key] = row
    return out


def write_suite(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def faults():
    fault_components.register()
    yield
    fault_components.unregister()


# ------------------------------------------------------------------ determinism (item 5)
def test_identical_runs_and_any_cell_order_give_bit_identical_records(tmp_path):
    a, _ = run(tiny(), tmp_path / "a" / "run", tmp_path / "a" / "cache")
    b, _ = run(tiny(), tmp_path / "b" / "run", tmp_path / "b" / "cache")
    reordered = tiny(seeds=[1, 0], losses=TINY["losses"][::-1], samplers=TINY["samplers"][::-1])
    c, _ = run(reordered, tmp_path / "c" / "run", tmp_path / "c" / "cache")
    cached, log = run(tiny(), tmp_path / "a" / "again", tmp_path / "a" / "cache")   # weights from the cache
    assert any("using cached checkpoint" in line for line in log)
    rec = {k: comparable(RunDir(s.run_dir).load_records()) for k, s in
           {"a": a, "b": b, "c": c, "cached": cached}.items()}
    assert len(a.done) == 8 and not a.failed
    assert len(rec["a"]) == 4 * 9 + 4 * 8       # picard cells: 9 records (with the threshold one), ddpm cells: 8
    assert rec["a"] == rec["b"] == rec["c"] == rec["cached"]
    order_a = [r["cell"] for r in RunDir(a.run_dir).load_records()]
    order_c = [r["cell"] for r in RunDir(c.run_dir).load_records()]
    assert order_a != order_c                            # the cells really ran in another order
    mmd = [r["value"] for r in rec["a"].values() if r["metric"] == "mmd"]
    assert len(set(mmd)) > 1 and all(isinstance(v, float) for v in mmd)


# ------------------------------------------------------------------ faults (item 2)
def test_faults_fail_their_cells_only_and_exit_1(tmp_path, faults):
    """Injected NaN loss, a diverging lr, an exception in a sampler and an out-of-memory that
    survives the retry: each fails its own cells with the reason; the healthy cell completes."""
    data = tiny(seeds=[0], train=[{"steps": 20, "batch_size": 32, "lr": 1e-3}, {"steps": 20, "batch_size": 32, "lr": 1e6}],
                losses=[{"name": "ddpm"}, {"name": "nan_loss"}],
                samplers=[{"name": "ddpm", "steps": 10}, {"name": "boom"}, {"name": "always_oom"}])
    suite = write_suite(tmp_path / "faults.yaml", data)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failures = {r["cell"]: r["reason"] for r in read_jsonl(out / "failures.jsonl")}
    done = RunDir(out).complete_cells()
    assert done == {"dino[n_train=500]/mlp[width=16,blocks=1]/train[lr=0.001]/ddpm/ddpm[steps=10]/seed=0"}
    assert len(failures) == 12 - 1 and not set(failures) & done
    for cell, reason in failures.items():
        if "/nan_loss/" in cell or "lr=1000000.0" in cell:
            assert reason.startswith("non-finite loss: loss became nan"), reason
        elif "/boom" in cell:
            assert "RuntimeError: injected fault inside the sampler" in reason
        else:
            assert "/always_oom" in cell and "out of memory, also after halving chunk_size to 250" in reason
        assert f"failed: {cell}: " in result.output                      # the CLI lists every failed cell
    # a second run retries only the failed cells and never duplicates the complete one
    again = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--quiet"])
    assert again.exit_code == 1 and "1 already complete" in again.output
    assert len(RunDir(out).load_records()) == 8          # 7 and ood_eval_share


def test_out_of_memory_halves_chunk_size_and_retries_once(tmp_path, faults):
    """The real Picard sampler on a model that runs out of memory above 300 points per call:
    chunk_size 400 fails, the retry with 200 gives the numbers of a run that used 200 from the start."""
    data = tiny(seeds=[0], losses=[{"name": "ddpm"}],
                model={"name": "memory_bound_mlp", "width": 16, "blocks": 1, "max_batch": 300},
                samplers=[{"name": "picard", "steps": 10, "chunk_size": 400},
                          {"name": "picard", "steps": 10, "chunk_size": 200}],
                metrics=[{"name": "mmd", "bandwidth": 0.03, "n_samples": 50}])
    summary, log = run(data, tmp_path / "run")
    assert not summary.failed and len(summary.done) == 2
    assert any("out of memory" in line and "retrying once with chunk_size=200" in line for line in log)
    rows = RunDir(summary.run_dir).load_records()
    by_chunk = {c: {r["metric"]: r for r in rows if r["p_sampler_chunk_size"] == c} for c in (400, 200)}
    assert all(r["oom_retry_chunk_size"] == 200 for r in by_chunk[400].values())
    assert all("oom_retry_chunk_size" not in r for r in by_chunk[200].values())
    for metric in ("iterations", "nfe", "converged"):
        assert by_chunk[400][metric]["value"] == by_chunk[200][metric]["value"]
    assert by_chunk[400]["mmd"]["value"] == pytest.approx(by_chunk[200]["mmd"]["value"], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ interruption (item 3)
def _cli_subprocess(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           **(env_extra or {})}
    code = ("import torch; torch.set_num_threads(1); import fault_components as f; f.register(); "
            "from cdlbench.cli import main; main()")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _markers(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"metric": "_complete"' in line)


def test_sigkill_mid_cell_then_resume_gives_the_uninterrupted_records(tmp_path, faults):
    data = tiny(seeds=[0], losses=[{"name": "ddpm"}, {"name": "itd"}],
                samplers=[{"name": "ddpm", "steps": 10}, {"name": "slow_ddpm", "steps": 10}],
                metrics=[{"name": "mmd", "bandwidth": 0.03, "n_samples": 100}])
    suite = write_suite(tmp_path / "kill.yaml", data)
    out = tmp_path / "killed" / "run"
    # 1. a run whose second cell sleeps; SIGKILL once the first cell's records are on disk
    child = _cli_subprocess(["run", str(suite), "--out", str(out), "--quiet"], {"CDLBENCH_TEST_SLEEP": "60"})
    deadline = time.monotonic() + 120
    while _markers(out / "records.jsonl") < 1:
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "the first cell never finished"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)                        # in the middle of cell 2 (asleep in its sampler)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert len(RunDir(out).complete_cells()) == 1
    # 2. resume (the dead run's lock does not block it) while an uninterrupted reference runs here
    resumed = _cli_subprocess(["run", str(suite), "--out", str(out), "--quiet"])
    reference = tmp_path / "reference" / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                 # as in the subprocesses
    try:
        ref, _ = run(data, reference)
    finally:
        torch.set_num_threads(threads)
    resumed_out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0 and not ref.failed, resumed_out
    assert "(3 cells run, 1 already complete, 0 failed)" in resumed_out
    got, want = RunDir(out).load_records(), RunDir(reference).load_records()
    assert len(got) == len(want) == 4 * 8
    assert comparable(got) == comparable(want)
    assert _markers(out / "records.jsonl") == 4                # no cell written twice


def test_truncated_last_line_is_ignored_with_a_warning_and_the_cell_rerun(tmp_path):
    data = tiny(seeds=[0], losses=[{"name": "ddpm"}])
    summary, _ = run(data, tmp_path / "run")
    records = tmp_path / "run" / "records.jsonl"
    want = comparable(RunDir(summary.run_dir).load_records())
    text = records.read_text()
    last_cell = json.loads(text.splitlines()[-1])["cell"]
    start = text.index(json.dumps({"suite": "tiny"})[:-1] + f', "suite_version": 1, "cell": "{last_cell}"')
    group = text[start:]
    records.write_text(text[:start] + group[: int(len(group) * 0.6)])   # a kill in the middle of the write
    with pytest.warns(UserWarning, match="truncated or corrupt line ignored"):
        assert RunDir(records.parent).complete_cells() == {c for c in summary.done if c != last_cell}
    with pytest.warns(UserWarning, match="truncated or corrupt line ignored"):
        resumed, _ = run(data, tmp_path / "run")
    assert resumed.done == [last_cell] and len(resumed.skipped) == 1
    with pytest.warns(UserWarning, match="truncated or corrupt line ignored"):
        got = RunDir(records.parent).load_records()
    assert comparable(got) == want
    lines = records.read_text().splitlines()
    assert sum(1 for line in lines if _is_json(line)) == len(lines) - 1    # one corrupt line, kept apart


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def test_second_run_on_the_same_directory_refuses(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", tiny(seeds=[0], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 5}]))
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunLocked):
            RunLock(out).acquire()
        result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--quiet"])
        assert result.exit_code == 2
        assert "another `cdlbench run` is using this run directory" in result.output
        assert f"pid {os.getpid()}" in result.output and not (out / "records.jsonl").exists()
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output


def test_resuming_with_a_changed_suite_refuses(tmp_path):
    data = tiny(seeds=[0], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 5}])
    run(data, tmp_path / "run")
    changed = tiny(seeds=[0], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 5}],
                   train={**TINY["train"], "steps": 21})
    with pytest.raises(RunDirMismatch, match="changed: train"):
        run(changed, tmp_path / "run")
    more_seeds, _ = run(tiny(seeds=[0, 1], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 5}]),
                        tmp_path / "run")
    assert len(more_seeds.skipped) == 1 and len(more_seeds.done) == 1      # extra seeds do resume


# ------------------------------------------------------------------ integrity (item 4)
class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))




def test_corrupt_or_stale_checkpoints_are_detected_and_retrained(tmp_path):
    data = tiny(seeds=[0], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 10}])
    cache = tmp_path / "cache"
    first, _ = run(data, tmp_path / "first", cache)
    want = comparable(RunDir(first.run_dir).load_records())
    (ckpt,) = cache.glob("*.pt")
    good = ckpt.read_bytes()
    blob = torch.load(ckpt, weights_only=True)
    weight = max(blob["state_dict"].values(), key=lambda t: t.numel())
    marker = tmp_path / "pwned"

    def truncate(p):
        p.write_bytes(good[: len(good) // 2])

    def garbage(p):
        p.write_bytes(b"not a checkpoint at all\n" * 10)

    def stale_config(p):
        save_checkpoint(p, blob["state_dict"], blob["train_log"], {**blob["config"], "seed": 99})

    def pickle_with_code(p):
        torch.save({"format": 2, "state_dict": _Payload(str(marker))}, p)

    corruptions = {truncate: "unreadable", lambda p: flip_tensor_byte(p, weight): "content hash",
                   garbage: "unreadable", stale_config: "config hash mismatch", pickle_with_code: "unreadable"}
    for i, (corrupt, reason) in enumerate(corruptions.items()):
        ckpt.write_bytes(good)
        corrupt(ckpt)
        summary, log = run(data, tmp_path / f"run{i}", cache)
        assert any("warning: cached checkpoint" in line and reason in line and "retraining" in line
                   for line in log), (reason, log)
        assert not summary.failed
        assert comparable(RunDir(summary.run_dir).load_records()) == want      # retrained to the same weights
        load_checkpoint(ckpt, blob["config"])                                  # a valid file again
    assert not marker.exists()                                   # weights_only: the pickled code never ran
    assert sorted(p.name for p in cache.iterdir()) == [ckpt.name]     # no temporary files left behind


def test_checkpoint_hashes_cover_content_and_config(tmp_path):
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    path = tmp_path / "x.pt"
    save_checkpoint(path, state, {"steps": 1}, {"seed": 0})
    blob = load_checkpoint(path, {"seed": 0})
    assert torch.equal(blob["state_dict"]["w"], state["w"])
    with pytest.raises(CheckpointInvalid, match="config hash"):
        load_checkpoint(path, {"seed": 1})
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    with zipfile.ZipFile(path) as zf:                      # torch's format: a zip holding the tensors
        assert any(name.endswith("data.pkl") for name in zf.namelist())
