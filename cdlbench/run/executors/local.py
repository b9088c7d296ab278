"""local: N worker processes on this machine, each running one job at a time.

With CUDA, one worker per visible GPU (each worker sees only its device through
CUDA_VISIBLE_DEVICES) unless --jobs says otherwise; on CPU each worker runs with
max(1, cpus // N) torch threads (the default executor gives one each: cdlbench/run/coordinator.py).
Workers are plain `multiprocessing` processes (spawned, so each starts a clean torch) talking to
the coordinator over a pipe.

Supervision:
- a worker that dies in the middle of a job (killed, out of memory) fails only that job's cells,
  with the reason; the job is not retried (what killed the worker would likely kill the next
  one: rerun the same command to retry it) and a fresh worker takes the jobs still queued;
- a worker that dies while idle is replaced at once, with a message; no job is lost;
- workers end with their coordinator: on Linux the kernel kills them when it dies
  (prctl PR_SET_PDEATHSIG), elsewhere a watch thread notices that their parent changed;
- workers ignore SIGINT (they are started with it ignored, so not even their start-up prints a
  KeyboardInterrupt): Ctrl-C reaches the coordinator, which stops them.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait as wait_for

from ..jobs import WorkerSettings, failure_details, run_in_worker
from .base import Done, Executor

PARENT_POLL_SECONDS = 0.5        # the portable parent watch's period
MAX_IDLE_DEATHS = 5              # per slot, in a row: a worker that keeps dying before any job is a bug


def _end_with_parent(parent_pid: int) -> None:
    """Make this worker die with the coordinator that started it (no orphans training on)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    if os.getppid() != parent_pid:      # the coordinator died while this worker was starting
        os._exit(1)
    threading.Thread(target=watch, name="cdlbench-parent-watch", daemon=True).start()


def _thread_lock_for_tqdm() -> None:
    """tqdm's default lock holds a multiprocessing semaphore; a worker killed mid-job (kill -9, or
    the coordinator stopping a busy worker) would leave it behind and the resource tracker would
    warn about it at exit. A worker shows no progress bar, a thread lock is enough."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _worker(conn, settings: WorkerSettings, gpu: str | None, parent_pid: int | None = None) -> None:
    """A worker process: receive a job, run it, send back ("ok", outcome) or ("error", reason, tb)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # inherited ignored already; the coordinator handles Ctrl-C
    if parent_pid is not None:
        _end_with_parent(parent_pid)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _thread_lock_for_tqdm()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
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


def _start_ignoring_sigint(process) -> None:
    """Start `process` with SIGINT ignored: an ignored signal stays ignored across exec, so the
    spawned interpreter never turns a Ctrl-C into a KeyboardInterrupt, not even while importing
    torch. SIGINT is blocked in this thread meanwhile (on Linux a blocked signal stays pending
    instead of being dropped, and is delivered to the coordinator's handler once restored)."""
    main = threading.current_thread() is threading.main_thread()
    if not main or not hasattr(signal, "pthread_sigmask"):
        process.start()
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _how(code) -> str:
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


class _Slot:
    def __init__(self, index: int, settings: WorkerSettings, gpu: str | None, ctx):
        self.index, self.settings, self.gpu = index, settings, gpu
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = ctx.Process(target=_worker, args=(child, settings, gpu, os.getpid()), daemon=True,
                                   name=f"cdlbench-worker-{index}")
        _start_ignoring_sigint(self.process)
        child.close()
        self.job = None
        self.idle_deaths = 0

    def dead(self) -> bool:
        return not self.process.is_alive()

    def stop(self) -> None:
        """Idle: ask it to exit; busy (the run is being aborted): kill it at once."""
        if self.job is None:
            try:
                self.conn.send(None)
            except OSError:          # already dead (BrokenPipeError included)
                pass
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


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
                 accelerate: dict | None = None, log=None):
        gpus = visible_gpus() if device in ("auto", "cuda") else []
        self.workers = int(jobs) if jobs else max(1, len(gpus))
        self.threads = int(threads)
        self.gpus = [gpus[i % len(gpus)] for i in range(self.workers)] if gpus else [None] * self.workers
        self.settings = WorkerSettings(device, self.threads, False, tuple(sorted((accelerate or {}).items())))
        self.ctx = mp.get_context("spawn")
        self.log = log
        self._failed: list[Done] = []        # jobs that could not be handed to any worker
        self.slots: list[_Slot] = []
        try:
            for i in range(self.workers):
                self.slots.append(_Slot(i, self.settings, self.gpus[i], self.ctx))
        except BaseException:          # Ctrl-C (or a failed start) half-way: no worker left behind
            self.close()
            raise

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)
        else:
            print(text, file=sys.stderr)

    def _replace(self, slot: _Slot) -> _Slot:
        """A fresh worker in a dead one's place."""
        slot.process.join()
        slot.conn.close()
        fresh = _Slot(slot.index, self.settings, slot.gpu, self.ctx)
        self.slots[slot.index] = fresh
        return fresh

    def _replace_idle(self, slot: _Slot) -> _Slot:
        """An idle worker died (killed, crashed): replace it, say so; no job is lost."""
        slot.process.join()
        code = slot.process.exitcode
        if slot.idle_deaths + 1 >= MAX_IDLE_DEATHS:
            raise RuntimeError(f"local executor: worker {slot.index} died {MAX_IDLE_DEATHS} times in a row before "
                               f"running a job (last: {_how(code)}); see the output above")
        fresh = self._replace(slot)
        fresh.idle_deaths = slot.idle_deaths + 1
        self._say(f"  worker {slot.index} (pid {slot.process.pid}) died while idle ({_how(code)}); "
                  f"started worker pid {fresh.process.pid} in its place")
        return fresh

    def free_slots(self) -> int:
        return sum(1 for s in self.slots if s.job is None)

    def submit(self, job) -> None:
        slot = next(s for s in self.slots if s.job is None)
        for _ in range(MAX_IDLE_DEATHS):
            if slot.dead():
                slot = self._replace_idle(slot)
            try:
                slot.conn.send(job)
            except OSError:        # it died between the check and the send (BrokenPipeError): not started
                slot.process.join(timeout=5)
                continue
            slot.job = job
            slot.idle_deaths = 0
            return
        self._failed.append(Done(job, reason=f"no worker process could be started for it (worker {slot.index} "
                                 f"kept dying: {_how(slot.process.exitcode)})"))

    def running(self) -> list:
        return [s.job for s in self.slots if s.job is not None] + [d.job for d in self._failed]

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots]

    def wait(self) -> list[Done]:
        while True:
            if self._failed:
                done, self._failed = self._failed, []
                return done
            busy = [s for s in self.slots if s.job is not None]
            if not busy:
                return []
            # idle workers' sentinels too: one that dies is replaced now, not at its next job
            ready = wait_for([s.conn for s in busy] + [s.process.sentinel for s in self.slots])
            done = []
            for slot in list(self.slots):
                if slot.job is None:
                    if slot.process.sentinel in ready:
                        self._replace_idle(slot)
                    continue
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
                if slot.process.sentinel in ready or slot.dead():
                    slot.process.join()
                    code = slot.process.exitcode
                    done.append(Done(slot.job, reason=f"worker process {slot.process.pid} died in the middle of the "
                                     f"job ({_how(code)}); rerun the same command to retry it"))
                    self._replace(slot)
            if done:
                return done

    def close(self) -> None:
        for s in self.slots:
            s.stop()
