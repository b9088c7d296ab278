"""The submitit executor on a real Slurm (.ci/slurm-up.sh brings up a single-node cluster with
partition `debug` and no accounting, so `sacct` is not available: the executor must watch the
queue with squeue). Without a Slurm that answers, these tests skip (the no-sbatch tests run).

Shown here: records identical to inline; a failing TrainJob fails its EvalJobs with its reason,
exit 1, nothing left in the queue; `scancel` (plain and -s KILL, of a running and of a pending
job) fails only that job's cells within a bounded time and a rerun completes them; exiting the
coordinator (SIGTERM, Ctrl-C) cancels its queued jobs; the --slurm-* options reach sbatch
(`scontrol show job`, `scontrol write batch_script`); a bad partition exits 2 naming
--slurm-partition; no sbatch on the PATH exits 2."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .test_executors import comparable

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"


@functools.lru_cache(maxsize=1)
def _slurm_answers() -> str | None:
    """None when a Slurm with an up partition `debug` answers, else why not (asked once, when the
    first Slurm test runs, so collecting this file costs nothing without Slurm)."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "no Slurm commands on the PATH (.ci/slurm-up.sh brings up a single-node Slurm)"
    conf = os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if not Path(conf).is_file():
        return f"no Slurm configuration ({conf}); .ci/slurm-up.sh brings up a single-node Slurm"
    try:
        proc = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%a %T"], capture_output=True, text=True,
                              timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no Slurm partition debug answers ({proc.stderr.strip() or 'empty sinfo'}); run .ci/slurm-up.sh"
    if not any(ln.split()[0] == "up" and ln.split()[1] in ("idle", "mixed", "allocated")
               for ln in proc.stdout.splitlines() if len(ln.split()) == 2):
        return f"partition debug has no usable node: {proc.stdout.strip()}"
    return None


@pytest.fixture
def slurm():
    """Skips the test, saying why, where no Slurm answers."""
    why = _slurm_answers()
    if why is not None:
        pytest.skip(why)


needs_slurm = pytest.mark.usefixtures("slurm")


def _env(extra=None) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(extra or {})}


def cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "cdlbench", "run", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env or _env())


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdlbench", "run", *map(str, args)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiny_suite(tmp_path: Path, name: str, seeds=(0,), steps=60, samplers=1, **train) -> Path:
    spec = {"name": name, "version": 1, "seeds": list(seeds), "device": "cpu",
            "dataset": {"name": "dino", "n_train": 1000}, "model": {"name": "mlp", "width": 16, "blocks": 1},
            "train": {"steps": steps, "batch_size": 32, "lr": 1.0e-3, "log_every": 20, **train},
            "losses": [{"name": "ddpm"}],
            "samplers": [{"name": "ddpm", "steps": 10}, {"name": "picard", "drift": "ddpm", "steps": 10,
                                                         "tolerance": 0.1}][:samplers],
            "metrics": [{"name": "mmd", "bandwidth": 0.03, "n_samples": 100}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def slurm_ids(run_dir: Path) -> list[str]:
    """The Slurm jobs a run submitted (submitit's job folders are named by the job id)."""
    folder = run_dir / ".submitit"
    return sorted((p.name for p in folder.iterdir() if p.name.isdigit()), key=int) if folder.is_dir() else []


def queue_states(ids: list[str]) -> dict:
    """Slurm job id -> state, for those of `ids` still pending, running or completing."""
    if not ids:
        return {}
    proc = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True,
                          timeout=30)
    return dict(ln.split() for ln in proc.stdout.splitlines() if len(ln.split()) == 2)


def wait_for_states(run_dir: Path, want, timeout=120.0) -> dict:
    """Poll until `want(states)` holds for the run's jobs in the queue."""
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        states = queue_states(slurm_ids(run_dir))
        if want(states):
            return states
        time.sleep(0.3)
    raise AssertionError(f"queue never reached the wanted state: {states}")


def scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout


def failures(run_dir: Path) -> dict:
    path = run_dir / "failures.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    return {r["cell"]: r["reason"] for r in rows}


@pytest.fixture
def cancel_leftovers():
    """Run directories whose Slurm jobs are cancelled when the test ends, passed or not (a
    failing test must not leave jobs in the queue for the next one)."""
    runs: list[Path] = []
    yield runs
    ids = [i for run in runs for i in slurm_ids(run)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@needs_slurm
def test_no_accounting_is_the_case_tested():
    """The CI cluster has no slurmdbd: sacct fails, so the executor's queue watching is what works."""
    proc = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        pytest.skip("this Slurm has accounting (sacct answers); the no-sacct case is not exercised here")
    assert "accounting storage is disabled" in proc.stderr or proc.returncode != 0


@needs_slurm
def test_smoke_records_on_slurm_identical_to_inline(tmp_path, cancel_leftovers):
    """The smoke suite (one seed) through sbatch: the same records as inline, non-timing columns."""
    cancel_leftovers.append(tmp_path / "slurm")
    args = ["--seeds", "0", "--threads", 1, "--quiet"]
    inline = cli(SMOKE, "--out", tmp_path / "inline", "--cache", tmp_path / "cache-inline", *args)
    assert inline.returncode == 0, inline.stderr[-2000:]
    slurm = cli(SMOKE, "--out", tmp_path / "slurm", "--cache", tmp_path / "cache-slurm", *args,
                "--executor", "submitit", "--slurm-cluster", "slurm", "--slurm-partition", "debug")
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    assert "slurm backend" in slurm.stdout
    ours, ref = comparable(tmp_path / "slurm"), comparable(tmp_path / "inline")
    assert ours.keys() == ref.keys()
    diff = [k for k in ours if ours[k] != ref[k]]
    assert not diff, [(k, ours[k], ref[k]) for k in diff[:3]]
    assert len({c for c, _ in ours}) == 6
    assert len(slurm_ids(tmp_path / "slurm")) == 9           # 3 trainings + 6 evaluations, one Slurm job each
    wait_for_states(tmp_path / "slurm", lambda s: s == {}, timeout=30)   # jobs that wrote their result exit


@needs_slurm
@pytest.mark.parametrize("how", ["missing-init_from", "nan-loss"])
def test_failing_training_fails_its_evals_with_its_reason_and_leaves_nothing_queued(tmp_path, cancel_leftovers,
                                                                                   how):
    """Before: the EvalJobs (submitted at once with afterok) stayed PENDING with
    DependencyNeverSatisfied and the coordinator waited for ever."""
    if how == "missing-init_from":
        suite = tiny_suite(tmp_path, "badinit", samplers=2, init_from=str(tmp_path / "missing.pt"))
        expected = ["train.init_from", "missing.pt is not a file"]
    else:                                # an absurd learning rate: the loss is NaN within the first steps
        suite = tiny_suite(tmp_path, "nanloss", samplers=2, lr=1.0e30)
        expected = ["non-finite loss: loss became nan"]
    run = tmp_path / "run"
    cancel_leftovers.append(run)
    t0 = time.monotonic()
    proc = cli(suite, "--out", run, "--cache", tmp_path / "cache", "--executor", "submitit", "--quiet", timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 90
    failed = failures(run)
    assert len(failed) == 2
    for reason in failed.values():
        assert all(e in reason for e in expected), reason
    assert len(slurm_ids(run)) == 1                          # the evaluations were never queued
    wait_for_states(run, lambda s: s == {}, timeout=30)   # nothing pending; finished jobs exit


@needs_slurm
@pytest.mark.parametrize("running_signal,pending_signal,rerun", [("KILL", "TERM", True), ("TERM", "KILL", False)],
                         ids=["kill-running-cancel-pending", "cancel-running-kill-pending"])
def test_scancel_fails_only_its_cells_and_a_rerun_completes(tmp_path, cancel_leftovers, running_signal,
                                                           pending_signal, rerun):
    """Each job takes both CPUs, so one runs and the others pend. scancel one running and one
    pending training: exactly their cells fail (with the reason), within a bounded time, without
    sacct; the third completes; a rerun completes the two. Before: waited for ever."""
    suite = tiny_suite(tmp_path, "cancel", seeds=(0, 1, 2), steps=100)
    run, cache = tmp_path / "run", tmp_path / "cache"
    cancel_leftovers.append(run)
    args = [suite, "--out", run, "--cache", cache, "--executor", "submitit", "--slurm-cpus-per-job", 2, "--quiet"]
    coordinator = start(*args)
    try:
        states = wait_for_states(run, lambda s: len(s) == 3 and sorted(s.values()) == ["PENDING", "PENDING", "RUNNING"])
        running = next(i for i, st in states.items() if st == "RUNNING")
        pending = max(i for i, st in states.items() if st == "PENDING")
        assert "TimeLimit=01:00:00" in scontrol(running)    # the default per-job time limit
        cancelled_at = time.monotonic()
        subprocess.run(["scancel", "-s", running_signal, running], check=True, timeout=30)
        subprocess.run(["scancel", "-s", pending_signal, pending] if pending_signal != "TERM" else ["scancel", pending],
                       check=True, timeout=30)
        out, err = coordinator.communicate(timeout=300)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 1, err[-2000:]
    assert time.monotonic() - cancelled_at < 300     # the third seed's two jobs, and the 10 s grace
    failed = failures(run)
    assert len(failed) == 2, failed
    # a job cancelled while running may end as CANCELLED or, its batch script racing the cancel, FAILED
    pattern = re.compile(r"^Slurm job (\d+) (was cancelled \(scancel\)|ended as FAILED) without a result; rerun")
    matches = [pattern.match(r) for r in failed.values()]
    assert all(matches), failed
    assert {m.group(1) for m in matches} == {running, pending}
    assert len({c for c, _ in comparable(run)}) == 1        # the other seed's cell is complete
    wait_for_states(run, lambda s: s == {}, timeout=30)   # nothing pending; finished jobs exit
    if rerun:
        again = cli(*args, timeout=400)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "1 already complete" in again.stdout
        assert len({c for c, _ in comparable(run)}) == 3
        wait_for_states(run, lambda s: s == {}, timeout=30)   # nothing pending; finished jobs exit


@needs_slurm
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_options_reach_sbatch_and_exiting_the_coordinator_cancels_its_jobs(tmp_path, cancel_leftovers, sig):
    """Memory, QoS, constraint, GPU type, time, partition and setup lines in the job Slurm holds;
    then the coordinator is stopped: its running and pending jobs leave the queue. Before: the
    options did not exist, and a SIGTERM left the jobs queued."""
    suite = tiny_suite(tmp_path, "options", seeds=(0, 1), steps=100000)
    run = tmp_path / "run"
    cancel_leftovers.append(run)
    coordinator = start(suite, "--out", run, "--cache", tmp_path / "cache", "--executor", "submitit", "--quiet",
                        "--slurm-partition", "debug", "--slurm-cpus-per-job", 2, "--slurm-mem", "300M",
                        "--slurm-qos", "normal", "--slurm-constraint", "ci", "--slurm-gpu-type", "tiny",
                        "--slurm-gpus-per-job", 1, "--slurm-time", 7,
                        "--slurm-setup", "export CDLBENCH_SETUP_MARK=1", "--slurm-setup", "true # second line")
    try:
        states = wait_for_states(run, lambda s: sorted(s.values()) == ["PENDING", "RUNNING"])
        running = next(i for i, st in states.items() if st == "RUNNING")
        shown = scontrol(running)
        for field in ("Partition=debug", "MinMemoryNode=300M", "Features=ci", "TimeLimit=00:07:00",
                      "gpu:tiny:1", "NumCPUs=2"):
            assert field in shown, (field, shown)
        script = subprocess.run(["scontrol", "write", "batch_script", running, "-"], capture_output=True,
                                text=True, timeout=30).stdout
        assert "#SBATCH --qos=normal" in script, script    # no accounting here: Slurm stores but ignores QoS
        assert "export CDLBENCH_SETUP_MARK=1\ntrue # second line" in script, script
        coordinator.send_signal(sig)
        out, err = coordinator.communicate(timeout=60)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 130, err[-2000:]
    assert "interrupted" in err
    wait_for_states(run, lambda s: s == {}, timeout=30)      # KillWait=5 s on the CI cluster


@needs_slurm
@pytest.mark.parametrize("where", ["option", "suite"])
def test_bad_partition_exits_2_naming_the_option(tmp_path, where):
    """Before: a submitit FailedJobError traceback, exit 1."""
    suite = tiny_suite(tmp_path, "badpart")
    extra = ["--slurm-partition", "debgu"]
    if where == "suite":
        spec = yaml.safe_load(suite.read_text())
        spec["executor"] = {"name": "submitit", "slurm_partition": "debgu"}
        suite.write_text(yaml.safe_dump(spec))
        extra = []
    proc = cli(suite, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--executor", "submitit", *extra,
               timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--slurm-partition" in proc.stderr and "'debgu'" in proc.stderr and "debug" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert slurm_ids(tmp_path / "run") == []


@pytest.mark.parametrize("cluster", [["--slurm-cluster", "slurm"], []], ids=["slurm-cluster-slurm", "default"])
def test_no_sbatch_on_the_path_exits_2(tmp_path, cluster):
    """Before: `--slurm-cluster slurm` died with submitit's RuntimeError traceback, and without it
    the jobs quietly ran as local subprocesses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    suite = tiny_suite(tmp_path, "nosbatch")
    env = _env({"PATH": str(bin_dir)})
    proc = subprocess.run([sys.executable, "-m", "cdlbench", "run", str(suite), "--out", str(tmp_path / "run"),
                           "--cache", str(tmp_path / "cache"), "--executor", "submitit", *cluster],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "`sbatch` is not on the PATH" in proc.stderr and "--slurm-cluster local" in proc.stderr
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_suite_executor_block_checks_the_new_slurm_keys(tmp_path):
    from cdlbench.suite import SuiteError, load_suite

    suite = tiny_suite(tmp_path, "keys")
    spec = yaml.safe_load(suite.read_text())
    spec["executor"] = {"name": "submitit", "slurm_mem": "8G", "slurm_qos": "high", "slurm_constraint": "a100",
                        "slurm_gpu_type": "a100", "slurm_setup": ["module load cuda"]}
    suite.write_text(yaml.safe_dump(spec))
    assert load_suite(suite).executor["slurm_setup"] == ["module load cuda"]
    for key, bad in [("slurm_mem", "8 gigs"), ("slurm_setup", "module load cuda"), ("slurm_gpu_type", "a100:2")]:
        spec["executor"] = {"name": "submitit", key: bad}
        suite.write_text(yaml.safe_dump(spec))
        with pytest.raises(SuiteError, match=f"executor.{key}"):
            load_suite(suite)
