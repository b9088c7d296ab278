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

    def free_slots(self) -> int:
        raise NotImplementedError

    def submit(self, job) -> None:
        raise NotImplementedError

    def wait(self) -> list[Done]:
        raise NotImplementedError

    def running(self) -> list:
        return []

    def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker(s), {self.threads} torch thread(s) each)"
