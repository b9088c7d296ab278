"""submitit: every job one Slurm job through the `submitit` package (extra `slurm`).

A job is submitted when the jobs it depends on have finished (an EvalJob after its TrainJob, a
fine-tune after its pretraining), on Slurm as with submitit's local backend (`cluster: local`:
real subprocesses through submitit's own machinery). Submitting everything at once with Slurm
dependencies (afterok) was tried and dropped: a failed training leaves its EvalJobs pending
with `DependencyNeverSatisfied` for ever, and every queued job has to be cancelled by someone.
Submitting on success costs one queue wait per dependency level and in exchange nothing can sit
in the queue waiting for a job that will never succeed, a failed training fails its EvalJobs at
once with its reason, and a training whose weights could not be cached hands them to its
EvalJobs.

Watching jobs on Slurm does not rely on accounting (`sacct`, absent on many small clusters):
the executor asks `squeue` for the state of its jobs; a job with a result file is finished; a
job that left the queue, or ended (CANCELLED by `scancel`, also `-s KILL`, TIMEOUT, NODE_FAIL,
OUT_OF_MEMORY, ...) without writing its result within GONE_GRACE_SECONDS fails with that state as
its reason. Only its cells fail; a rerun of the same command runs them again.

The coordinator must stay alive while the jobs run: exiting it (Ctrl-C, SIGTERM, SIGHUP, an
error) cancels every job it has in the queue. Job folders (submitit's pickles, logs) live in
RUN_DIR/.submitit; the run directory, the checkpoint cache and the Python environment must be
at the same paths on every node (docs/slurm.md).
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from ...errors import UserError
from ..jobs import WorkerSettings, failure_details, run_in_worker
from .base import Done, Executor

POLL_SECONDS = 0.25
SQUEUE_EVERY_SECONDS = 2.0      # how often the queue is asked (one squeue call for all jobs)
GONE_GRACE_SECONDS = 10.0       # a job out of the queue without its result file: wait this long
                                # for the file (a shared filesystem's delay), then it failed
DEFAULT_TIME_MINUTES = 60
MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor submitit needs the submitit package: pip install 'cdlbench[slurm]'") from None
    return submitit


def _slurm_tool(name: str, cluster_given: bool) -> str:
    path = shutil.which(name)
    if path is None:
        how = "--slurm-cluster slurm" if cluster_given else "--executor submitit (on Slurm by default)"
        raise UserError(f"{how}: `{name}` is not on the PATH, so there is no Slurm here; run where Slurm's "
                        "commands are, or give --slurm-cluster local to run each job as a local subprocess "
                        "through submitit")
    return path


def check_partition(partition: str | None) -> None:
    """The cluster answers, and the partition (when given) is one of its partitions."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserError("--executor submitit: Slurm does not answer (`sinfo` took over 60 s)") from None
    if proc.returncode != 0:
        raise UserError(f"--executor submitit: Slurm does not answer: {proc.stderr.strip() or 'sinfo failed'}")
    names = sorted({ln.strip() for ln in proc.stdout.splitlines() if ln.strip()})
    if partition is not None and partition not in names:
        raise UserError(f"--slurm-partition: no partition {partition!r} on this cluster; "
                        f"its partitions: {', '.join(names) or '(none)'}")


def slurm_parameters(partition=None, gpus_per_job=None, cpus_per_job=None, account=None, mem=None, qos=None,
                     constraint=None, gpu_type=None, setup=None) -> dict:
    """submitit's slurm_* parameters for the options given (each becomes one #SBATCH line; setup
    lines run in the batch script before the job starts)."""
    if mem is not None and not MEMORY.match(str(mem)):
        raise UserError(f"--slurm-mem: expected a size such as 4G or 16000M (a number, unit K, M, G or T), got {mem!r}")
    params = {"slurm_partition": partition, "slurm_account": account, "cpus_per_task": cpus_per_job,
              "slurm_mem": None if mem is None else str(mem), "slurm_qos": qos, "slurm_constraint": constraint,
              "slurm_setup": list(setup) if setup else None}
    if gpu_type:     # a GPU model: --gres=gpu:TYPE:N (N from --slurm-gpus-per-job, default 1)
        params["slurm_gres"] = f"gpu:{gpu_type}:{gpus_per_job if gpus_per_job else 1}"
    else:
        params["gpus_per_node"] = gpus_per_job
    return {"tasks_per_node": 1, "nodes": 1, **{k: v for k, v in params.items() if v is not None}}


def run_and_report(job, settings: WorkerSettings):
    """The function each submitit job runs: ("ok", outcome), or ("error", reason, traceback) when
    the job raised, so its cells fail with the same one-line reason as under the other executors."""
    try:
        return ("ok", run_in_worker(job, settings))
    except Exception as exc:
        reason, details = failure_details(exc)
        return ("error", reason, details)


def _failure_reason(text: str) -> str:
    """The job's own exception line from submitit's FailedJobError, whose message is the job's
    traceback between two dashed rules followed by where its logs are."""
    parts = text.split("-" * 22)
    body = parts[1] if len(parts) >= 3 else text
    lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class SubmititExecutor(Executor):
    name = "submitit"

    def __init__(self, folder: str | Path, device: str, threads: int, cluster: str | None = None,
                 partition: str | None = None, gpus_per_job: int | None = None, cpus_per_job: int | None = None,
                 time_minutes: int | None = None, account: str | None = None, max_running: int | None = None,
                 accelerate: dict | None = None, mem: str | None = None, qos: str | None = None,
                 constraint: str | None = None, gpu_type: str | None = None, setup: list | None = None):
        submitit = import_submitit()
        self.submitit = submitit
        if cluster == "slurm" or cluster is None:
            for tool in ("sbatch", "squeue", "sinfo", "scancel"):
                _slurm_tool(tool, cluster is not None)
        self.cluster = cluster or "slurm"
        params = {"timeout_min": int(time_minutes or DEFAULT_TIME_MINUTES), "name": "cdlbench"}
        if self.cluster == "slurm":
            params.update(slurm_parameters(partition, gpus_per_job, cpus_per_job, account, mem, qos, constraint,
                                           gpu_type, setup))
            check_partition(partition)
        self.threads = int(cpus_per_job or threads)
        self.workers = int(max_running or 0) or (1 << 30)
        self.settings = WorkerSettings(device, self.threads, False, tuple(sorted((accelerate or {}).items())))
        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        self.executor.update_parameters(**params)
        self.handles: dict[str, tuple] = {}        # job id -> (job, submitit job)
        self._ended: dict[str, tuple] = {}         # Slurm job id -> (state, when seen out of the queue)
        self._last_squeue = 0.0
        self._states: dict[str, str] = {}
        self._signals = self._cancel_on_signals()

    # ------------------------------------------------------------- the coordinator's life
    def _cancel_on_signals(self) -> dict:
        """SIGTERM and SIGHUP end the coordinator like Ctrl-C (KeyboardInterrupt), so that close()
        cancels its queued jobs; the previous handlers come back in close()."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, interrupt)
            except (ValueError, OSError):
                pass
        return previous

    # ------------------------------------------------------------- the executor protocol
    def free_slots(self) -> int:
        return max(0, self.workers - len(self.handles))

    def submit(self, job, after: list[str] | None = None) -> None:
        try:
            handle = self.executor.submit(run_and_report, job, self.settings)
        except self.submitit.core.utils.FailedJobError as exc:     # sbatch refused the job
            text = " ".join(str(exc).split())
            option = "--slurm-partition" if "partition" in text.lower() else "the --slurm-* options"
            raise UserError(f"{option}: sbatch refused the job: {text}") from None
        self.handles[job.id] = (job, handle)

    def running(self) -> list:
        return [job for job, _ in self.handles.values()]

    def wait(self) -> list[Done]:
        while self.handles:
            done = []
            if self.cluster == "slurm":
                self._poll_queue()
            for jid, (job, handle) in list(self.handles.items()):
                finished = self._slurm_finished(handle) if self.cluster == "slurm" else handle.done()
                if finished is False:
                    continue
                del self.handles[jid]
                if isinstance(finished, str):          # gone from the queue without a result
                    done.append(self._lost(job, handle, finished))
                    continue
                try:
                    msg = handle.result()
                    where = f" (submitit job {handle.job_id}; log in {self.folder / str(handle.job_id)})"
                    done.append(Done(job, msg[1]) if msg[0] == "ok" else
                                Done(job, reason=msg[1] + where, details=msg[2]))
                except Exception as exc:     # the job died outside the function (submitit reports it)
                    text = str(exc)
                    reason = _failure_reason(text) or type(exc).__name__
                    done.append(Done(job, reason=f"{reason} (submitit job {handle.job_id}; log in "
                                     f"{self.folder / str(handle.job_id)})", details=text))
            if done:
                return done
            time.sleep(POLL_SECONDS)
        return []

    # ------------------------------------------------------------- watching Slurm without sacct
    def _poll_queue(self) -> None:
        """One squeue call for every job still watched: Slurm job id -> state (PENDING, RUNNING,
        COMPLETING, or an end state while Slurm still lists the job); absent: out of the queue."""
        now = time.monotonic()
        if now - self._last_squeue < SQUEUE_EVERY_SECONDS:
            return
        self._last_squeue = now
        ids = [str(h.job_id) for _, h in self.handles.values()]
        try:
            proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return                           # the controller is busy: ask again next time
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return                           # the controller does not answer: no verdict from silence
        states = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        self._states = {i: states.get(i, "gone from the queue") for i in ids}

    def _slurm_finished(self, handle):
        """True: the result file is there; False: still queued or running; a string: the Slurm
        state it ended in, without a result after the grace period."""
        if handle.paths.result_pickle.exists():
            return True
        sid = str(handle.job_id)
        state = self._states.get(sid)
        if state is None or (state not in SLURM_ENDED and state != "gone from the queue"):
            self._ended.pop(sid, None)
            return False
        seen = self._ended.setdefault(sid, (state, time.monotonic()))
        if time.monotonic() - seen[1] < GONE_GRACE_SECONDS:
            return False
        try:                                 # a shared filesystem may show the file late: look again
            handle.paths.folder.chmod(handle.paths.folder.stat().st_mode)
        except OSError:
            pass
        return True if handle.paths.result_pickle.exists() else seen[0]

    def _lost(self, job, handle, state: str) -> Done:
        self._ended.pop(str(handle.job_id), None)
        log = ""
        for path in (handle.paths.stderr, handle.paths.stdout):
            try:
                log = "\n".join(path.read_text(errors="replace").splitlines()[-40:])
            except OSError:
                continue
            if log.strip():
                break
        how = "was cancelled (scancel)" if state == "CANCELLED" else f"ended as {state}"
        return Done(job, reason=f"Slurm job {handle.job_id} {how} without a result; rerun the same command to "
                    f"retry it (log in {self.folder / str(handle.job_id)})", details=log)

    # ------------------------------------------------------------- cancelling
    def cancel(self, job_id: str) -> None:
        if job_id in self.handles:
            self._scancel([self.handles.pop(job_id)[1]])

    def _scancel(self, handles: list) -> None:
        if not handles:
            return
        if self.cluster == "slurm":
            try:
                subprocess.run(["scancel", *[str(h.job_id) for h in handles]], capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
            return
        for handle in handles:
            try:
                handle.cancel(check=False)
            except Exception:      # already finished or gone
                pass

    def close(self) -> None:
        """Cancel every job still queued or running (the coordinator is leaving)."""
        self._scancel([h for _, h in self.handles.values()])
        self.handles.clear()
        for sig, handler in self._signals.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass
        self._signals = {}

    def describe(self) -> str:
        return f"submitit ({self.cluster} backend, {self.threads} torch thread(s) per job)"
