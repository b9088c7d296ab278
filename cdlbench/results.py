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


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows as one write, flushed to disk (a kill leaves at most a truncated last line)."""
    if not rows:
        return
    text = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, sort_keys=False) + "\n" for r in rows)
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
        """Cells whose `_complete` marker record was written (the last of each cell's rows)."""
        return {r["cell"] for r in read_jsonl(self.records) if r.get("metric") == "_complete"}

    def load_records(self) -> list[dict]:
        """Records of complete cells only (partial groups from an interrupted write are ignored),
        one per (cell, metric): a resumed cell never counts twice."""
        rows = read_jsonl(self.records)
        done = {r["cell"] for r in rows if r.get("metric") == "_complete"}
        seen, out = set(), []
        for r in rows:
            key = (r.get("cell"), r.get("metric"))
            if r.get("cell") in done and r.get("metric") != "_complete" and key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def load_curves(self) -> list[dict]:
        done = self.complete_cells()
        latest = {}
        for r in read_jsonl(self.curves):    # a re-run of an interrupted cell rewrites its curve
            if r.get("cell") in done:
                latest[(r["cell"], r["metric"], r["x"])] = r
        return list(latest.values())


def newest_run(root: str | Path = "results") -> Path | None:
    root = Path(root)
    if not root.exists():
        return None
    runs = [p.parent for p in root.glob("**/records.jsonl")]
    return max(runs, key=lambda p: (p / "records.jsonl").stat().st_mtime) if runs else None
