"""Hostile storage (issue 25, round 3 of hostile testing, promises 1, 3, 4, 6, 7, 9, 10, 12 and 16):
symlinks planted in a run directory, FIFOs and directories where files belong, a read-only or
full checkpoint cache, damaged Adam states and snapshots, an init_from file that changed or is
a directory or a 33 GiB sparse file, corrupt samples files. Real files, real mounts (where this
process may mount: root; otherwise the read-only case falls back to permissions), real runs of a
tiny suite (20 training steps, width 16: seconds each)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import cdlbench
import fault_components
from cdlbench.cli import cli
from cdlbench.losses.base import LossOutput
from cdlbench.registry import LOSSES
from cdlbench.run.coordinator import Runner, samples_file
from cdlbench.run.plan import TrainJob, plan
from cdlbench.run.rundir import RunDir
from cdlbench.run.train_job import checkpoint_path, optimizer_path, snapshot_path
from cdlbench.run.verify import repair_run
from cdlbench.suite import parse_suite

PACKAGE_ROOT = Path(cdlbench.__file__).resolve().parents[1]
TIMING = {"wall_clock", "train_seconds"}

SMALL = copy.deepcopy(fault_components.TINY_SUITE)
SMALL.update(seeds=[0], losses=[{"name": "ddpm"}], samplers=[{"name": "ddpm", "steps": 20}])


def small(**changes) -> dict:
    data = copy.deepcopy(SMALL)
    data.update(changes)
    return data


def run_suite(data: dict, out: Path, cache: Path):
    """Run a suite in-process; (summary, log lines)."""
    lines = []
    runner = Runner(parse_suite(copy.deepcopy(data), file="test-suite.yaml"), out, device="cpu", cache_dir=cache,
                    progress=False, log=lines.append, threads=1)
    return runner.execute(), lines


def comparable(records: list[dict]) -> dict:
    """(cell, metric, metric params) -> the row without env_* columns and timing values."""
    out = {}
    for r in records:
        row = {k: v for k, v in r.items() if not k.startswith("env_")}
        if row["metric"] in TIMING:
            row.pop("value")
        out[(row["cell"], row["metric"], json.dumps({k: v for k, v in row.items() if k.startswith("p_metric_")}))] = row
    return out


def write_suite(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(args) -> "click.testing.Result":
    return CliRunner().invoke(cli, [str(a) for a in args])


def cli_subprocess(args, timeout: float = 30) -> subprocess.CompletedProcess:
    """`python -m cdlbench ARGS` in a fresh process, killed after `timeout` seconds (a hang fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "cdlbench", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=PACKAGE_ROOT, timeout=timeout)


def tree(path: Path) -> dict:
    """Every entry below path (links as links): name -> bytes, link target or 'dir'."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


# ------------------------------------------------------------------ promise 1: symlinks
def test_symlinked_temporaries_and_backups_are_not_followed(tmp_path):
    """Symlinks at the fixed temporary names of config.yaml, of repair and of a samples file,
    and dangling symlinks at repair's backup names: a resuming run and repair neither write
    through them nor create files outside the run directory."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    summary, _ = run_suite(SMALL, out, cache)
    assert not summary.failed
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("precious")
    names = ["config.yaml.tmp", f".config.yaml.{os.getpid()}.tmp", ".records.jsonl.repair.tmp",
             ".curves.jsonl.repair.tmp", ".failures.jsonl.repair.tmp"]
    for name in names:
        (out / name).symlink_to(victim)
    next_cell = summary.done[0].replace("seed=0", "seed=1")
    sample = samples_file(out, next_cell)
    sample.with_name(sample.stem + ".tmp.npz").symlink_to(victim)
    summary, _ = run_suite(small(seeds=[0, 1]), out, cache)          # resume: config.yaml rewritten, a cell added
    assert not summary.failed and summary.done == [next_cell]
    assert victim.read_bytes() == b"precious"
    assert not (out / "config.yaml").is_symlink() and yaml.safe_load((out / "config.yaml").read_text())["seeds"] == [0, 1]
    assert sample.is_file() and not sample.is_symlink()
    # repair with damage to rewrite, and dangling links at the backup names of this second
    stamp = "20260101-000000"
    with open(out / "records.jsonl", "ab") as fh:
        fh.write(b'{"cell": "x", "metric": "garbage"}\n')
    for i, name in enumerate([f"records.jsonl.bak-{stamp}"] + [f"records.jsonl.bak-{stamp}-{k}" for k in (1, 2, 3)]):
        (out / name).symlink_to(outside / f"created{i}")
    before = tree(outside)
    result = repair_run(out, stamp=stamp)
    assert result.rewritten and not result.after.damaged
    assert tree(outside) == before                                  # nothing written, created or deleted outside
    for name in ("records.jsonl", "curves.jsonl", "config.yaml"):
        assert not (out / name).is_symlink()
    bak = result.rewritten[0][1]
    assert bak.parent == out and bak.is_file() and not bak.is_symlink() and b"garbage" in bak.read_bytes()


@pytest.mark.parametrize("name", ["records.jsonl", "config.yaml", "curves.jsonl", "samples", ".lock"])
def test_symlinked_run_files_are_refused_with_exit_2(tmp_path, name):
    """records.jsonl, config.yaml, curves.jsonl, samples/ or .lock a symlink to a place outside:
    `run` (resuming) and `repair` refuse with exit 2 naming the path; nothing outside changes
    (no write, no truncation, no deleted `*.tmp.npz` in a linked samples folder)."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    summary, _ = run_suite(small(losses=[{"name": "ddpm"}, {"name": "itd"}],
                                 samplers=[{"name": "picard", "steps": 20, "tolerance": 0.1}]), out, cache)
    assert not summary.failed
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / name
    if (out / name).exists():
        shutil.move(out / name, target)
    else:
        target.write_text("precious")
    if name == "samples":
        (target / "keep.tmp.npz").write_text("not the run's")
    if name == ".lock":
        target.write_text("precious")
    (out / name).symlink_to(target)
    suite = write_suite(tmp_path / "tiny.yaml", small(losses=[{"name": "ddpm"}, {"name": "itd"}],
                                                      samplers=[{"name": "picard", "steps": 20, "tolerance": 0.1}]))
    before = tree(outside)
    for args in (["run", suite, "--out", out, "--cache", cache, "--quiet", "--seeds", "0,1"], ["repair", out]):
        result = invoke(args)
        assert result.exit_code == 2, (args[0], result.output, result.exception)
        assert str(out / name) in result.output and "symbolic link" in result.output, result.output
        assert tree(outside) == before, args[0]


# ------------------------------------------------------------------ promise 3: read-only or full cache
def _mount(*args) -> bool:
    return shutil.which("mount") is not None and \
        subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


@contextmanager
def unwritable(where: Path, how: str):
    """`where` read-only (a read-only bind mount; without root, no write permission) or full (a
    tiny tmpfs filled to the last byte); skips when this machine allows neither."""
    where.mkdir(parents=True, exist_ok=True)
    undo = []
    try:
        if how == "read-only":
            if _mount("--bind", where, where):
                undo.append(["umount", str(where)])
                if not _mount("-o", "remount,ro,bind", where):
                    subprocess.run(undo.pop(), capture_output=True)
            if not undo:
                if os.geteuid() == 0:
                    pytest.skip("cannot make a read-only mount here")
                where.chmod(0o555)
        else:
            if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", where):
                pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
            undo.append(["umount", str(where)])
            fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        with pytest.raises(OSError):                 # really unwritable
            (where / "probe").write_bytes(b"x" * 8192)
        yield
    finally:
        for cmd in undo:
            subprocess.run(cmd, capture_output=True)
        where.chmod(0o755)


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_unwritable_checkpoint_cache_warns_and_evaluates_from_memory(tmp_path, how):
    """A training that saves its resumable state (checkpoint_every 10 of 20 steps) with a
    read-only or full cache: the saves warn, the model is evaluated from memory, the records are
    those of a run with a writable cache."""
    data = small(train={**SMALL["train"], "checkpoint_every": 10})
    reference, _ = run_suite(data, tmp_path / "reference", tmp_path / "reference-cache")
    assert not reference.failed
    cache = tmp_path / "cache"
    with unwritable(cache, how):
        with pytest.warns(UserWarning, match="training state"):
            summary, lines = run_suite(data, tmp_path / "run", cache)
    assert not summary.failed, summary.failed
    assert any("cannot write the checkpoint cache" in line for line in lines), lines
    assert comparable(RunDir(tmp_path / "run").load_records()) == \
        comparable(RunDir(tmp_path / "reference").load_records())


# ------------------------------------------------------------------ promise 4: Adam state
FINETUNE = {"name": "ft", "version": 1, "seeds": [0], "dataset": {"name": "8gaussians", "n_train": 1000},
            "model": {"name": "mlp", "width": 16, "blocks": 1}, "losses": [{"name": "ddpm"}],
            "samplers": [{"name": "ddpm", "steps": 10}],
            "metrics": [{"name": "mmd", "bandwidth": 0.03, "n_samples": 100}],
            "train": {"steps": 30, "batch_size": 32, "lr": 1e-4, "ema": 0.9,
                      "init_from": {"loss": "ddpm", "train": {"steps": 40, "batch_size": 32, "lr": 1e-3},
                                    "resume_optimizer": True}}}


def _largest_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    found = [t for t in (_largest_tensor(v) for v in values) if t is not None]
    return max(found, key=lambda t: t.numel()) if found else None


@pytest.mark.parametrize("damage", ["truncated", "bit rot"])
def test_truncated_or_bit_rotted_adam_state_is_retrained(tmp_path, damage):
    """The cached Adam state of a pretraining whose fine-tune resumes it, damaged: detected by its
    digest, the pretraining retrained, the fine-tune's records those of the undamaged run (not an
    OSError, not silently other numbers)."""
    cache = tmp_path / "cache"
    first, _ = run_suite(FINETUNE, tmp_path / "first", cache)
    assert not first.failed
    want = comparable(RunDir(tmp_path / "first").load_records())
    pre = next(j for j in plan(parse_suite(copy.deepcopy(FINETUNE), file="ft.yaml"), cache_dir=cache)
               if isinstance(j, TrainJob) and not j.depends_on)
    adam = optimizer_path(cache, pre.key, torch.device("cpu"))
    keep = {checkpoint_path(cache, pre.key, torch.device("cpu")), adam}
    assert all(p.is_file() for p in keep)
    for f in cache.iterdir():                    # the fine-tune retrains from the cached pretraining
        if f not in keep:
            f.unlink()
    raw = adam.read_bytes()
    if damage == "truncated":
        adam.write_bytes(raw[: len(raw) // 2])
    else:
        fault_components.flip_tensor_byte(adam, _largest_tensor(torch.load(adam, weights_only=True)))
    summary, lines = run_suite(FINETUNE, tmp_path / "second", cache)
    assert not summary.failed, summary.failed
    assert any("Adam" in line and "retraining" in line for line in lines), lines
    assert comparable(RunDir(tmp_path / "second").load_records()) == want


# ------------------------------------------------------------------ promise 6: init_from changed
def test_changed_init_from_file_refuses_to_mix_cells(tmp_path):
    """A resume after the content of the init_from file changed: exit 2 naming train.init_from and
    the file (the complete cells were trained from the old content), nothing recorded lost; with
    the file restored the run resumes."""
    cache = tmp_path / "cache"
    summary, _ = run_suite(small(seeds=[0, 1]), tmp_path / "pre", cache)
    assert not summary.failed
    weights = sorted(p for p in cache.glob("*-cpu.pt"))
    assert len(weights) == 2
    init = tmp_path / "init.pt"
    shutil.copy(weights[0], init)
    data = small(train={**SMALL["train"], "init_from": str(init)})
    suite = write_suite(tmp_path / "ft.yaml", data)
    out = tmp_path / "run"
    args = ["run", suite, "--out", out, "--cache", cache, "--quiet"]
    assert invoke(args).exit_code == 0
    records = (out / "records.jsonl").read_bytes()
    shutil.copy(weights[1], init)                # other weights at the same path
    result = invoke(args + ["--seeds", "0,1"])
    assert result.exit_code == 2, result.output
    assert "train.init_from" in result.output and str(init) in result.output, result.output
    assert (out / "records.jsonl").read_bytes() == records
    shutil.copy(weights[0], init)                # restored: resumes
    result = invoke(args + ["--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "1 already complete" in result.output


# ------------------------------------------------------------------ promise 7: FIFOs
def test_fifo_run_files_are_refused_in_bounded_time(tmp_path):
    """A FIFO at records.jsonl (report, run) or curves.jsonl (verify, report --format html):
    exit 2 naming it within seconds; a FIFO is never opened for reading (which would block)."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert not run_suite(SMALL, out, cache)[0].failed
    suite = write_suite(tmp_path / "tiny.yaml", SMALL)
    records = out / "records.jsonl"
    saved = records.read_bytes()
    records.unlink()
    os.mkfifo(records)
    for args in (["report", out], ["run", suite, "--out", out, "--cache", cache, "--quiet"]):
        done = cli_subprocess(args)
        assert done.returncode == 2, (args[0], done.stderr[-2000:])
        assert str(records) in done.stderr and "not a regular file" in done.stderr, done.stderr[-2000:]
    records.unlink()
    records.write_bytes(saved)
    curves = out / "curves.jsonl"
    curves.unlink(missing_ok=True)
    os.mkfifo(curves)
    for args in (["verify", out], ["report", out, "--format", "html"]):
        done = cli_subprocess(args)
        assert done.returncode == 2, (args[0], done.stderr[-2000:])
        assert str(curves) in done.stderr and "not a regular file" in done.stderr, done.stderr[-2000:]


# ------------------------------------------------------------------ promise 9: damaged snapshot
FLAKY = {"stop_at": None}


class FlakyDDPM:
    """The DDPM loss, raising at its call FLAKY['stop_at'] (an interruption mid-training)."""

    def __init__(self):
        self.inner = LOSSES.build("ddpm", {})
        self._calls = 0

    def __call__(self, denoiser, x0, *, generator, **kw) -> LossOutput:
        if self._calls == FLAKY["stop_at"]:
            raise RuntimeError(f"interrupted at step {self._calls}")
        self._calls += 1
        return self.inner(denoiser, x0, generator=generator, **kw)


@pytest.fixture
def flaky_loss():
    LOSSES.names()
    LOSSES.register("flaky_ddpm")(FlakyDDPM)
    yield
    LOSSES.unregister("flaky_ddpm")
    FLAKY["stop_at"] = None


def test_corrupt_snapshot_after_an_interruption_is_retrained(tmp_path, flaky_loss):
    """A training interrupted at step 40 (snapshot at 20 written, resumable state at 30), the
    snapshot file damaged before the resume: the resume retrains (the state past the bad
    snapshot is not resumed) and both cells complete."""
    data = small(losses=[{"name": "flaky_ddpm"}],
                 train={**SMALL["train"], "steps": 50, "snapshots": [20, 50], "checkpoint_every": 30})
    out, cache = tmp_path / "run", tmp_path / "cache"
    FLAKY["stop_at"] = 40
    summary, _ = run_suite(data, out, cache)
    assert len(summary.failed) == 2 and "interrupted at step 40" in summary.failed[0][1]
    job = next(j for j in plan(parse_suite(copy.deepcopy(data), file="x.yaml"), cache_dir=cache)
               if isinstance(j, TrainJob))
    snap = snapshot_path(cache, job.key, 20, torch.device("cpu"))
    assert snap.is_file() and list(cache.glob("*.train-state.pt"))
    raw = snap.read_bytes()
    snap.write_bytes(raw[: len(raw) // 2])
    FLAKY["stop_at"] = None
    summary, _ = run_suite(data, out, cache)
    assert not summary.failed, summary.failed
    assert len(summary.done) == 2
    # the records equal those of an uninterrupted run
    clean, _ = run_suite(data, tmp_path / "clean", tmp_path / "clean-cache")
    assert not clean.failed
    assert comparable(RunDir(out).load_records()) == comparable(RunDir(tmp_path / "clean").load_records())


# ------------------------------------------------------------------ promise 10: init_from bounded
def test_init_from_type_and_size_are_checked_before_hashing(tmp_path):
    """init_from a 33 GiB sparse file, or a directory holding one: refused at once (not after
    reading 33 GiB to hash it)."""
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:
        fh.truncate(33 << 30)
    folder = tmp_path / "folder"
    folder.mkdir()
    with open(folder / "inner.pt", "wb") as fh:
        fh.truncate(33 << 30)
    for path, why in [(big, "bytes; at most"), (folder, "is not a file")]:
        started = time.monotonic()
        summary, _ = run_suite(small(train={**SMALL["train"], "init_from": str(path)}), tmp_path / "runs" / path.name,
                               tmp_path / "cache")
        elapsed = time.monotonic() - started
        assert summary.failed and why in summary.failed[0][1], summary.failed
        assert elapsed < 10, f"{path.name}: refused after {elapsed:.1f} s"


# ------------------------------------------------------------------ promise 12: corrupt samples
def test_corrupt_samples_npz_is_reported_repaired_and_skipped_by_plots(tmp_path):
    """A truncated samples/*.npz: verify reports it (exit 1, naming it), report --format html and
    --plots skip it with a warning naming it (no traceback), repair moves it aside (kept under a
    backup name), after which verify is clean."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert not run_suite(SMALL, out, cache)[0].failed
    npz = next((out / "samples").glob("*.npz"))
    raw = npz.read_bytes()
    npz.write_bytes(raw[: len(raw) // 2])
    result = invoke(["verify", out])
    assert result.exit_code == 1 and npz.name in result.output, result.output
    for extra in (["--format", "html"], ["--plots", tmp_path / "plots"]):
        result = invoke(["report", out, *extra])          # warnings reach stderr as 'warning: ...' lines
        assert result.exit_code == 0 and result.exception is None, (extra, result.output, result.exception)
        warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert any(npz.name in line for line in warned), (extra, result.stderr)
    result = invoke(["repair", out])
    assert result.exit_code == 0, result.output
    assert not npz.exists()
    kept = [p for p in npz.parent.iterdir() if p.name.startswith(npz.name + ".bak-")]
    assert len(kept) == 1 and kept[0].read_bytes() == raw[: len(raw) // 2]
    assert invoke(["verify", out]).exit_code == 0


# ------------------------------------------------------------------ promise 16: records.jsonl a directory
def test_records_jsonl_directory_is_refused_by_run_and_report(tmp_path):
    """records.jsonl a directory: run and report exit 2 naming it (as verify and repair do)."""
    out = tmp_path / "run"
    assert not run_suite(SMALL, out, tmp_path / "cache")[0].failed
    (out / "records.jsonl").unlink()
    (out / "records.jsonl").mkdir()
    suite = write_suite(tmp_path / "tiny.yaml", SMALL)
    for args in (["run", suite, "--out", out, "--cache", tmp_path / "cache", "--quiet"], ["report", out],
                 ["verify", out], ["repair", out]):
        result = invoke(args)
        assert result.exit_code == 2, (args[0], result.output, result.exception)
        assert str(out / "records.jsonl") in result.output and "not a regular file" in result.output, result.output
