"""Run directories: the resolved suite first (`config.yaml`), then append-only `records.jsonl`
and `curves.jsonl` (one JSON object per line) and `failures.jsonl` for failed cells.

Commit protocol (one writer: the coordinator, holding the run lock). `commit_cell` appends a
cell's curves to curves.jsonl, then the cell's rows and a marker row to records.jsonl in ONE
write, flushed and fsynced:

    {...identity of the cell..., "metric": "_complete", "value": n, "unit": "records",
     "higher_is_better": null, "digest": sha256(canonical JSON of the n rows), "config_hash": ...}

`digest` covers the n rows exactly as written (after NaN -> null), in order; `config_hash` is
`suite_config_hash` of the resolved suite that made them. A cell trained from input files (its
`p_dataset_path`, `p_model_path`, `p_train_init_from` name files) has their content digests in
its marker too (`"input_files": {"train.init_from": sha256, ...}`), and `check_resumable`
refuses to resume when one of those files has changed since: the new cells would be trained from
other data or weights than the recorded ones. A kill leaves at most a prefix of one
write (whole rows, then a truncated line); the next write first closes that line, so it stays a
line of its own.

Which rows count (`complete_cells`, `load_records`, `load_curves`, `cdlbench verify`). A cell's
key is (suite, suite_version, cell). A marker with count n commits the n lines immediately before
it, when all of them are readable rows (not markers) of the marker's key, and:

- new markers (with `digest`): the digest of those n rows equals the marker's. Rows of the key
  further up with no marker of their own are the remains of an interrupted write: never counted.
- legacy markers (no `digest`, written before markers carried one, e.g. the committed runs under
  results/): additionally, no other row of the key lies between the previous marker of the key
  and those n rows, except before an unreadable line (the truncated end of an interrupted write,
  after which every unfinished group is abandoned). `cdlbench repair` adds digest and
  config_hash to them.

A group that fails these rules is damaged (reported with file and line; its cell is not
complete, so `run` reruns it). A complete group also has to belong to the run: its
config_hash (when it has one) must equal the expected one (given, else that of config.yaml),
its suite and suite_version those of config.yaml, and the p_* columns of a legacy marker those
of one component of config.yaml; otherwise it is foreign and ignored. Without a config.yaml the
run is the suite of the last complete group. When a cell has several complete groups, the last
one in the file wins (the others are superseded). Rows outside the winning groups never reach a
report. A marker with `"extends": d` adds records to a cell without sampling again
(cdlbench/run/recompute.py): when the group it supersedes has rows digest d and its own first rows
are those rows (their digest is d), the earlier group is extended, a note, not damage. (A legacy write killed exactly at a line end leaves no unreadable line: its rerun's
marker is rejected once, and the cell's next rerun completes it.)

Every write raises `RunDirUnwritable` (an OSError naming the path and the reason: disk full,
permission denied, a path component that is a file); a failed append is cut back to the file's
old length. `record_failure` never raises. `cdlbench verify` / `repair`: cdlbench/run/verify.py.

Hostile files (issue 25). Nothing is written through a symbolic link: appends open with
O_NOFOLLOW, temporary files get unpredictable names and are created exclusively (O_CREAT|O_EXCL|
O_NOFOLLOW, `tempfile.mkstemp` in the same folder), and `check_files` (called by a resuming run
and by repair) refuses a records.jsonl, curves.jsonl, failures.jsonl, config.yaml, .lock or
samples/ that is a symbolic link or of the wrong type (`UnsafeRunFile`, exit 2, naming the path).
A file is read only when it is a regular file (`open_regular`): a FIFO is never opened for
reading (it would block), a directory is refused with a message, not an IsADirectoryError.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml

from ..errors import UserError

MARKER = "_complete"
#: the resolved-suite keys that change numbers; seeds, device and prose are not among them
#: (extra seeds resume a run; --device is checked by the caller).
CONFIG_KEYS = ("name", "version", "dataset", "model", "train", "losses", "samplers", "metrics")
#: record columns that describe the measurement, not the cell (left out of the marker)
MEASUREMENT_KEYS = ("metric", "value", "unit", "higher_is_better", "censored")
#: input files (cdlbench/run/input_files.py) -> the record column holding their path
INPUT_COLUMNS = {"dataset.path": "p_dataset_path", "model.path": "p_model_path", "train.init_from": "p_train_init_from"}
#: resolved-suite axis -> record column prefix of its parameters (and label column)
AXIS_COLUMNS = {"dataset": "dataset", "model": "model", "train": "train", "losses": "loss", "samplers": "sampler"}
MAX_WARNINGS = 20          # per file read: the rest are summed up in one warning


# ---------------------------------------------------------------- errors
class UnsafeRunFile(UserError, ValueError):
    """A run-directory file is a symbolic link (never followed where cdlbench writes) or not a
    regular file (a FIFO, a directory, a device: never opened for reading); exit 2."""


class RunDirMismatch(UserError, RuntimeError):
    """The run directory holds results of another suite configuration, or its config.yaml is
    missing or unreadable while it holds records (a user error: exit 2)."""


_REASONS = {
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.EEXIST: "a file is in the way of a directory",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "input/output error",
    errno.ELOOP: "it is a symbolic link (links are not followed in a run directory)",
    errno.ENXIO: "it is a FIFO or device, not a regular file",
}


class RunDirUnwritable(UserError, OSError):
    """A write to the run directory failed; the message names the path and the reason."""

    def __init__(self, path, reason: str, code: int | None = None):
        self.path, self.reason = Path(path), reason
        super().__init__(code, reason, str(path))

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.errno))

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"

    @classmethod
    def from_os_error(cls, path, exc: OSError) -> "RunDirUnwritable":
        if isinstance(exc, RunDirUnwritable):
            return exc
        reason = _REASONS.get(exc.errno) or exc.strerror or str(exc)
        return cls(path, reason, exc.errno)


# ---------------------------------------------------------------- canonical forms and hashes
def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def rows_digest(rows: list[dict]) -> str:
    """SHA-256 of the canonical JSON of rows (a list, in order)."""
    return hashlib.sha256(canonical_json(rows).encode()).hexdigest()


def _normalised(obj):
    """The value as config.yaml stores it (tuples become lists, ...), so a hash made from the
    in-memory resolved suite equals one made from config.yaml."""
    try:
        return yaml.safe_load(yaml.safe_dump(obj, sort_keys=False))
    except yaml.YAMLError:
        return obj


def suite_config_hash(resolved: dict) -> str:
    """SHA-256 of the canonical JSON of the resolved suite's CONFIG_KEYS (not seeds or device)."""
    return hashlib.sha256(canonical_json({k: _normalised(resolved.get(k)) for k in CONFIG_KEYS
                                          if k in resolved}).encode()).hexdigest()


def _flat(value):
    """A parameter as a record column holds it (scalars as they are, inf and NaN as null, the
    rest as JSON)."""
    return _clean(value) if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def row_input_digests(row: dict) -> dict:
    """{"train.init_from": sha256, ...} of the input files a record's p_* columns name (those
    that exist; an init_from file only when a regular file within its size bound)."""
    parts = {}
    for name, column in INPUT_COLUMNS.items():
        value = row.get(column)
        if isinstance(value, str) and value:
            comp, field_name = name.split(".")
            parts.setdefault(comp, {})[field_name] = value
    if not parts:
        return {}
    from .input_files import input_digests

    return input_digests(parts)


def legacy_mismatch(marker: dict, resolved: dict) -> list[str]:
    """The resolved-suite parts that disagree with a record's identity columns: name, version,
    and for each axis the record's p_<axis>_* columns (and component name) against every
    component of that axis. [] when the record could have come from this suite."""
    out = []
    if "name" in resolved and marker.get("suite") != resolved["name"]:
        out.append("name")
    if "version" in resolved and marker.get("suite_version") != resolved["version"]:
        out.append("version")
    for axis, col in AXIS_COLUMNS.items():
        entries = resolved.get(axis)
        if entries is None:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        prefix = f"p_{col}_"
        got = {k[len(prefix):]: v for k, v in marker.items() if k.startswith(prefix)}
        label = marker.get(col)
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            params = {k: _flat(v) for k, v in entry.items() if not (axis != "train" and k == "name")}
            name_ok = axis == "train" or not isinstance(label, str) or label.split("[")[0] == entry.get("name")
            if name_ok and params == got:
                break
        else:
            out.append(axis)
    return out


# ---------------------------------------------------------------- safe files
def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def check_regular(path: str | Path, follow: bool = True) -> os.stat_result | None:
    """The stat of `path` when it is a regular file, None when it does not exist; UnsafeRunFile
    when it is anything else (with follow=False also when it is a symbolic link). Only stats:
    nothing is opened."""
    path = Path(path)
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        try:
            to = f" to {os.readlink(path)}"
        except OSError:
            to = ""
        raise UnsafeRunFile(f"{path}: a symbolic link{to}; cdlbench does not write through links in a run "
                            f"directory: replace it by the file itself, or pass a different --out")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeRunFile(f"{path}: not a regular file ({_kind(st.st_mode)}); move it away, or pass a "
                            f"different run directory")
    return st


def open_regular(path: str | Path):
    """`path` opened for binary reading when it is a regular file (symbolic links followed);
    None when it does not exist; UnsafeRunFile for a FIFO, directory, device or socket, which is
    never opened for reading (O_NONBLOCK covers a FIFO swapped in after the check)."""
    if check_regular(path) is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeRunFile(f"{path}: not a regular file ({_kind(st.st_mode)}); move it away, or pass a "
                            f"different run directory")
    return os.fdopen(fd, "rb")


def create_exclusive(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file in `folder` with an unpredictable name `<prefix><random><suffix>`, created with
    O_CREAT|O_EXCL|O_NOFOLLOW (tempfile.mkstemp): never an existing file or a planted link."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    return fd, Path(name)


#: a samples file (RUN_DIR/samples/*.npz, a few thousand points or 64 images) larger than this,
#: on disk or unpacked, is not read
MAX_SAMPLES_BYTES = 1 << 30


class CorruptSamples(UserError, ValueError):
    """A samples file (RUN_DIR/samples/*.npz) cannot be read; `reason` says why."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def read_samples(path: str | Path) -> dict:
    """The arrays of a samples file, every byte read (so a truncated or bit-rotted file fails its
    zip CRC here, not later); CorruptSamples naming the file otherwise. No pickles."""
    import numpy as np

    path = Path(path)
    try:
        fh = open_regular(path)
    except UnsafeRunFile as exc:
        raise CorruptSamples(path, str(exc).split(": ", 1)[-1]) from None
    if fh is None:
        raise CorruptSamples(path, "missing")
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_SAMPLES_BYTES:
            raise CorruptSamples(path, f"{size:,} bytes; a samples file has at most {MAX_SAMPLES_BYTES:,}")
        try:
            with np.load(fh, allow_pickle=False) as z:
                unpacked = sum(info.file_size for info in z.zip.infolist())
                if unpacked > MAX_SAMPLES_BYTES:
                    raise ValueError(f"{unpacked:,} bytes unpacked, at most {MAX_SAMPLES_BYTES:,}")
                return {k: z[k] for k in z.files}
        except Exception as exc:       # truncated zip, bad CRC, not an npz, a pickled object
            first = (str(exc).splitlines() or [""])[0][:200]
            raise CorruptSamples(path, f"not a readable samples file ({type(exc).__name__}: {first})") from None


# ---------------------------------------------------------------- reading
def iter_jsonl(path: str | Path, warn: bool = True) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row, None) for each JSON object line, (line number, None, why) for each
    unreadable one (not UTF-8, not JSON, JSON that is not an object, a truncated line); blank
    lines are skipped. Read in binary and decoded per line, so no byte stops the reading. With
    `warn`, each unreadable line is a warning naming file:line (the first MAX_WARNINGS)."""
    path = Path(path)
    fh = open_regular(path)          # UnsafeRunFile for a FIFO or a directory
    if fh is None:
        return
    bad = 0
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    problem = f"a JSON {type(row).__name__ if row is not None else 'null'}, not an object"
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 (byte {exc.start})"
            except (ValueError, RecursionError):
                problem = "not valid JSON" if raw.endswith(b"\n") else "not valid JSON, cut short"
            if problem is None:
                yield lineno, row, None
                continue
            bad += 1
            if warn and bad <= MAX_WARNINGS:
                warnings.warn(f"{path}:{lineno}: truncated or corrupt line ignored ({problem})", stacklevel=3)
            yield lineno, None, problem
    if warn and bad > MAX_WARNINGS:
        warnings.warn(f"{path}: {bad - MAX_WARNINGS} more truncated or corrupt lines ignored", stacklevel=3)


def read_jsonl(path: str | Path) -> list[dict]:
    """Every readable row; each unreadable line is skipped with a warning naming file:line."""
    return [row for _, row, _ in iter_jsonl(path) if row is not None]


# ---------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirUnwritable(path, "it exists and is a file, not a directory", errno.EEXIST) from None
    except OSError as exc:
        raise RunDirUnwritable.from_os_error(path, exc) from None


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n" for r in rows)


def _append(path: Path, text: str) -> None:
    """Append text in one write, fsynced. A truncated last line left by a kill is closed with a
    newline first. On failure (disk full, ...) the file is cut back to its old length, so a
    failed write leaves nothing behind, and RunDirUnwritable is raised."""
    data = text.encode("utf-8")
    try:        # never through a symbolic link; a FIFO without reader fails (ENXIO) instead of blocking
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise RunDirUnwritable.from_os_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RunDirUnwritable(path, f"not a regular file ({_kind(st.st_mode)})", errno.EINVAL)
        size = st.st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise RunDirUnwritable.from_os_error(path, exc) from None
    except RunDirUnwritable:
        raise
    except OSError as exc:
        raise RunDirUnwritable.from_os_error(path, exc) from None
    finally:
        os.close(fd)


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append rows (NaN -> null) as one write, flushed and fsynced; RunDirUnwritable on failure."""
    if rows:
        _append(Path(path), _lines(rows))


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a new temporary file beside path (`.<name>.<random>.tmp`, created exclusively:
    never a planted link), fsync, rename over path, fsync the directory. The rename replaces a
    link at `path` itself, never its target."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = create_exclusive(path.parent, f".{path.name}.")
        os.fchmod(fd, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            if tmp is not None:
                tmp.unlink()
        except OSError:
            pass
        raise RunDirUnwritable.from_os_error(path, exc) from None
    _fsync_dir(path.parent)


def write_run_file(path: str | Path, data: bytes) -> None:
    """A file in a subfolder of a run directory (samples/), atomically (write_atomic); the
    subfolder is created when missing and refused (UnsafeRunFile) when it is a link or a file."""
    path = Path(path)
    try:
        st = os.lstat(path.parent)
    except FileNotFoundError:
        _mkdir(path.parent)
        st = os.lstat(path.parent)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRunFile(f"{path.parent}: {_kind(st.st_mode)}, not a directory; cdlbench does not write "
                            f"through links in a run directory: replace it by a folder, or pass a different --out")
    write_atomic(path, data)


# ---------------------------------------------------------------- scanning records
@dataclass
class Issue:
    """A problem found in a run directory file (line 0: the file as a whole)."""
    file: Path
    line: int
    kind: str        # unreadable, interrupted, damaged, foreign, superseded, curves, config
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Group:
    """A complete group: its key, lines and marker."""
    key: tuple
    first_line: int
    marker_line: int
    n: int
    legacy: bool
    config_hash: str | None
    marker: dict
    gid: int
    digest: str | None = None     # of its rows (a new marker's own; computed for a legacy one)

    @property
    def cell(self) -> str:
        return self.key[2]


@dataclass
class RecordScan:
    groups: dict = field(default_factory=dict)      # key -> winning Group, in file order of markers
    issues: list = field(default_factory=list)
    markers: list = field(default_factory=list)     # (line, marker) of every marker, when asked for
    rows: int = 0                                   # readable non-marker rows
    extended: int = 0                               # groups superseded by a group that extends them

    @property
    def cells(self) -> set[str]:
        return {key[2] for key in self.groups}

    @property
    def legacy(self) -> int:
        return sum(g.legacy for g in self.groups.values())


def _hashable(v):
    return v if isinstance(v, (str, int, float, bool)) or v is None else canonical_json(v)


def _key(row: dict):
    cell = row.get("cell")
    if not isinstance(cell, str):
        return None
    return (_hashable(row.get("suite")), _hashable(row.get("suite_version")), cell)


def _repeats(rows: list[tuple[int, dict]]) -> str:
    """'; line 12 repeats line 11' for the first row of a group that repeats an earlier one."""
    seen = {}
    for lineno, r in rows:
        text = canonical_json(r)
        if text in seen:
            return f"; line {lineno} repeats line {seen[text]}"
        seen[text] = lineno
    return ""


def _span(lines: list[int]) -> str:
    return f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"


class _ListSink:
    """Keeps the rows of winning groups (dicts)."""

    def __init__(self):
        self.groups: dict[int, list[dict]] = {}

    def add(self, gid: int, rows: list[dict]) -> None:
        self.groups[gid] = rows

    def drop(self, gid: int) -> None:
        self.groups.pop(gid, None)

    def rows(self) -> list[dict]:
        return [r for rows in self.groups.values() for r in rows]


class _NullSink:
    def add(self, gid, rows):
        pass

    def drop(self, gid):
        pass


_ABSENT = float("nan")       # a column a row lacks: NaN, as pandas.DataFrame(list of dicts) has it


class ColumnSink:
    """Keeps the rows of winning groups as column lists (memory: one pointer per value, repeated
    strings and scalars shared), e.g. for a DataFrame. `keep(column)` chooses the columns."""

    def __init__(self, keep: Callable[[str], bool] = lambda c: True):
        self.keep = keep
        self.columns: dict[str, list] = {}
        self.owner: list[int] = []
        self.dropped: set[int] = set()
        self._shared: dict = {}
        self._kept: dict[str, bool] = {}

    def _share(self, v):
        if isinstance(v, (str, int, float, bool)) or v is None:
            return self._shared.setdefault((type(v), v), v) if v == v else v
        return v

    def add(self, gid: int, rows: list[dict]) -> None:
        cols, share = self.columns, self._share
        for row in rows:
            n = len(self.owner)
            for k in row:
                kept = self._kept.get(k)
                if kept is None:
                    kept = self._kept[k] = bool(self.keep(k))
                if kept and k not in cols:
                    cols[k] = [_ABSENT] * n
            for k, col in cols.items():
                v = row.get(k, _ABSENT)
                col.append(v if k == "value" or v is _ABSENT else share(v))
            self.owner.append(gid)

    def drop(self, gid: int) -> None:
        self.dropped.add(gid)

    def result(self) -> dict[str, list]:
        if not self.dropped:
            return self.columns
        keep = [i for i, g in enumerate(self.owner) if g not in self.dropped]
        return {k: [col[i] for i in keep] for k, col in self.columns.items()}


def scan_records(path: str | Path, *, config_hash: str | None = None, suite: tuple | None = None,
                 resolved: dict | None = None, sink=None, warn: bool = True,
                 keep_markers: bool = False) -> RecordScan:
    """One pass over records.jsonl applying the rules of the module docstring. `config_hash`,
    `suite` (name, version) and `resolved` (for legacy markers' p_* columns) say what belongs to
    the run; None: not checked (without `suite`, the suite of the last complete group). Rows of
    winning groups go to `sink` (add/drop by group id)."""
    path = Path(path)
    sink = sink if sink is not None else _NullSink()
    scan = RecordScan()
    pending: dict[tuple, list[tuple[int, dict]]] = {}
    recent: deque = deque()          # (line, key) of the readable non-marker rows right above
    gid = 0

    def abandon(rows, why):
        lines = [ln for ln, _ in rows]
        scan.issues.append(Issue(path, lines[0], "interrupted",
                                 f"{_span(lines)}: {len(rows)} row(s) of cell {rows[0][1].get('cell')!r} "
                                 f"without a marker ({why}); not counted"))

    for lineno, row, problem in iter_jsonl(path, warn=warn):
        if problem is not None:
            scan.issues.append(Issue(path, lineno, "unreadable", f"{problem}; line ignored"))
            for rows in pending.values():
                abandon(rows, "an interrupted write")
            pending.clear()
            recent.clear()
            continue
        key = _key(row)
        if key is None:
            scan.issues.append(Issue(path, lineno, "unreadable", "a row without a cell name; line ignored"))
            recent.clear()
            continue
        if row.get("metric") != MARKER:
            scan.rows += 1
            pending.setdefault(key, []).append((lineno, row))
            recent.append((lineno, key))
            continue
        # ---- a marker
        if keep_markers:
            scan.markers.append((lineno, row))
        rows = pending.pop(key, [])
        n = row.get("value")
        legacy = "digest" not in row
        cell = key[2]
        why = None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            why = f"its count {n!r} is not a number of rows"
        elif len(rows) < n:
            why = f"it counts {n} rows but {len(rows)} row(s) of the cell are above it"
        else:
            above = list(recent)[-n:] if n else []
            if len(above) < n or any(k != key for _, k in above):
                others = [ln for ln, k in above if k != key]
                where = f" (line {others[0]} belongs to another cell or suite)" if others else \
                    " (an unreadable line is among them)"
                why = f"the {n} lines above it are not all rows of this cell{where}"
            elif legacy and len(rows) > n:
                why = (f"{len(rows)} rows of the cell since its previous marker, {n} counted "
                       f"(a duplicated or extra row, {_span([ln for ln, _ in rows[:len(rows) - n]])})")
            elif not legacy and rows_digest([r for _, r in rows[len(rows) - n:]]) != row.get("digest"):
                why = "the digest of its rows does not match (a row was changed, duplicated or replaced)"
        if why is not None:
            why += _repeats(rows)
        recent.clear()
        first = rows[len(rows) - n][0] if not why and n else lineno
        if why is not None:
            span = f" ({_span([ln for ln, _ in rows])})" if rows else ""
            scan.issues.append(Issue(path, lineno, "damaged", f"cell {cell!r}: marker rejected: {why}; "
                                     f"its rows{span} are not counted and `run` reruns the cell"))
            continue
        if len(rows) > n:                     # new markers: remains of an interrupted write above
            abandon(rows[:len(rows) - n], "an interrupted write, redone below")
        h = row.get("config_hash")
        foreign = None
        if config_hash is not None and h is not None and h != config_hash:
            foreign = f"made by another suite configuration (config_hash {h[:12]}..., the run's {config_hash[:12]}...)"
        elif suite is not None and (key[0], key[1]) != tuple(suite):
            foreign = f"of suite {key[0]!r} version {key[1]!r}, not the run's {suite[0]!r} version {suite[1]!r}"
        elif resolved is not None and h is None:
            parts = legacy_mismatch(row, resolved)
            if parts:
                foreign = f"its settings differ from config.yaml ({', '.join(parts)})"
        if foreign:
            scan.issues.append(Issue(path, lineno, "foreign", f"cell {cell!r}: a complete group {foreign}; "
                                     f"not counted"))
            continue
        gid += 1
        own = [r for _, r in rows[len(rows) - n:]]
        group = Group(key, first, lineno, n, legacy, h, row, gid, rows_digest(own) if legacy else row.get("digest"))
        old = scan.groups.pop(key, None)
        if old is not None:
            extends = row.get("extends")
            if extends is not None and extends == old.digest and n >= old.n and rows_digest(own[:old.n]) == extends:
                scan.extended += 1          # the same rows, and more: records added from saved samples
            else:
                scan.issues.append(Issue(path, old.marker_line, "superseded",
                                         f"cell {cell!r}: a complete group superseded by the one at line {lineno}; "
                                         f"not counted"))
            sink.drop(old.gid)
        scan.groups[key] = group
        sink.add(gid, own)
    for rows in pending.values():
        abandon(rows, "an interrupted write")
    if suite is None and scan.groups:
        _keep_one_run(path, scan, sink, config_hash)
    scan.issues.sort(key=lambda i: i.line)
    return scan


def _keep_one_run(path: Path, scan: RecordScan, sink, config_hash: str | None) -> None:
    """Without a config.yaml: the run is the suite (and config_hash) of the last complete group."""
    last = next(reversed(scan.groups.values()))
    ident = last.key[:2]
    hashes = [g.config_hash for g in reversed(scan.groups.values()) if g.config_hash is not None]
    want = config_hash or (hashes[0] if hashes else None)
    for key, g in list(scan.groups.items()):
        why = None
        if key[:2] != ident:
            why = f"of suite {key[0]!r} version {key[1]!r}, not the run's (the last complete group's) {ident[0]!r} " \
                  f"version {ident[1]!r}"
        elif want is not None and g.config_hash is not None and g.config_hash != want:
            why = "made by another suite configuration than the last complete group"
        if why:
            scan.issues.append(Issue(path, g.marker_line, "foreign", f"cell {g.cell!r}: a complete group {why}; "
                                     f"not counted"))
            sink.drop(g.gid)
            del scan.groups[key]


# ---------------------------------------------------------------- the run directory
TEMPORARY_PATTERNS = ("config.yaml.tmp", ".*.tmp", "*.jsonl.tmp", "samples/*.tmp.npz", "samples/.*.tmp")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records = self.path / "records.jsonl"
        self.curves = self.path / "curves.jsonl"
        self.failures = self.path / "failures.jsonl"
        self.config = self.path / "config.yaml"

    # ---------------------------------------------------------- config
    def write_config(self, resolved: dict) -> str:
        """config.yaml, atomically (temporary file, fsync, rename); returns suite_config_hash."""
        _mkdir(self.path)
        text = yaml.safe_dump(resolved, sort_keys=False)
        write_atomic(self.config, text.encode("utf-8"))
        return suite_config_hash(resolved)

    def existing_config(self) -> dict | None:
        """The resolved suite of config.yaml; None when there is none. RunDirMismatch when it
        cannot be read, is not YAML, or is not a mapping."""
        try:
            fh = open_regular(self.config)       # UnsafeRunFile for a FIFO or a directory
            if fh is None:
                return None
            with fh:
                text = fh.read()
        except OSError as exc:
            raise RunDirMismatch(f"{self.config}: cannot be read ({exc.strerror or exc})") from None
        try:
            data = yaml.safe_load(text.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunDirMismatch(f"{self.config}: not a valid run configuration (not YAML: {first})") from None
        if not isinstance(data, dict):
            raise RunDirMismatch(f"{self.config}: not a valid run configuration (a YAML "
                                 f"{type(data).__name__ if data is not None else 'empty document'}, "
                                 f"not a mapping)")
        return data

    def _expected(self, config_hash: str | None):
        """(config_hash, (suite, version), resolved) the records must match; from config.yaml when
        it is readable (a broken one is verify's and check_resumable's business, not a reader's)."""
        try:
            cfg = self.existing_config()
        except RunDirMismatch:
            cfg = None
        if cfg is None:
            return config_hash, None, None
        suite = (_hashable(cfg.get("name")), _hashable(cfg.get("version")))
        return config_hash or suite_config_hash(cfg), suite, cfg

    def scan(self, config_hash: str | None = None, sink=None, warn: bool = True,
             keep_markers: bool = False) -> RecordScan:
        h, suite, cfg = self._expected(config_hash)
        return scan_records(self.records, config_hash=h, suite=suite, resolved=cfg, sink=sink, warn=warn,
                            keep_markers=keep_markers)

    # ---------------------------------------------------------- safety
    RUN_FILES = ("records.jsonl", "curves.jsonl", "failures.jsonl", "config.yaml", ".lock")

    def check_files(self) -> None:
        """UnsafeRunFile (exit 2, naming the path) when a file cdlbench writes in this directory is
        a symbolic link or not a regular file, or samples/ is a link or not a folder."""
        for name in self.RUN_FILES:
            check_regular(self.path / name, follow=False)
        samples = self.path / "samples"
        try:
            st = os.lstat(samples)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(st.st_mode):
            check_regular(samples, follow=False)          # raises: a symbolic link
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeRunFile(f"{samples}: {_kind(st.st_mode)}, not a directory; move it away, or pass a "
                                f"different --out")

    # ---------------------------------------------------------- writing
    def commit_cell(self, rows: list[dict], curves: list[dict], config_hash: str, extends: str | None = None) -> None:
        """Append one cell's curves to curves.jsonl, then its rows and their marker to
        records.jsonl in one write (flushed, fsynced). All rows have the same suite,
        suite_version and cell; the marker carries their identity, count, digest and config_hash
        (and `extends`: the digest of the cell's current rows, which `rows` begin with)."""
        if not rows:
            raise ValueError("commit_cell: a cell needs at least one record")
        keys = {_key(r) for r in rows}
        if len(keys) != 1 or None in keys:
            raise ValueError(f"commit_cell: the rows belong to {len(keys)} cells ({sorted(map(str, keys))[:3]}); "
                             f"one commit is one cell")
        if any(r.get("metric") == MARKER for r in rows):
            raise ValueError(f"commit_cell: '{MARKER}' is the marker's metric, not a record's")
        _mkdir(self.path)
        append_jsonl(self.curves, curves)
        text = _lines(rows)
        written = [json.loads(line) for line in text.splitlines()]      # the rows exactly as written
        ident = {k: v for k, v in written[0].items() if k not in MEASUREMENT_KEYS and not k.startswith("p_metric_")}
        marker = {**ident, "metric": MARKER, "value": len(written), "unit": "records", "higher_is_better": None,
                  "digest": rows_digest(written), "config_hash": config_hash}
        inputs = row_input_digests(written[0])
        if inputs:            # the content of the files the cell was trained from
            marker["input_files"] = inputs
        if extends is not None:
            marker["extends"] = extends
        _append(self.records, text + json.dumps(marker) + "\n")

    def record_failure(self, row: dict) -> bool:
        """Append a failure to failures.jsonl; False (never an exception) when it cannot be written."""
        try:
            _mkdir(self.path)
            append_jsonl(self.failures, [row])
            return True
        except (OSError, ValueError, TypeError):
            return False

    def clean_temporaries(self) -> list[Path]:
        """Remove the temporary files of interrupted writes (config.yaml.tmp, repair and other
        `.*.tmp` files, samples' `*.tmp.npz`). Call it holding the run lock. Returns them."""
        removed = []
        if not self.path.is_dir():
            return removed
        samples_linked = (self.path / "samples").is_symlink()
        for pattern in TEMPORARY_PATTERNS:
            if samples_linked and pattern.startswith("samples/"):
                continue                  # never delete in a folder a link points to
            for p in self.path.glob(pattern):
                try:
                    mode = p.lstat().st_mode
                    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):      # a link itself, never its target
                        p.unlink()
                        removed.append(p)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise RunDirUnwritable.from_os_error(p, exc) from None
        return removed

    # ---------------------------------------------------------- reading
    def complete_cells(self, config_hash: str | None = None) -> set[str]:
        """Cells with a complete group of this run (rules: the module docstring)."""
        return self.scan(config_hash).cells

    def load_records(self, config_hash: str | None = None) -> list[dict]:
        """The rows of complete groups only (one group per cell): a resumed cell never counts twice."""
        sink = _ListSink()
        self.scan(config_hash, sink=sink)
        return sink.rows()

    def load_columns(self, keep: Callable[[str], bool] = lambda c: True, config_hash: str | None = None) -> dict:
        """load_records as column lists (column -> values, NaN where a row lacks it)."""
        sink = ColumnSink(keep)
        self.scan(config_hash, sink=sink)
        return sink.result()

    def load_curves(self, config_hash: str | None = None, _scan: RecordScan | None = None,
                    warn: bool = True) -> list[dict]:
        """Curve rows of complete cells; a re-run of an interrupted cell rewrote its curve, the last
        row per (cell, metric, x, metric parameters) wins."""
        scan = _scan or self.scan(config_hash, warn=warn)
        done = {key[2]: key for key in scan.groups}
        latest = {}
        for _, r, _ in iter_jsonl(self.curves, warn=warn):
            if r is None:
                continue
            key = done.get(r.get("cell"))
            if key is None or ("suite" in r and _hashable(r["suite"]) != key[0]) or \
                    ("suite_version" in r and _hashable(r["suite_version"]) != key[1]):
                continue
            params = tuple(sorted((k, str(v)) for k, v in r.items() if k.startswith("p_metric_")))
            latest[(r.get("cell"), r.get("metric"), _hashable(r.get("x")), params)] = r
        return list(latest.values())

    # ---------------------------------------------------------- resuming
    def check_resumable(self, resolved: dict, config_hash: str) -> None:
        """RunDirMismatch unless this directory may be resumed by `resolved`: config.yaml (when
        there) names the same suite configuration, and so does every marker of records.jsonl (its
        config_hash, or for markers without one its suite, version and p_* columns). A missing
        config.yaml while records exist, or an unreadable one, is a mismatch too."""
        resolved = _normalised(resolved)
        self.check_files()                   # UnsafeRunFile: a link, a FIFO, a directory
        old = self.existing_config()         # RunDirMismatch when unreadable or not a mapping
        has_records = self.records.exists() and self.records.stat().st_size > 0
        if old is None and has_records:
            raise RunDirMismatch(f"{self.config} is missing, but {self.records} holds records: it cannot be "
                                 f"told which suite made them; restore config.yaml, or pass a different --out")
        if old is not None:
            changed = [k for k in CONFIG_KEYS if k in old and old.get(k) != resolved.get(k)]
            if changed:
                raise RunDirMismatch(f"{self.path} holds results of a different suite configuration "
                                     f"(changed: {', '.join(changed)}); resume only with the same suite, "
                                     f"or pass a different --out")
        if not has_records:
            return
        scan = scan_records(self.records, keep_markers=True, warn=False)
        changed: dict[str, tuple[int, str]] = {}
        for lineno, marker in scan.markers:
            h = marker.get("config_hash")
            parts = [] if h is not None and h == config_hash else legacy_mismatch(marker, resolved)
            if h is not None and h != config_hash and not parts:
                parts = ["the suite configuration (config_hash)"]
            for p in parts:
                changed.setdefault(p, (lineno, marker.get("cell")))
        if changed:
            lineno, cell = next(iter(changed.values()))
            raise RunDirMismatch(f"{self.records} holds records of a different suite configuration "
                                 f"(changed: {', '.join(changed)}; e.g. line {lineno}, cell {cell!r}); "
                                 f"resume only with the suite that made them, or pass a different --out")
        self._check_input_files(scan.markers)

    def _check_input_files(self, markers: list) -> None:
        """RunDirMismatch when an input file a recorded cell was trained from has other content now
        (a resume would mix cells of the old and the new file)."""
        now: dict = {}
        for lineno, marker in markers:
            recorded = marker.get("input_files")
            if not isinstance(recorded, dict) or not recorded:
                continue
            for name, digest in recorded.items():
                column = INPUT_COLUMNS.get(name)
                path = marker.get(column) if column else None
                if not isinstance(path, str):
                    continue
                if (name, path) not in now:
                    now[(name, path)] = row_input_digests({column: path}).get(name)
                current = now[(name, path)]
                if current is not None and current != digest:
                    raise RunDirMismatch(
                        f"{name}: {path} has changed since cell {marker.get('cell')!r} ({self.records}:{lineno}) "
                        f"was trained from it (sha256 {str(digest)[:12]}..., now {current[:12]}...); resuming "
                        f"would mix cells trained from the old and the new file: restore the file, or pass a "
                        f"different --out to run every cell from the new one")


def newest_run(root: str | Path = "results") -> Path | None:
    root = Path(root)
    if not root.exists():
        return None
    runs = [p.parent for p in root.glob("**/records.jsonl")]
    return max(runs, key=lambda p: (p / "records.jsonl").stat().st_mtime) if runs else None
