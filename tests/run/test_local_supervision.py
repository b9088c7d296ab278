"""The local executor's workers are supervised (issue 25, promises 5, 8, 15 and 21, and the
default executor of "What must exist" 4). Real runs in subprocesses, real signals: a worker
killed while idle is replaced and nothing is lost; `kill -9` of the coordinator takes its
workers with it; Ctrl-C while the workers start exits 130 without a traceback from any of them;
progress in a log file is one plain line per job with the right counts; with no executor option
a run uses one single-threaded worker per CPU and gives the records of `--executor inline
--threads 1`."""
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
TIMING = {"wall_clock", "train_seconds"}

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")


def suite(tmp_path: Path, steps: int, seeds=(0,), samplers=None, name="supervised") -> Path:
    """A tiny Dino suite: one training per seed (width 16, `steps` steps), cheap samplers."""
    spec = {"name": name, "seeds": list(seeds), "device": "cpu",
            "dataset": {"name": "dino", "n_train": 500},
            "model": {"name": "mlp", "width": 16, "blocks": 1},
            "train": {"steps": steps, "batch_size": 32, "lr": 1.0e-3, "log_every": 10},
            "losses": [{"name": "ddpm"}],
            "samplers": samplers or [{"name": "ddpm", "steps": 10}, {"name": "ddpm", "steps": 12}],
            "metrics": [{"name": "mmd", "bandwidth": 0.03, "n_samples": 50}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if k != "CDLBENCH_EXECUTOR"}
    out.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out.update(extra)
    return out


def start(args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cdlbench", "run", *map(str, args)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def cli(*args, timeout=300, **extra):
    return subprocess.run([sys.executable, "-m", "cdlbench", "run", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env(**extra))


def children(pid: int) -> list[int]:
    """The spawned worker processes of a coordinator (its children running multiprocessing's spawn_main)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
            out.append(int(p.name))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])        # utime + stime


def wait_for_workers(proc: subprocess.Popen, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        found = children(proc.pid)
        if len(found) >= count:
            return found
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{count} workers never appeared: {found}"
        time.sleep(0.02)


def records(run_dir: Path) -> dict:
    """(cell, metric) -> record without env columns, timing values blanked."""
    out = {}
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] in TIMING:
            r["value"] = "timing"
        if r["metric"] == "_complete":
            r.pop("digest", None)
        out[(r["cell"], r["metric"])] = {k: v for k, v in r.items() if not k.startswith("env_")}
    return out


def complete(run_dir: Path) -> set:
    path = run_dir / "records.jsonl"
    if not path.exists():
        return set()
    return {json.loads(ln)["cell"] for ln in path.read_text().splitlines() if '"_complete"' in ln}


def reap(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ------------------------------------------------------------------ promise 5
def test_a_worker_killed_while_idle_is_replaced_and_no_job_is_lost(tmp_path):
    """One training (two cells) on two workers: the second worker idles while the first trains.
    Killed then, it is replaced with a message; both cells complete, exit 0."""
    path = suite(tmp_path, steps=4000)                # a few seconds of training on an idle machine
    run = tmp_path / "run"
    proc = start([path, "--out", run, "--cache", tmp_path / "cache", "--executor", "local", "--jobs", 2,
                  "--threads", 1])
    workers = []
    try:
        workers = wait_for_workers(proc, 2)
        for line in proc.stdout:                     # the training has started on one of them
            if "start train" in line:
                break
        deadline = time.monotonic() + 60
        while True:                                  # the busy one accumulates CPU time, the idle one does not
            assert proc.poll() is None, "the run ended before one worker was seen idle beside the busy one"
            before = {p: cpu_ticks(p) for p in workers}
            time.sleep(0.5)
            used = {p: cpu_ticks(p) - before[p] for p in workers}
            busy = [p for p in workers if used[p] >= 5]      # clock ticks (1/100 s): a loaded machine shares the CPU
            idle = [p for p in workers if used[p] <= 1]
            if len(busy) == 1 and len(idle) == 1:
                break
            assert time.monotonic() < deadline, used
        os.kill(idle[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        reap(workers)
    assert proc.returncode == 0, (out[-2000:], err[-3000:])
    assert f"(pid {idle[0]}) died while idle (killed by signal 9); started worker pid" in out, out
    assert len(complete(run)) == 2
    assert "(2 cells run, 0 already complete, 0 failed)" in out


# ------------------------------------------------------------------ promise 8
def test_kill_9_of_the_coordinator_ends_its_workers(tmp_path):
    path = suite(tmp_path, steps=200000, seeds=(0, 1))
    proc = start([path, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--executor", "local",
                  "--jobs", 2, "--threads", 1])
    workers = []
    try:
        workers = wait_for_workers(proc, 2)
        started = 0
        for line in proc.stdout:                     # both trainings running
            started += "start train" in line
            if started == 2:
                break
        time.sleep(1.0)
        assert all(alive(p) for p in workers)
        proc.kill()                                  # SIGKILL: no finally, no atexit in the coordinator
        proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if alive(p)], "workers outlived their coordinator"
    finally:
        reap(workers)


# ------------------------------------------------------------------ promise 15
def test_ctrl_c_while_workers_start_exits_130_without_worker_tracebacks(tmp_path):
    """Ctrl-C from a terminal reaches the whole foreground process group: the coordinator and
    its workers, here while they are still importing torch."""
    path = suite(tmp_path, steps=200000, seeds=(0, 1))
    proc = start([path, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--executor", "local",
                  "--jobs", 2, "--threads", 1], start_new_session=True)
    workers = []
    try:
        workers = wait_for_workers(proc, 2)
        time.sleep(0.3)                              # inside the workers' start-up (imports)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
        reap(workers)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert not [p for p in workers if alive(p)]


def test_ctrl_c_mid_run_stops_the_training_workers_at_once_and_quietly(tmp_path):
    """The workers ignore SIGINT, so the coordinator stops them (busy ones are killed): exit 130
    within seconds, no traceback, no warning about leaked semaphores (tqdm's lock in a killed worker)."""
    path = suite(tmp_path, steps=200000, seeds=(0, 1))
    proc = start([path, "--out", tmp_path / "run", "--cache", tmp_path / "cache", "--executor", "local",
                  "--jobs", 2, "--threads", 1], start_new_session=True)
    workers = []
    try:
        workers = wait_for_workers(proc, 2)
        started = 0
        for line in proc.stdout:
            started += "start train" in line
            if started == 2:
                break
        deadline = time.monotonic() + 120            # both training: well past their imports (about 2 CPU s)
        while min(cpu_ticks(p) for p in workers) < 400:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        reap(workers)
    assert proc.returncode == 130, err[-3000:]
    assert took < 10, took
    assert "Traceback" not in err and "Warning" not in err and "leaked" not in err, err[-3000:]
    assert not [p for p in workers if alive(p)]


# ------------------------------------------------------------------ promise 21
def test_progress_in_a_log_file_is_plain_lines_with_the_right_counts(tmp_path):
    """Output to files (not a terminal): no carriage-return progress bars, one line per job
    start and end, and a job being started is counted as running."""
    path = suite(tmp_path, steps=300, samplers=[{"name": "ddpm", "steps": 10}])
    log_out, log_err = tmp_path / "out.log", tmp_path / "err.log"
    with open(log_out, "w") as so, open(log_err, "w") as se:
        proc = subprocess.run([sys.executable, "-m", "cdlbench", "run", str(path), "--out", str(tmp_path / "run"),
                               "--cache", str(tmp_path / "cache"), "--executor", "inline", "--threads", "1"],
                              cwd=ROOT, env=env(), stdout=so, stderr=se, timeout=300)
    out, err = log_out.read_bytes().decode(), log_err.read_bytes().decode()     # bytes: read_text turns \r into \n
    assert proc.returncode == 0, err[-2000:]
    assert "\r" not in out + err, (out + err)[:500]
    assert "%|" not in err and len(err) < 200, err[:500]          # no progress bar at all
    job_lines = [ln for ln in out.splitlines() if ln.startswith("[jobs: ")]
    assert job_lines == ["[jobs: 0 done, 1 running, 1 queued] start train dino[n_train=500]/mlp[width=16,blocks=1]/"
                         "ddpm/seed=0",
                         "[jobs: 1 done, 0 running, 1 queued] done train dino[n_train=500]/mlp[width=16,blocks=1]/"
                         "ddpm/seed=0",
                         "[jobs: 1 done, 1 running, 0 queued] start eval dino[n_train=500]/mlp[width=16,blocks=1]/"
                         "ddpm/ddpm[steps=10]/seed=0",
                         "[jobs: 2 done, 0 running, 0 queued] done eval dino[n_train=500]/mlp[width=16,blocks=1]/"
                         "ddpm/ddpm[steps=10]/seed=0"], out


# ------------------------------------------------------------------ "What must exist" 4
def test_the_default_executor_uses_one_single_threaded_worker_per_cpu(tmp_path):
    """No executor option: min(CPUs, jobs) local workers with one torch thread each (or inline,
    one thread, where that is one worker); the records equal `--executor inline --threads 1`'s
    and say `1 threads`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    path = suite(tmp_path, steps=100, seeds=(0, 1))            # 2 trainings, 4 cells: 6 jobs
    default = cli(path, "--out", tmp_path / "default", "--cache", tmp_path / "cache-default")
    assert default.returncode == 0, default.stderr[-2000:]
    workers = min(cpus, 6)
    want = (f"6 job(s) to run with local ({workers} worker(s), 1 torch thread(s) each)" if workers > 1 else
            "6 job(s) to run with inline (1 worker(s), 1 torch thread(s) each)")
    assert want in default.stdout, default.stdout[:500]
    inline = cli(path, "--out", tmp_path / "inline", "--cache", tmp_path / "cache-inline", "--threads", 1,
                 CDLBENCH_EXECUTOR="inline")                  # $CDLBENCH_EXECUTOR replaces the default
    assert inline.returncode == 0, inline.stderr[-2000:]
    assert "6 job(s) to run with inline (1 worker(s), 1 torch thread(s) each)" in inline.stdout
    assert records(tmp_path / "default") == records(tmp_path / "inline")
    devices = {json.loads(ln)["env_device"] for ln in (tmp_path / "default" / "records.jsonl").read_text().splitlines()}
    assert devices and all(d.endswith(", 1 threads)") for d in devices), devices
    bad = cli(path, "--out", tmp_path / "bad", CDLBENCH_EXECUTOR="fast")
    assert bad.returncode == 2 and "$CDLBENCH_EXECUTOR" in bad.stderr and "fast" in bad.stderr
