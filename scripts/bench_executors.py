"""Benchmark of the run engine's executors (README, "Several GPUs, several machines"):

1. the wall-clock of a 2-seed copy of suites/parallel.yaml under `--executor local --jobs 2`
   over `--executor inline`, each from an empty checkpoint cache (its four trainings are
   independent, so two workers on two cores should approach 2x);
2. the coordinator's overhead per job under submitit's local backend, one job at a time: the
   run's wall-clock minus the jobs' own compute (training and sampling seconds), per job, on the
   smoke suite, beside the same figure for inline (data set-up and model building are in both).

    python scripts/bench_executors.py [--only speedup|overhead] [--out DIR]

It prints a markdown table with the machine's load (`uptime`) before and after each run. It is
a benchmark, not a test: it takes about 25 minutes on 2 CPU cores; numbers vary +-30%.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def run(suite: Path, out: Path, cache: Path, *extra) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cdlbench", "run", str(suite), "--out", str(out), "--cache",
                           str(cache), "--quiet", *map(str, extra)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(map(str, extra))}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def job_seconds(run_dir: Path) -> float:
    """The jobs' own compute: training seconds (once per model) plus each cell's sampling time."""
    train, sample = {}, 0.0
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] == "train_seconds" and r["value"] is not None:
            train[(r["loss"], r["seed"])] = r["value"]
        elif r["metric"] == "wall_clock" and r["value"] is not None:
            sample += r["value"]
    return sum(train.values()) + sample


def speedup(tmp: Path) -> list[str]:
    spec = yaml.safe_load((ROOT / "suites" / "parallel.yaml").read_text())
    spec.update(seeds=[0, 1], name="parallel-2seeds")
    suite = tmp / "parallel-2seeds.yaml"
    suite.write_text(yaml.safe_dump(spec, sort_keys=False))
    rows = []
    for label, extra in (("inline", ["--executor", "inline"]), ("local --jobs 2", ["--executor", "local", "--jobs", 2])):
        before = uptime()
        name = "speedup-" + label.replace(" ", "_")
        seconds = run(suite, tmp / name, tmp / f"cache-{name}", *extra)
        rows.append((label, seconds, before, uptime()))
    base = rows[0][1]
    out = ["| 2-seed parallel.yaml | wall-clock | over inline | load before / after |", "|---|---|---|---|"]
    out += [f"| `--executor {label}` | {s / 60:.1f} min | {base / s:.2f}x | {a} / {b} |" for label, s, a, b in rows]
    return out


def overhead(tmp: Path) -> list[str]:
    suite = ROOT / "suites" / "smoke.yaml"
    out = ["| smoke.yaml (18 jobs) | wall-clock | jobs' own compute | overhead per job | load before / after |",
           "|---|---|---|---|---|"]
    for label, extra in (("inline", ["--executor", "inline", "--threads", 1]),
                         ("submitit local --jobs 1", ["--executor", "submitit", "--slurm-cluster", "local",
                                                      "--jobs", 1, "--threads", 1])):
        before = uptime()
        d = tmp / ("overhead-" + label.replace(" ", "_"))
        seconds = run(suite, d, tmp / f"cache-overhead-{label.replace(' ', '_')}", *extra)
        own = job_seconds(d)
        out.append(f"| `--executor {label}` | {seconds:.1f} s | {own:.1f} s | {(seconds - own) / 18:.2f} s | "
                   f"{before} / {uptime()} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["speedup", "overhead"])
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdlbench-bench-")) if args.out is None else args.out
    tmp.mkdir(parents=True, exist_ok=True)
    lines = [f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}"]
    if args.only in (None, "overhead"):
        lines += overhead(tmp) + [""]
    if args.only in (None, "speedup"):
        lines += speedup(tmp)
    print("\n".join(lines))
    if args.out is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
