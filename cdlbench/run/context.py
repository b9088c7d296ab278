"""What a job needs besides the job itself: the device it runs on, the torch threads, the torchrun
world (sample sharding inside one EvalJob), logging. Built in each worker process."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .distributed import World, init_from_env, launched_by_torchrun, local_device
from .env import environment, resolve_device


def available_cpus() -> int:
    """The CPUs this process may use (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):       # not on Linux
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """torch threads per worker: the CPUs this process may use, divided among the workers."""
    return max(1, available_cpus() // max(1, workers))


@dataclass
class JobContext:
    device: torch.device
    threads: int
    world: World = field(default_factory=World)
    progress: bool = False
    accelerate: dict = field(default_factory=dict)   # sampling only: Denoiser.accelerated(**accelerate)
    log: object = None

    def say(self, *args) -> None:
        if self.log is not None and self.world.is_main:
            self.log(*args)

    @property
    def env(self) -> dict:
        return environment(self.device)


def make_context(device_request: str, threads: int, progress: bool = False, accelerate: dict | None = None,
                 log=None, shard_with_torchrun: bool = False) -> JobContext:
    """Set the thread count, resolve the device; under torchrun (and only when asked: the inline
    executor), join the process group so one EvalJob shards its samples over the ranks."""
    torch.set_num_threads(int(threads))
    device = resolve_device(device_request)
    world = World()
    if shard_with_torchrun and launched_by_torchrun():
        world = init_from_env(device)
        device = local_device(device, world)
    return JobContext(device, int(threads), world, progress, dict(accelerate or {}), log)
