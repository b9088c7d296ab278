"""Measure the float noise of the deterministic asv tracks across CPU code paths.

The `deterministic = True` track_ benchmarks (bench_tracking.py) are computed from seeded tiny
trainings, so on one CPU type, one torch build and one thread they are bit-identical. Across CPU
types they are not: torch picks its vector kernels (ATen's CPU capability: default, avx2, avx512)
and oneDNN/MKL their code paths by CPU, which changes float summation order. This script
recomputes every deterministic float track under each ATen capability this CPU supports
(ATEN_CPU_CAPABILITY, one subprocess each) and prints the largest relative difference between
them: the measurement behind check_regressions.FLOAT_RTOL.

    python -m benchmarks.float_noise            # about 1 min per capability on one core
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

CAPABILITIES = ("default", "avx2", "avx512")

_CHILD = """
import json, torch
from benchmarks.bench_tracking import TinyDinoPicard
bench = TinyDinoPicard()
states = bench.setup_cache()
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for loss in TinyDinoPicard.params[0]:
    bench.setup(states, loss)
    out[loss] = {"mmd": float(bench.track_final_mmd(states, loss)),
                 "iterations": int(bench.track_picard_iterations(states, loss))}
print(json.dumps(out))
"""


def measure(capability: str) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    runs = [measure(c) for c in CAPABILITIES]
    for run in runs:
        print(json.dumps(run))
    worst = 0.0
    for loss in ("ddpm", "cdl"):
        values = [r[loss]["mmd"] for r in runs]
        spread = (max(values) - min(values)) / abs(min(values, key=abs))
        worst = max(worst, spread)
        counts = {r[loss]["iterations"] for r in runs}
        print(f"{loss}: final MMD relative spread {spread:.3g} over {len(runs)} code paths; "
              f"Picard iterations {sorted(counts)}")
    print(f"largest relative spread: {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
