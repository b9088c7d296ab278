"""Run directories: resolved config first, then append-only records.jsonl and curves.jsonl
(one JSON object per line, flushed and fsynced per write), failures.jsonl for failed cells."""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import yaml


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ends_mid_line(path: Path) -> bool:
    """True when the file's last byte is not a newline (a write cut short by a kill)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows as one write, flushed and fsynced (a kill leaves at most a truncated last line).

    A truncated last line left by an earlier kill is closed with a newline first, so it stays a
    line of its own (skipped with a warning by `read_jsonl`) instead of swallowing the first new row."""
    if not rows:
        return
    text = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, sort_keys=False) + "\n" for r in rows)
    if _ends_mid_line(path):
        text = "\n" + text
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Read rows; a truncated or corrupt line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{lineno}: truncated or corrupt line ignored", stacklevel=2)
    return rows


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records = self.path / "records.jsonl"
        self.curves = self.path / "curves.jsonl"
        self.failures = self.path / "failures.jsonl"
        self.config = self.path / "config.yaml"

    def write_config(self, resolved: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(resolved, sort_keys=False)
        tmp = self.config.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    def existing_config(self) -> dict | None:
        if not self.config.exists():
            return None
        return yaml.safe_load(self.config.read_text())

    def complete_cells(self) -> set[str]:
        """Cells whose rows were all written (their `_complete` marker commits them)."""
        return set(self._committed())

    def load_records(self) -> list[dict]:
        """Records of complete cells only: a resumed cell never counts twice."""
        return [r for rows in self._committed().values() for r in rows]

    def _committed(self) -> dict[str, list[dict]]:
        """Cell -> its committed rows. A cell's rows are written in one append ending with a
        `_complete` marker whose value is the number of rows; the marker commits the last
        that-many rows of its cell. Rows of an attempt cut short by a kill (no marker, or fewer
        rows than the marker counts) are dropped; a second complete group of a cell (impossible
        through `cdlbench run`, possible by concatenating files) is ignored."""
        pending: dict[str, list[dict]] = {}
        committed: dict[str, list[dict]] = {}
        for r in read_jsonl(self.records):
            cell = r.get("cell")
            if r.get("metric") != "_complete":
                pending.setdefault(cell, []).append(r)
                continue
            rows, n = pending.pop(cell, []), r.get("value")
            if cell in committed or not isinstance(n, int) or isinstance(n, bool) or len(rows) < n:
                continue
            committed[cell] = rows[len(rows) - n:]
        return committed

    def load_curves(self) -> list[dict]:
        done = self.complete_cells()
        latest = {}
        for r in read_jsonl(self.curves):    # a re-run of an interrupted cell rewrites its curve
            if r.get("cell") in done:   # two metrics of one name differ in their p_metric_* columns
                params = tuple(sorted((k, str(v)) for k, v in r.items() if k.startswith("p_metric_")))
                latest[(r.get("cell"), r.get("metric"), r.get("x"), params)] = r
        return list(latest.values())


def newest_run(root: str | Path = "results") -> Path | None:
    root = Path(root)
    if not root.exists():
        return None
    runs = [p.parent for p in root.glob("**/records.jsonl")]
    return max(runs, key=lambda p: (p / "records.jsonl").stat().st_mtime) if runs else None
