"""Sharded sample generation under `torchrun` (torch.distributed; gloo on CPU, nccl on CUDA).

Samples are cut into global batches of fixed size; batch b holds samples [b*B, (b+1)*B) and
goes to rank b % world_size. Every sample draws its x_T and per-step noise from its own
generator seeded by (seed, sample index), so the samples, and every metric computed from
them, do not depend on the number of processes or on how batches are assigned. After
sampling, every rank gathers all batches (in index order) and computes the metrics; only rank
0 writes records. Training runs on rank 0 first (the others then load its cached checkpoint).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .rundir import RunDir
from ..seeding import derived_seed


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1 and dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.elastic) started this process. RANK alone is not enough: Slurm
    and other launchers set it too, and cdlbench's own workers must never join a process group
    by accident (they divide the cells; torchrun's ranks divide one cell's samples)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_from_env() -> World:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (defaults: one process)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes (no-op for one process); pins the CUDA device."""
    world = world_from_env()
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world


def local_device(device: torch.device, world: World) -> torch.device:
    return torch.device("cuda", world.local_rank) if device.type == "cuda" and world.size > 1 else device


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def main_first(world: World, fn):
    """Run fn on rank 0, then on the others (e.g. train and cache, then load the cache)."""
    if not world.active:
        return fn()
    if world.is_main:
        try:
            return fn()
        finally:
            dist.barrier()
    dist.barrier()
    return fn()


def per_sample_inputs(seed_parts: tuple, start: int, stop: int, shape: tuple, steps: int | None,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x_T [B, *shape] and per-step noise [steps, B, *shape] of samples start..stop-1, each from
    its own CPU generator (so a sample's draws never depend on its batch or rank)."""
    xs, noises = [], []
    for i in range(start, stop):
        g = torch.Generator().manual_seed(derived_seed(*seed_parts, i))
        xs.append(torch.randn(shape, generator=g))
        if steps:
            noises.append(torch.randn((steps, *shape), generator=g))
    x_T = torch.stack(xs).to(device)
    noise = torch.stack(noises, dim=1).to(device) if steps else None
    return x_T, noise


def batch_bounds(n: int, batch: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


def gather_batches(local: dict[int, torch.Tensor], n_batches: int, world: World) -> list[torch.Tensor]:
    """Every rank's {batch index: samples} -> the list of all batches in index order, on every rank."""
    if not world.active:
        return [local[b] for b in range(n_batches)]
    payload = {b: t.detach().cpu() for b, t in local.items()}
    everyone: list = [None] * world.size
    dist.all_gather_object(everyone, payload)
    merged = {}
    for part in everyone:
        merged.update(part)
    return [merged[b] for b in range(n_batches)]


def all_max(value: float, world: World) -> float:
    if not world.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def sharded_sample(run_batch, n: int, batch: int, shape: tuple, steps: int | None, seed_parts: tuple,
                   device: torch.device, world: World):
    """Generate n samples in global batches across ranks; returns a SampleResult with all samples.

    run_batch(x_T, noise, start) -> SampleResult for one batch (start: its first sample index).
    Reported per batch, as for one run of the sampler: iterations and nfe are means over batches
    (rounded; equal to the one-batch numbers when n <= batch), converged = all batches,
    wall_s = the slowest rank's total sampling time."""
    from ..samplers.base import SampleResult

    bounds = batch_bounds(n, batch)
    mine = range(world.rank, len(bounds), world.size)
    local, iters, nfe, conv, wall = {}, 0, 0, True, 0.0
    for b in mine:
        x_T, noise = per_sample_inputs(seed_parts, *bounds[b], shape, steps, device)
        res = run_batch(x_T, noise, bounds[b][0])
        local[b] = res.samples
        iters, nfe, conv, wall = iters + res.iterations, nfe + res.nfe, conv and res.converged, wall + res.wall_s
    stats = torch.tensor([iters, nfe, float(conv), wall], dtype=torch.float64)
    if world.active:
        stats = stats.to(device if dist.get_backend() == "nccl" else "cpu")
        everyone = [torch.zeros_like(stats) for _ in range(world.size)]
        dist.all_gather(everyone, stats)
        allstats = torch.stack(everyone).cpu()
        iters, nfe = float(allstats[:, 0].sum()), float(allstats[:, 1].sum())
        conv, wall = bool(allstats[:, 2].min() > 0), float(allstats[:, 3].max())
    samples = torch.cat(gather_batches(local, len(bounds), world)).to(device)
    per_batch = lambda total: int(round(total / len(bounds)))  # noqa: E731
    return SampleResult(samples, nfe=per_batch(nfe), iterations=per_batch(iters), converged=bool(conv),
                        wall_s=float(wall))


class FollowerRunDir(RunDir):
    """Run directory of a rank > 0: reads rank 0's completion state and config, writes its own
    records into RUN_DIR/.ranks/rank<r>/ (never read), so ranks agree on the cells to run."""

    def __init__(self, main_path: str | Path, rank: int):
        super().__init__(Path(main_path) / ".ranks" / f"rank{rank}")
        self.main = RunDir(main_path)

    def complete_cells(self) -> set[str]:
        return self.main.complete_cells()

    def existing_config(self) -> dict | None:
        return self.main.existing_config()
