"""One entry point for every executor: `run_job(job, ctx)` dispatches to the job's function, and
`run_in_worker(job, settings)` builds the context first (a worker process, a Slurm job)."""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from .context import JobContext, make_context
from .eval_job import EvalJob, eval_job
from .plan import TrainJob
from .train_job import train_job
from .training import NonFiniteLoss


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker builds its JobContext (picklable: sent to worker processes and Slurm jobs)."""
    device: str
    threads: int
    progress: bool = False
    accelerate: tuple = ()            # sorted items of the sampling-only acceleration options


def run_job(job, ctx: JobContext):
    if isinstance(job, TrainJob):
        return train_job(job, ctx)
    if isinstance(job, EvalJob):
        return eval_job(job, ctx)
    raise TypeError(f"not a job: {type(job).__name__}")


def run_in_worker(job, settings: WorkerSettings):
    """Build the worker's context (threads, device) and run the job; used by the local and the
    submitit executors. Exceptions propagate: the executor records them as the job's failure."""
    ctx = make_context(settings.device, settings.threads, settings.progress, dict(settings.accelerate))
    return run_job(job, ctx)


def failure_reason(exc: BaseException) -> str:
    """One line: the exception and where it was raised."""
    if isinstance(exc, NonFiniteLoss):
        return f"non-finite loss: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def failure_details(exc: BaseException) -> tuple[str, str]:
    """(one-line reason, full traceback text) of a job's exception."""
    return failure_reason(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
