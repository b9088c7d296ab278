"""The executor protocol."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Done:
    """A finished job: `outcome` when it succeeded, else `reason` (one line) and `details`
    (traceback or worker log)."""
    job: object
    outcome: object = None
    reason: str | None = None
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


class Executor:
    """submit(job) starts a ready job; wait() blocks until at least one started job finished and
    returns the finished ones; free_slots() says how many more may start now."""

    name = "executor"
    workers = 1
    threads = 1
    follower = False      # a torchrun rank > 0: computes its share of each job, writes nothing
    eager = False         # submits every job at once, dependencies enforced by the backend (Slurm)

    def free_slots(self) -> int:
        raise NotImplementedError

    def submit(self, job) -> None:
        raise NotImplementedError

    def wait(self) -> list[Done]:
        raise NotImplementedError

    def running(self) -> list:
        return []

    def cancel(self, job_id: str) -> None:
        """Withdraw a submitted job (eager executors: a job whose dependency failed)."""
        return None

    def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker(s), {self.threads} torch thread(s) each)"
