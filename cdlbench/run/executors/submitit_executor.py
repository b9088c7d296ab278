"""submitit: every job one Slurm job through the `submitit` package (extra `slurm`).

On a Slurm cluster (`cluster: slurm`, the default when sbatch is on the PATH) every job is
submitted at once, each EvalJob with a Slurm dependency (afterok) on its TrainJob, and the
coordinator waits, shows progress and collects the records. With submitit's local backend
(`cluster: local`: real subprocesses through submitit's own machinery, what the tests use) an
EvalJob is submitted when its TrainJob has finished. Job folders (submitit's pickles, logs)
live in RUN_DIR/.submitit; the run directory and the checkpoint cache must be on a filesystem
that every node sees.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ...errors import UserError
from ..jobs import WorkerSettings, run_in_worker
from .base import Done, Executor

POLL_SECONDS = 0.25


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor submitit needs the submitit package: pip install 'cdlbench[slurm]'") from None
    return submitit


def default_cluster() -> str:
    return "slurm" if shutil.which("sbatch") else "local"


class SubmititExecutor(Executor):
    name = "submitit"

    def __init__(self, folder: str | Path, device: str, threads: int, cluster: str | None = None,
                 partition: str | None = None, gpus_per_job: int | None = None, cpus_per_job: int | None = None,
                 time_minutes: int | None = None, account: str | None = None, max_running: int | None = None,
                 accelerate: dict | None = None):
        submitit = import_submitit()
        self.submitit = submitit
        self.cluster = cluster or default_cluster()
        self.threads = int(cpus_per_job or threads)
        self.workers = int(max_running or 0) or (1 << 30)
        self.settings = WorkerSettings(device, self.threads, False, tuple(sorted((accelerate or {}).items())))
        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        params = {"timeout_min": int(time_minutes or 60), "name": "cdlbench"}
        if self.cluster == "slurm":
            params.update({k: v for k, v in {"slurm_partition": partition, "slurm_account": account,
                                             "gpus_per_node": gpus_per_job, "cpus_per_task": cpus_per_job,
                                             "tasks_per_node": 1, "nodes": 1}.items() if v is not None})
        self.executor.update_parameters(**params)
        self.handles: dict[str, tuple] = {}        # job id -> (job, submitit job)
        self.eager = self.cluster == "slurm"       # submit everything at once, with dependencies

    def free_slots(self) -> int:
        return max(0, self.workers - len(self.handles))

    def submit(self, job, after: list[str] | None = None) -> None:
        if after and self.eager:
            deps = ":".join(self.handles[j][1].job_id for j in after if j in self.handles)
            if deps:
                self.executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{deps}"})
        try:
            handle = self.executor.submit(run_in_worker, job, self.settings)
        finally:
            if after and self.eager:
                self.executor.update_parameters(slurm_additional_parameters={})
        self.handles[job.id] = (job, handle)

    def running(self) -> list:
        return [job for job, _ in self.handles.values()]

    def wait(self) -> list[Done]:
        while self.handles:
            done = []
            for jid, (job, handle) in list(self.handles.items()):
                if not handle.done():
                    continue
                del self.handles[jid]
                try:
                    done.append(Done(job, handle.result()))
                except Exception as exc:     # the job raised, or died (submitit reports both)
                    text = str(exc)
                    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
                    reason = lines[-1] if lines else type(exc).__name__
                    done.append(Done(job, reason=f"{reason} (submitit job {handle.job_id}; log in "
                                     f"{self.folder / str(handle.job_id)})", details=text))
            if done:
                return done
            time.sleep(POLL_SECONDS)
        return []

    def cancel(self, job_id: str) -> None:
        if job_id in self.handles:
            self.handles.pop(job_id)[1].cancel(check=False)

    def close(self) -> None:
        for _, handle in list(self.handles.values()):
            try:
                handle.cancel(check=False)
            except Exception:      # already finished or gone
                pass
        self.handles.clear()

    def describe(self) -> str:
        return f"submitit ({self.cluster} backend, {self.threads} torch thread(s) per job)"
