"""The run engine's executors give the same records: inline, local worker processes, and
submitit's own local backend (real subprocesses through submitit's machinery); a worker killed
in the middle of a job loses only that job, and a rerun completes it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"
TIMING = {"wall_clock", "train_seconds"}          # the only figures allowed to differ between runs


def comparable(run_dir: Path) -> dict:
    """(cell, metric) -> record, timing values and commit digests blanked."""
    out = {}
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] in TIMING:
            r["value"] = "timing"
        if r["metric"] == "_complete":
            r.pop("digest", None)
        out[(r["cell"], r["metric"])] = r
    return out


def cli(*args, timeout=900, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cdlbench", "run", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def smoke_inline(tmp_path_factory):
    root = tmp_path_factory.mktemp("inline")
    proc = cli(SMOKE, "--out", root / "run", "--cache", root / "cache", "--threads", 1, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--executor", "local", "--jobs", "2"],
                                      ["--executor", "submitit", "--slurm-cluster", "local", "--jobs", "2"]],
                         ids=["local", "submitit"])
def test_smoke_records_identical_under_every_executor(smoke_inline, tmp_path, executor):
    proc = cli(SMOKE, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--threads", 1, "--quiet", *executor)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, inline = comparable(tmp_path / "run"), comparable(smoke_inline)
    assert ours.keys() == inline.keys()
    diff = [k for k in ours if ours[k] != inline[k]]
    assert not diff, [(k, ours[k], inline[k]) for k in diff[:3]]
    assert len({c for c, _ in ours}) == 12


def _suite(tmp_path: Path, steps: int) -> Path:
    spec = yaml.safe_load(SMOKE.read_text())
    spec.update(name="killable", seeds=[0, 1], losses=[{"name": "ddpm"}],
                samplers=[{"name": "ddpm", "steps": 20}], metrics=[{"name": "mmd", "bandwidth": 0.03, "n_samples": 200}])
    spec["train"] = {"steps": steps, "batch_size": 64, "lr": 1.0e-3, "log_every": 100}
    path = tmp_path / "killable.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _workers(pid: int) -> list[int]:
    """The spawned worker processes of a coordinator (children running multiprocessing's spawn)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "spawn_main" in cmd:
            out.append(int(p.name))
    return sorted(out)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_killed_worker_loses_only_its_job_and_a_rerun_completes(tmp_path):
    suite = _suite(tmp_path, steps=6000)
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = [suite, "--out", run, "--cache", cache, "--threads", 1, "--executor", "local", "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cdlbench", "run", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:                  # both trainings started: kill the first worker mid-job
        lines.append(line)
        if sum("start train" in ln for ln in lines) == 2:
            break
    time.sleep(1.0)
    workers = _workers(proc.pid)
    assert len(workers) == 2, (workers, lines)
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-2000:]
    assert "died in the middle of the job (killed by signal 9)" in err
    first = comparable(run)
    assert len({c for c, _ in first}) == 1             # the other model's cell finished

    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 already complete" in again.stdout
    clean = tmp_path / "clean"
    ref = cli(suite, "--out", clean, "--cache", tmp_path / "cache2", "--threads", 1)
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert comparable(run) == comparable(clean)
