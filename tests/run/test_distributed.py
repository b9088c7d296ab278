"""Sharded sampling: per-sample seeds make samples independent of batching and of the number
of processes; `torchrun` with gloo and 2 processes reproduces a 1-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cdlbench.run.distributed import World, batch_bounds, per_sample_inputs, sharded_sample
from cdlbench.samplers.base import SampleResult

SUITE = """
name: dist-tiny
seeds: [0]
device: cpu
sample_batch: 4          # 12 samples in 3 global batches, spread over the ranks
dataset: {name: digits}
model: {name: unet, channels: [8, 16], conditional: true}   # labels must follow the global sample index
train: {steps: 3, batch_size: 16, log_every: 1}
losses: {name: ddpm}
samplers:
  - {name: ddpm, steps: 8}
  - {name: picard, steps: 8, window: 4, tolerance: 0.05}
metrics: {name: mmd, n_samples: 12}
"""


def test_per_sample_draws_do_not_depend_on_batching():
    whole_x, whole_n = per_sample_inputs((0, "sample"), 0, 10, (1, 2, 2), 5, torch.device("cpu"))
    parts = [per_sample_inputs((0, "sample"), a, b, (1, 2, 2), 5, torch.device("cpu")) for a, b in batch_bounds(10, 3)]
    assert torch.equal(whole_x, torch.cat([p[0] for p in parts]))
    assert torch.equal(whole_n, torch.cat([p[1] for p in parts], dim=1))
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_sharded_sample_reassembles_in_order():
    def run_batch(x_T, noise, start):
        return SampleResult(x_T + noise.sum(0), nfe=5, iterations=start, converged=True, wall_s=0.1)

    res = sharded_sample(run_batch, 10, 4, (3,), 5, (1, "s"), torch.device("cpu"), World())
    x, n = per_sample_inputs((1, "s"), 0, 10, (3,), 5, torch.device("cpu"))
    assert torch.allclose(res.samples, x + n.sum(0), atol=1e-6)
    assert res.nfe == 5 and res.iterations == 4 and res.converged       # per batch: means over batches


def _run(tmp_path, name, launcher):
    (tmp_path / "s.yaml").write_text(SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / name / "run"
    cmd = launcher + ["-m", "cdlbench", "run", str(tmp_path / "s.yaml"), "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert all(r.get("p_sample_batch") == 4 for r in rows if r["metric"] != "_complete")   # in every record
    values = {(r["sampler"], r["metric"]): r["value"] for r in rows
              if r["metric"] in ("mmd", "nfe", "iterations", "converged")}
    samples = {}
    for f in sorted((out / "samples").glob("*.npz")):
        with np.load(f) as blob:
            samples[f.name] = blob["samples"]
    return values, samples


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    one, s1 = _run(tmp_path, "one", [sys.executable])
    two, s2 = _run(tmp_path, "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node=2"])
    assert one == two and len(one) == 8
    assert s1.keys() == s2.keys() and len(s1) == 2
    for k in s1:
        assert np.array_equal(s1[k], s2[k])
