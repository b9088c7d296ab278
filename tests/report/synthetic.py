"""Fixed synthetic records (no training): two losses x (picard, ddpm) x 3 seeds on dino, with
curves of the Picard cells and saved samples, as a run directory."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from cdlbench.run.rundir import append_jsonl

GOLDEN = Path(__file__).parents[1] / "golden" / "report_markdown.md"
PAPER = Path(__file__).parents[2] / "baselines" / "paper.yaml"

# (loss, sampler) -> per-seed values of (mmd, iterations, wall_clock, iters_to_threshold or None)
VALUES = {
    ("ddpm", "picard"): [(0.0031, 37, 1.9, None), (0.0035, 38, 2.1, None), (0.0027, 36, 2.0, None)],
    ("cdl", "picard"): [(0.0012, 36, 1.4, 27), (0.0014, 35, 1.3, None), (0.0010, 36, 1.5, 25)],
    ("ddpm", "ddpm"): [(0.0005, 1000, 9.0, None), (0.0004, 1000, 9.5, None), (0.0006, 1000, 8.5, None)],
    ("cdl", "ddpm"): [(0.0002, 1000, 9.1, None), (0.0003, 1000, 9.2, None), (0.0002, 1000, 9.0, None)],
}


def synthetic_rows() -> list[dict]:
    rows = []
    for (loss, sampler), seeds in VALUES.items():
        for seed, (mmd, iters, wall, hit) in enumerate(seeds):
            cell = f"dino/mlp/{loss}/{sampler}/seed={seed}"
            ident = {"suite": "synthetic", "suite_version": 1, "cell": cell, "dataset": "dino", "model": "mlp",
                     "loss": loss, "sampler": sampler, "seed": seed, "p_sampler_steps": 1000,
                     "p_sampler_tolerance": 0.1, "p_sampler_drift": "ddpm", "p_train_steps": 20000,
                     "env_device": "cpu (x86_64, 2 threads)"}
            metric = {"p_metric_n_samples": 2000, "p_metric_bandwidth": 0.03, "p_metric_threshold": 0.002}
            cell_rows = [
                {**ident, "metric": "iterations", "value": iters, "unit": "passes", "higher_is_better": False},
                {**ident, "metric": "wall_clock", "value": wall, "unit": "s", "higher_is_better": False},
                {**ident, "metric": "train_seconds", "value": 10.0, "unit": "s", "higher_is_better": False},
                {**ident, **metric, "metric": "mmd", "value": mmd, "unit": "", "higher_is_better": False},
            ]
            if sampler == "picard":
                r = {**ident, **metric, "metric": "mmd_iters_to_threshold", "value": hit, "unit": "passes",
                     "higher_is_better": False}
                if hit is None:
                    r["censored"] = True
                cell_rows.append(r)
            cell_rows.append({**ident, "metric": "_complete", "value": len(cell_rows), "unit": "records",
                              "higher_is_better": None})
            rows += cell_rows
    return rows


def write_run(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    append_jsonl(d / "records.jsonl", synthetic_rows())
    curves = []
    for (loss, sampler), seeds in VALUES.items():
        if sampler != "picard":
            continue
        for seed in range(len(seeds)):
            for x in range(1, 11):
                curves.append({"suite": "synthetic", "cell": f"dino/mlp/{loss}/{sampler}/seed={seed}",
                               "dataset": "dino", "model": "mlp", "loss": loss, "sampler": sampler, "seed": seed,
                               "metric": "mmd", "x": x, "value": 0.05 / x + 0.001 * seed,
                               "p_metric_threshold": 0.002})
    append_jsonl(d / "curves.jsonl", curves)
    g = np.random.default_rng(0)
    (d / "samples").mkdir(exist_ok=True)
    for (loss, sampler), seeds in VALUES.items():
        for seed in range(len(seeds)):
            cell = f"dino/mlp/{loss}/{sampler}/seed={seed}"
            np.savez(d / "samples" / f"{loss}_{sampler}_{seed}.npz", cell=np.array(cell),
                     samples=g.normal(size=(300, 2)).astype(np.float32),
                     data=g.normal(size=(300, 2)).astype(np.float32))
    return d


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])
