"""Faults inside the exit-code contract: a diverged sampler fails its cell (exit 1); an unusable
run directory is a usage error (exit 2); a full disk in the middle of a run fails the cells it
hits, keeps what was recorded, and a rerun with space gives the clean records; a read-only cache
still evaluates the trained model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cdlbench import SAMPLERS
from cdlbench.cli import cli
from cdlbench.run.coordinator import Runner
from cdlbench.samplers.base import SampleResult
from cdlbench.specs import SamplerSpec
from cdlbench.suite import parse_suite

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "faults", "seeds": [0, 1], "device": "cpu", "dataset": {"name": "8gaussians", "n_train": 400},
        "model": {"name": "mlp", "width": 16, "blocks": 1}, "train": {"steps": 20, "batch_size": 32},
        "losses": {"name": "ddpm"}, "samplers": {"name": "ddpm", "steps": 10},
        "metrics": {"name": "mmd", "bandwidth": 0.5, "n_samples": 64}}


def nan_sample(denoiser, x_T, *, generator=None, steps: int = 5):
    """Diverges: every sample NaN."""
    return SampleResult(torch.full_like(x_T, float("nan")), nfe=steps, iterations=steps, converged=True, wall_s=0.0)


@pytest.fixture
def nan_sampler():
    SAMPLERS.names()
    SAMPLERS.register("all_nan", spec=SamplerSpec(grid="ddpm", conditional=False,
                                                  nfe=lambda p: (p["steps"], False)))(nan_sample)
    yield "all_nan"
    SAMPLERS.unregister("all_nan")


def test_diverged_sampler_fails_its_cell(nan_sampler, tmp_path):
    suite = parse_suite({**TINY, "seeds": [0], "samplers": [{"name": "all_nan"}, {"name": "ddpm", "steps": 10}]})
    summary = Runner(suite, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, log=None,
                     threads=1).execute()
    (cell, reason), = summary.failed
    assert "all_nan" in cell and "sampler produced 64 non-finite samples" in reason
    assert len(summary.done) == 1                        # the healthy cell still ran
    failures = [json.loads(x) for x in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert failures[0]["reason"] == reason
    rows = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert not any("all_nan" in r["cell"] for r in rows)   # never stored as a censored value


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_run_directory_is_a_usage_error(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        res = CliRunner().invoke(cli, ["run", str(_write(tmp_path, TINY)), "--out", str(out), "--quiet"])
    finally:
        out.chmod(0o700)
    assert res.exit_code == 2 and "cannot write" in res.output and "permission denied" in res.output.lower()


def test_run_directory_under_a_file_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = CliRunner().invoke(cli, ["run", str(_write(tmp_path, TINY)), "--out", str(blocker / "run"), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "cannot write" in res.output and str(blocker) in res.output and "Traceback" not in res.output


def test_read_only_cache_still_evaluates(tmp_path, monkeypatch):
    import cdlbench.run.train_job as tj

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "cache"))

    monkeypatch.setattr(tj, "save_checkpoint", refuse)
    logs = []
    summary = Runner(parse_suite({**TINY, "seeds": [0]}), tmp_path / "run", cache_dir=tmp_path / "cache",
                     progress=False, log=logs.append, threads=1).execute()
    assert summary.done and not summary.failed
    assert any("cannot write the checkpoint cache" in line for line in logs)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_full_disk_mid_run_then_rerun_with_space(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "400k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        spec = {**TINY, "seeds": [0, 1, 2, 3, 4, 5]}
        suite = _write(tmp_path, spec)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "cdlbench", "run", str(suite), "--out", str(disk / "run"), "--cache",
               str(tmp_path / "cache"), "--threads", "1", "--quiet"]
        # fill the disk but a little, so that config.yaml and the first records fit, the rest do not
        filler = disk / "filler"
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (400 * 1024 - 24 * 1024))
        first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert first.returncode in (1, 2), first.stderr
        assert "Traceback" not in first.stderr, first.stderr[-3000:]
        assert "disk is full" in first.stderr or "No space left" in first.stderr
        filler.unlink()
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        verify = subprocess.run([sys.executable, "-m", "cdlbench", "verify", str(disk / "run")], capture_output=True,
                                text=True, cwd=ROOT, env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        rows = [json.loads(x) for x in (disk / "run" / "records.jsonl").read_text().splitlines()]
        assert len({r["cell"] for r in rows}) == 6
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # long enough that the signal cannot arrive after the run ended
    slow = {**TINY, "train": {"steps": 200000, "batch_size": 32}}
    # a user's terminal delivers Ctrl-C; a test run from a background job (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: reset it
    proc = subprocess.Popen([sys.executable, "-m", "cdlbench", "run", str(_write(tmp_path, slow)), "--out",
                             str(tmp_path / "run"), "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.8)                 # inside start-up (importing torch and the components), at worst early training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "interrupted" in err
