"""`cdlbench verify RUN_DIR` and `cdlbench repair RUN_DIR` (issue 14).

verify reads a run directory with the rules of cdlbench/run/rundir.py and lists what is wrong,
each with file and line: unreadable lines, rows of interrupted writes, rejected (damaged)
markers, groups of another suite configuration, superseded groups, curve rows of cells that are
not complete or rewritten by a rerun, a missing or unreadable config.yaml. Legacy markers (no
digest) and leftover temporary files are notes, not damage.

repair rewrites records.jsonl to its clean form: the winning complete group of each cell (the
last complete one in the file), in file order, each ending with a new-format marker (legacy
markers get their digest, and config.yaml's config_hash when there is a config.yaml), nothing
else; curves.jsonl to the curve rows of those cells (the last row per cell, metric, x and
metric parameters); failures.jsonl without its unreadable lines. Each file is written to a
temporary file (an unpredictable name, created exclusively), fsynced and renamed over the old
one, after the old one was kept as `<name>.bak-<timestamp>-<random>` (created exclusively: a
planted link at a backup name is never followed); a file that is already clean is left alone. An
unreadable samples file (samples/*.npz: truncated, bit rot) is verify's damage too; repair
moves it aside to such a backup name (plots skip a missing one). A run directory whose files
are symbolic links or not regular files is refused (exit 2) before anything is written. It
holds the run lock, so it never races a `cdlbench run`. The repaired files are plain JSON lines
(`pandas.read_json(path, lines=True)` loads them).
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .lock import RunLock
from .rundir import (TEMPORARY_PATTERNS, CorruptSamples, Issue, RunDir, RunDirMismatch, RunDirUnwritable,
                     UnsafeRunFile, _fsync_dir, _ListSink, check_regular, iter_jsonl, open_regular, read_samples,
                     rows_digest, write_atomic)


class NotARunDirectory(UserError, ValueError):
    """The path is not a run directory (no records.jsonl and no config.yaml)."""


@dataclass
class Verification:
    run_dir: Path
    cells: int = 0
    legacy: int = 0
    problems: list = field(default_factory=list)     # Issue: damage (verify exits 1)
    notes: list = field(default_factory=list)        # str: no damage

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def text(self) -> str:
        head = f"{self.run_dir}: {self.cells} complete cell(s)"
        if not self.problems:
            lines = [f"{head}; no damage found"]
        else:
            lines = [f"{head}; DAMAGED: {len(self.problems)} problem(s)"]
            lines += [f"  {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            lines.append(f"`cdlbench repair {self.run_dir}` rewrites the files to their clean form (keeping "
                         f"backups); `cdlbench run` reruns the cells that are not complete")
        return "\n".join(lines) + "\n"


def _run_dir(path: str | Path, writing: bool = False) -> RunDir:
    """The run directory at path; NotARunDirectory (exit 2) when it is none, when one of its files
    is not a regular file (a FIFO is never opened), and when `writing`, when one is a link."""
    path = Path(path)
    if not path.is_dir():
        why = "no such directory" if not path.exists() else "not a directory"
        raise NotARunDirectory(f"{path}: not a run directory ({why})")
    run = RunDir(path)
    if not run.records.exists() and not run.config.exists():
        raise NotARunDirectory(f"{path}: not a run directory (no records.jsonl and no config.yaml)")
    if run.records.exists() and not run.records.is_file():
        raise NotARunDirectory(f"{run.records}: not a regular file")
    try:
        for f in (run.records, run.curves, run.failures, run.config):
            check_regular(f)
        if writing:
            run.check_files()
    except UnsafeRunFile as exc:
        raise NotARunDirectory(str(exc)) from None
    return run


def _samples(run: RunDir) -> list[Path]:
    """RUN_DIR/samples/*.npz (not temporaries); none when samples/ is not a real folder."""
    folder = run.path / "samples"
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz"))


def _samples_problems(run: RunDir) -> list[tuple[Path, str]]:
    out = []
    for p in _samples(run):
        try:
            read_samples(p)
        except CorruptSamples as exc:
            out.append((p, exc.reason))
    return out


def _config_problem(run: RunDir) -> Issue | None:
    try:
        cfg = run.existing_config()
    except RunDirMismatch as exc:
        return Issue(run.config, 0, "config", str(exc).split(": ", 1)[-1] + "; the run cannot be resumed")
    if cfg is None and run.records.exists() and run.records.stat().st_size:
        return Issue(run.config, 0, "config", "missing, while records.jsonl holds records; the run cannot be "
                                              "resumed (restore config.yaml)")
    return None


def _curve_key(r: dict) -> tuple:
    params = tuple(sorted((k, str(v)) for k, v in r.items() if k.startswith("p_metric_")))
    return (r.get("cell"), r.get("metric"), json.dumps(r.get("x")), params)


def _curve_problems(run: RunDir, scan) -> list[Issue]:
    done = {key[2]: key for key in scan.groups}
    out, orphans, seen = [], {}, {}
    for lineno, r, problem in iter_jsonl(run.curves, warn=False):
        if problem is not None:
            out.append(Issue(run.curves, lineno, "unreadable", f"{problem}; line ignored"))
            continue
        key = done.get(r.get("cell"))
        if key is None or ("suite" in r and r["suite"] != key[0]) or \
                ("suite_version" in r and r["suite_version"] != key[1]):
            orphans.setdefault(r.get("cell"), []).append(lineno)
            continue
        k = _curve_key(r)
        if k in seen:
            out.append(Issue(run.curves, seen[k], "curves", f"curve row of cell {r.get('cell')!r} rewritten at line "
                                                            f"{lineno} (a rerun); not counted"))
        seen[k] = lineno
    for cell, lines in orphans.items():
        out.append(Issue(run.curves, lines[0], "curves", f"{len(lines)} curve row(s) of cell {cell!r}, which is not "
                                                         f"complete in records.jsonl; not counted"))
    return out


def verify_run(path: str | Path) -> Verification:
    """What is damaged in a run directory (NotARunDirectory when it is none)."""
    run = _run_dir(path)
    report = Verification(run.path)
    config = _config_problem(run)
    if config is not None:
        report.problems.append(config)
    scan = run.scan(warn=False)
    report.cells, report.legacy = len(scan.groups), scan.legacy
    report.problems += scan.issues
    report.problems += _curve_problems(run, scan)
    report.problems += [Issue(run.failures, ln, "unreadable", f"{why}; line ignored")
                        for ln, _, why in iter_jsonl(run.failures, warn=False) if why is not None]
    report.problems += [Issue(p, 0, "samples", f"{why}; plots skip it, `cdlbench repair` moves it aside")
                        for p, why in _samples_problems(run)]
    report.problems.sort(key=lambda p: (str(p.file), p.line))
    if scan.extended:
        report.notes.append(f"{scan.extended} cell(s) gained records from their saved samples (a later group "
                            f"extends the earlier one: the same rows and more); the earlier groups are not counted")
    if scan.legacy:
        report.notes.append(f"{scan.legacy} complete cell(s) have legacy markers (no digest); they are accepted, "
                            f"`cdlbench repair` upgrades them")
    temps = sorted({p.name for pattern in TEMPORARY_PATTERNS for p in run.path.glob(pattern)})
    if temps:
        report.notes.append(f"temporary files of interrupted writes: {', '.join(temps)} (removed by the next run "
                            f"or by repair)")
    return report


# ---------------------------------------------------------------- repair
@dataclass
class Repair:
    run_dir: Path
    rewritten: list = field(default_factory=list)     # (file, backup, lines before, lines after)
    removed: list = field(default_factory=list)       # temporary files
    moved: list = field(default_factory=list)         # (unreadable samples file, backup)
    after: Verification | None = None

    def text(self) -> str:
        lines = []
        for f, bak, before, after in self.rewritten:
            lines.append(f"{f}: rewritten, {before} -> {after} line(s); the original is kept as {bak.name}")
        for p in self.removed:
            lines.append(f"{p}: temporary file of an interrupted write removed")
        for p, bak in self.moved:
            lines.append(f"{p}: unreadable samples file moved aside to {bak.name}")
        if not lines:
            lines.append(f"{self.run_dir}: already clean; nothing rewritten")
        if self.after is not None:
            lines.append(self.after.text().rstrip("\n"))
        return "\n".join(lines) + "\n"


def _backup(path: Path, stamp: str) -> Path:
    """Keep path's bytes as `<name>.bak-<stamp>-<random>`: a hard link (exclusive: fails on any
    existing name, a link included), else a copy into a file created with O_CREAT|O_EXCL|
    O_NOFOLLOW. An unpredictable name, so no link can be planted for it."""
    for _ in range(100):
        bak = path.with_name(f"{path.name}.bak-{stamp}-{secrets.token_hex(4)}")
        try:
            os.link(path, bak, follow_symlinks=False)    # the original inode keeps its bytes under the backup name
            break
        except FileExistsError:
            continue
        except OSError:
            pass
        try:
            fd = os.open(bak, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirUnwritable.from_os_error(bak, exc) from None
        try:
            src = open_regular_or_fail(path)
            with src:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            raise RunDirUnwritable.from_os_error(bak, exc) from None
        finally:
            os.close(fd)
        break
    else:
        raise RunDirUnwritable(path.parent, "no free backup name", errno.EEXIST)
    _fsync_dir(path.parent)
    return bak


def open_regular_or_fail(path: Path):
    """path opened for reading (a regular file only); FileNotFoundError when it is gone."""
    fh = open_regular(path)
    if fh is None:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    return fh


def _rewrite(path: Path, rows: list[dict], stamp: str, result: Repair) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    try:
        fh = open_regular_or_fail(path)
        with fh:
            old = fh.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunDirUnwritable.from_os_error(path, exc) from None
    if old == text:
        return
    bak = _backup(path, stamp)
    write_atomic(path, text)
    result.rewritten.append((path, bak, old.count(b"\n") + (not old.endswith(b"\n") and bool(old)), len(rows)))


def repair_run(path: str | Path, stamp: str | None = None) -> Repair:
    """Rewrite records.jsonl, curves.jsonl and failures.jsonl to their clean form (module docstring)."""
    run = _run_dir(path, writing=True)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    result = Repair(run.path)
    with RunLock(run.path):
        run.check_files()                   # again, holding the lock
        result.removed = run.clean_temporaries()
        expected_hash = run._expected(None)[0]
        sink = _ListSink()
        scan = run.scan(sink=sink, warn=False)
        records = []
        for g in scan.groups.values():
            rows = sink.groups[g.gid]
            marker = dict(g.marker)
            if g.legacy or marker.get("config_hash") is None:
                marker["digest"] = rows_digest(rows)
                marker["config_hash"] = marker.get("config_hash") or expected_hash
            records += rows + [marker]
        _rewrite(run.records, records, stamp, result)
        curves = run.load_curves(_scan=run.scan(warn=False), warn=False)
        _rewrite(run.curves, curves, stamp, result)
        failures = [r for _, r, _ in iter_jsonl(run.failures, warn=False) if r is not None]
        _rewrite(run.failures, failures, stamp, result)
        for p, _ in _samples_problems(run):          # unreadable samples files: kept aside, out of the plots
            bak = _backup(p, stamp)
            try:
                p.unlink()
            except OSError as exc:
                raise RunDirUnwritable.from_os_error(p, exc) from None
            result.moved.append((p, bak))
        if result.moved:
            _fsync_dir(run.path / "samples")
    result.after = verify_run(run.path)
    return result
