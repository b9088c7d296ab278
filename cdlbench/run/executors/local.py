"""local: N worker processes on this machine, each running one job at a time.

With CUDA, one worker per visible GPU (each worker sees only its device through
CUDA_VISIBLE_DEVICES) unless --jobs says otherwise; on CPU each worker runs with
max(1, cpus // N) torch threads. Workers are plain `multiprocessing` processes (spawned, so
each starts a clean torch) talking to the coordinator over a pipe; a worker that dies in the
middle of a job (killed, out of memory) loses only that job, which fails with the reason, and is
replaced by a fresh worker for the jobs still queued.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.connection import wait as wait_for

from ..jobs import WorkerSettings, failure_details, run_in_worker
from .base import Done, Executor


def _worker(conn, settings: WorkerSettings, gpu: str | None) -> None:
    """A worker process: receive a job, run it, send back ("ok", outcome) or ("error", reason, tb)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        try:
            conn.send(("ok", run_in_worker(job, settings)))
        except KeyboardInterrupt:
            return
        except Exception as exc:
            reason, details = failure_details(exc)
            conn.send(("error", reason, details))


class _Slot:
    def __init__(self, index: int, settings: WorkerSettings, gpu: str | None, ctx):
        self.index, self.settings, self.gpu = index, settings, gpu
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = ctx.Process(target=_worker, args=(child, settings, gpu), daemon=True,
                                   name=f"cdlbench-worker-{index}")
        self.process.start()
        child.close()
        self.job = None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def visible_gpus() -> list[str]:
    """CUDA devices this process may use (their indices as CUDA_VISIBLE_DEVICES names them)."""
    import torch

    if not torch.cuda.is_available():
        return []
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    if names:
        return [n.strip() for n in names.split(",") if n.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, device: str, jobs: int | None, threads: int, progress: bool = False,
                 accelerate: dict | None = None):
        gpus = visible_gpus() if device in ("auto", "cuda") else []
        self.workers = int(jobs) if jobs else max(1, len(gpus))
        self.threads = int(threads)
        self.gpus = [gpus[i % len(gpus)] for i in range(self.workers)] if gpus else [None] * self.workers
        self.settings = WorkerSettings(device, self.threads, False, tuple(sorted((accelerate or {}).items())))
        self.ctx = mp.get_context("spawn")
        self.slots = [_Slot(i, self.settings, self.gpus[i], self.ctx) for i in range(self.workers)]

    def free_slots(self) -> int:
        return sum(1 for s in self.slots if s.job is None)

    def submit(self, job) -> None:
        slot = next(s for s in self.slots if s.job is None)
        slot.job = job
        slot.conn.send(job)

    def running(self) -> list:
        return [s.job for s in self.slots if s.job is not None]

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots]

    def wait(self) -> list[Done]:
        busy = [s for s in self.slots if s.job is not None]
        if not busy:
            return []
        ready = wait_for([s.conn for s in busy] + [s.process.sentinel for s in busy])
        done = []
        for slot in busy:
            if slot.conn in ready:
                try:
                    msg = slot.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None:
                    done.append(Done(slot.job, msg[1]) if msg[0] == "ok" else
                                Done(slot.job, reason=msg[1], details=msg[2]))
                    slot.job = None
                    continue
            if slot.process.sentinel in ready or not slot.process.is_alive():
                slot.process.join()
                code = slot.process.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                done.append(Done(slot.job, reason=f"worker process {slot.process.pid} died in the middle of the "
                                 f"job ({how}); rerun the same command to retry it"))
                self.slots[slot.index] = _Slot(slot.index, self.settings, slot.gpu, self.ctx)
        return done

    def close(self) -> None:
        for s in self.slots:
            s.stop()
