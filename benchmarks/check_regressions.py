"""asv regression tracking that can fail (README "Performance").

The asv results of the named CI machine `cdlbench-ci` are committed under
benchmarks/asv-results/cdlbench-ci/ (asv.conf.json `results_dir`). CI runs every benchmark once
for HEAD into the same folder, then this script compares HEAD's results with the newest committed
results of an earlier commit:

- a `track_` benchmark marked `deterministic = True` (a number, not a speed: Picard iterations
  and final MMD of the tiny seeded Dino models) must not change: integer values (counts) must be
  equal, float values equal within the relative tolerance FLOAT_RTOL; any other change fails
  (exit 1) unless the commit also updates the committed results (`--update`, below);
- timing benchmarks are compared and reported: a factor above 2 either way is shown, never
  failed (this machine is noisy: +-30% between runs).

    python -m benchmarks.check_regressions              # compare (what CI runs after `asv run`)
    python -m benchmarks.check_regressions --update     # run asv for HEAD and keep it as the baseline

`--update` runs `asv run --python=same --set-commit-hash HEAD` with one repeat, so commit the new
JSON file it writes; `asv publish` then draws the history of every committed result.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "cdlbench-ci"
RESULTS = ROOT / "benchmarks" / "asv-results" / MACHINE
TIMING_FACTOR = 2.0
#: Relative tolerance for float values of deterministic tracks. The same seeded computation gives
#: different float sums on different CPU types (ATen picks default/avx2/avx512 kernels, oneDNN and
#: MKL their own code paths). Measured (python -m benchmarks.float_noise, AMD EPYC, torch 2.13.0,
#: one thread): the final MMD of the tiny Dino models spreads by at most 1.45e-7 relative over
#: the three ATen capabilities; an Intel Xeon gave 0.028188141338 where the committed AMD value
#: is 0.028188138758 (9.2e-8). 2e-6 is about 14 times the largest measured spread. What it still
#: catches, measured: a Picard tolerance of 0.09 instead of 0.1 moves the CDL model's MMD by
#: 1.5e-5 relative (caught) and the DDPM model's by 6.8e-7 (not caught by this value alone: a
#: converged Picard run barely depends on its tolerance); a change of the training moves both by
#: far more. Counts compare exactly: the Picard iteration counts were identical on every code path.
FLOAT_RTOL = 2e-6
ASV_RUN = ["asv", "run", "--python=same", "--machine", MACHINE, "-a", "repeat=1", "-a", "number=1",
           "-a", "warmup_time=0", "--show-stderr"]


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def deterministic_tracks() -> set[str]:
    """asv names (module.Class.method) of the track_ benchmarks declared deterministic."""
    out = set()
    for path in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        for cname, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for mname, fn in inspect.getmembers(cls, inspect.isfunction):
                if mname.startswith("track_") and getattr(fn, "deterministic", False):
                    out.add(f"{path.stem}.{cname}.{mname}")
    return out


def load(path: Path) -> dict:
    """{benchmark name: [values per parameter combination]} of one asv results file."""
    blob = json.loads(path.read_text())
    cols = blob["result_columns"]
    return {name: row[cols.index("result")] for name, row in blob["results"].items()}, blob


def results_by_commit() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in RESULTS.glob("*.json"):
        if path.name == "machine.json":
            continue
        out.setdefault(json.loads(path.read_text())["commit_hash"], []).append(path)
    return out


def _norm(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def same_value(a, b, rtol: float = FLOAT_RTOL) -> bool:
    """Integers (and None/NaN) equal exactly; floats within rtol relative to the committed value b.
    asv stores every value as a JSON number: a value with no fractional part on both sides is a count."""
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is b
    if float(a).is_integer() and float(b).is_integer():
        return a == b
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def same(a, b, rtol: float = FLOAT_RTOL) -> bool:
    a, b = list(a or []), list(b or [])
    return len(a) == len(b) and all(same_value(x, y, rtol) for x, y in zip(a, b))


def compare(new_path: Path, base_path: Path) -> int:
    new, _ = load(new_path)
    base, base_blob = load(base_path)
    tracked = deterministic_tracks()
    changed, slow = [], []
    for name, values in sorted(new.items()):
        old = base.get(name)
        if name in tracked:
            if old is None or not same(values, old):
                changed.append((name, old, values))
        elif name.split(".")[-1].startswith(("time_", "peakmem_")) and old:
            for a, b in zip(values or [], old):
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
                    factor = a / b
                    if factor > TIMING_FACTOR or factor < 1 / TIMING_FACTOR:
                        slow.append((name, b, a, factor))
    print(f"asv results of {new_path.name} against the committed baseline of commit "
          f"{base_blob['commit_hash'][:12]} ({len(tracked)} deterministic track_ benchmarks; "
          f"counts exact, floats within {FLOAT_RTOL:g} relative)")
    for name, b, a, f in slow:
        print(f"  timing {name}: {b:.4g} -> {a:.4g} ({f:.2f}x; shown, not failed)")
    for name, old, values in changed:
        print(f"  CHANGED {name}: {old} -> {values}")
    if changed:
        print("a deterministic benchmark value changed: if the change is intended, run "
              "`python -m benchmarks.check_regressions --update` and commit benchmarks/asv-results/", file=sys.stderr)
        return 1
    print(f"  deterministic values unchanged (counts exact, floats within {FLOAT_RTOL:g} relative)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="run asv for HEAD and keep it as the new baseline")
    args = parser.parse_args()
    sha = head()
    if args.update:
        subprocess.run(["asv", "machine", "--machine", MACHINE, "--yes"], cwd=ROOT, check=True, capture_output=True)
        for stale in results_by_commit().get(sha, []):        # one baseline per commit
            stale.unlink()
        subprocess.run(ASV_RUN + ["--set-commit-hash", sha], cwd=ROOT, check=True)
        print(f"baseline for {sha[:12]} written under {RESULTS}; commit it")
        return 0
    by_commit = results_by_commit()
    if sha not in by_commit:
        print(f"no asv results for HEAD {sha[:12]} under {RESULTS}; run: {' '.join(ASV_RUN)} --set-commit-hash HEAD",
              file=sys.stderr)
        return 2
    older = [(json.loads(p.read_text())["date"], p) for c, ps in by_commit.items() if c != sha for p in ps]
    if not older:
        print(f"no committed baseline under {RESULTS}: run `python -m benchmarks.check_regressions --update`",
              file=sys.stderr)
        return 2
    return compare(by_commit[sha][0], max(older)[1])


if __name__ == "__main__":
    sys.exit(main())
