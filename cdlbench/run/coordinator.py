"""The coordinator: plan the suite, hand ready jobs to an executor, collect what they return and
write the run directory, which it alone writes (config.yaml first, then records.jsonl,
curves.jsonl, failures.jsonl and samples/, under the run directory's lock).

    suite -> plan -> [TrainJob, EvalJob, ...] -> executor (inline | local | submitit)
          -> outcomes -> coordinator -> RUN_DIR

Resume: cells whose records are complete are skipped, train jobs none of whose cells remain are
not run. A failed job records its reason and the others go on; an EvalJob whose TrainJob failed
fails with the training's reason. `Runner` keeps the one-object interface of earlier versions.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..registry import METRICS
from ..suite.schema import Suite
from .context import available_cpus, default_threads, make_context
from .eval_job import summary_line
from .executors import EXECUTORS, Done
from .lock import RunLock
from .plan import EvalJob, TrainJob, plan
from .rundir import RunDir, RunDirUnwritable, suite_config_hash, write_run_file


@dataclass
class RunSummary:
    run_dir: Path
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # (cell name, reason)
    executor: str = ""
    seconds: float = 0.0                         # wall-clock of the jobs' loop


@dataclass
class RunOptions:
    """How to run a suite (changes no number); the command line fills it, the suite's `executor:`
    block gives what the command line leaves unset."""
    device: str | None = None
    use_cache: bool = True
    cache_dir: str | Path | None = None
    progress: bool = True
    executor: str | None = None
    jobs: int | None = None
    threads: int | None = None
    accelerate: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)       # partition, time, mem, qos, gpu_type, setup, ... (--slurm-*)
    default_executor: str = "inline"                # when neither the options nor the suite name one (CLI: auto)

    def merged(self, suite: Suite) -> "RunOptions":
        block = dict(suite.executor or {})
        slurm = {k[len("slurm_"):]: v for k, v in block.items() if k.startswith("slurm_")}
        return dataclasses.replace(self, executor=self.executor or block.get("name") or self.default_executor,
                                   jobs=self.jobs or block.get("jobs"), threads=self.threads or block.get("threads"),
                                   slurm={**slurm, **{k: v for k, v in self.slurm.items() if v is not None}})


def samples_file(run_path: Path, cell: str) -> Path:
    """RUN_DIR/samples/<cell, made safe>-<digest>.npz (names capped; the digest keeps them apart)."""
    import hashlib

    safe = "".join(ch if ch.isalnum() or ch in "._=-" else "_" for ch in cell.replace("/", "__"))[:150]
    return Path(run_path) / "samples" / f"{safe}-{hashlib.sha256(cell.encode()).hexdigest()[:8]}.npz"


def write_samples(run_path: Path, cell: str, blob: bytes) -> None:
    """Write a cell's samples file atomically (an unpredictable temporary name, created
    exclusively, then rename; never through a link: cdlbench/run/rundir.py)."""
    write_run_file(samples_file(run_path, cell), blob)


def default_cache(out_dir: Path) -> Path:
    """The checkpoint cache: $CDLBENCH_CACHE, else `cache` beside the run directory (results/cache
    for the default results/<suite>)."""
    env = os.environ.get("CDLBENCH_CACHE", "").strip()
    return Path(env) if env else Path(out_dir).parent / "cache"


def _under_torchrun() -> bool:
    from .distributed import launched_by_torchrun

    return launched_by_torchrun()


def resolve_auto(opts: RunOptions, pending: int) -> RunOptions:
    """`auto` (the command line's default): use the machine. On CPU, min(CPUs, jobs to run) local
    workers with one torch thread each (one thread: the committed runs' numbers, bit for bit;
    the thread count is in every record's env_device); on GPUs one worker per visible GPU. Where
    that is one worker (one CPU, one GPU, one job) the job runs inline, with the same settings
    and no process to start; under torchrun, inline (it shards each EvalJob over the ranks)."""
    from .executors.local import visible_gpus

    device = opts.device or "auto"
    gpus = visible_gpus() if device in ("auto", "cuda") else []
    if _under_torchrun():
        return dataclasses.replace(opts, executor="inline", threads=opts.threads or (None if gpus else 1))
    workers = opts.jobs or max(1, min(len(gpus) or available_cpus(), pending))
    threads = opts.threads or (None if gpus else 1)
    return dataclasses.replace(opts, executor="local" if workers > 1 else "inline", jobs=workers, threads=threads)


def make_executor(opts: RunOptions, run_dir: Path, log, pending: int | None = None):
    """The executor the options name, with its thread count (default: the CPUs this process may
    use, divided among its workers); `auto` is resolved for `pending` jobs (resolve_auto)."""
    if opts.executor == "auto":
        opts = resolve_auto(opts, 1 if pending is None else pending)
    device = opts.device or "auto"
    if opts.executor == "inline":
        threads = opts.threads or default_threads(1)
        ctx = make_context(device, threads, opts.progress, opts.accelerate, log, shard_with_torchrun=True)
        return EXECUTORS["inline"](ctx)
    if opts.executor == "local":
        from .executors.local import visible_gpus

        gpus = visible_gpus() if device in ("auto", "cuda") else []
        workers = opts.jobs or len(gpus) or max(1, min(available_cpus(), 8))
        return EXECUTORS["local"](device, workers, opts.threads or default_threads(1 if gpus else workers),
                                  accelerate=opts.accelerate, log=log)
    s = opts.slurm
    return EXECUTORS["submitit"](run_dir / ".submitit", device, opts.threads or s.get("cpus_per_job") or 1,
                                 cluster=s.get("cluster"), partition=s.get("partition"),
                                 gpus_per_job=s.get("gpus_per_job"), cpus_per_job=s.get("cpus_per_job"),
                                 time_minutes=s.get("time"), account=s.get("account"), max_running=opts.jobs,
                                 accelerate=opts.accelerate, mem=s.get("mem"), qos=s.get("qos"),
                                 constraint=s.get("constraint"), gpu_type=s.get("gpu_type"), setup=s.get("setup"))


class Coordinator:
    def __init__(self, suite: Suite, out_dir: str | Path, options: RunOptions | None = None, log=print):
        self.suite = suite
        self.opts = (options or RunOptions()).merged(suite)
        if self.opts.executor not in EXECUTORS and self.opts.executor != "auto":
            raise UserError(f"--executor: unknown executor {self.opts.executor!r}; choose from auto, "
                            f"{', '.join(EXECUTORS)}")
        self.run = RunDir(out_dir)
        self.cache_dir = Path(self.opts.cache_dir) if self.opts.cache_dir else default_cache(self.run.path)
        self.log = log
        self.config_hash = suite_config_hash(suite.resolved())
        for m in suite.metrics:     # e.g. FID: optional packages and weights present, before any training
            METRICS[m.name].preflight(m.params)

    # ------------------------------------------------------------- the run
    def execute(self) -> RunSummary:
        """Run every cell not yet complete, holding the run directory's lock (cdlbench/run/lock.py)."""
        self.executor = None        # `auto`: made once the jobs to run are known (_execute)
        if self.opts.executor != "auto" or _under_torchrun():
            self.executor = make_executor(self.opts, self.run.path, self.log)
        try:
            if self.executor is not None and self.executor.follower:
                return self._follow()
            with RunLock(self.run.path):
                self.run.check_resumable(self.suite.resolved(), self.config_hash)
                self.run.clean_temporaries()
                self.run.write_config(self.suite.resolved())
                return self._execute(self.run.complete_cells(self.config_hash))
        finally:
            if self.executor is not None:
                self.executor.close()

    def _follow(self) -> RunSummary:
        """A torchrun rank > 0: the same jobs as rank 0 (it computes its share of every EvalJob's
        samples), nothing written."""
        return self._execute(self.run.complete_cells(self.config_hash), write=False)

    def _execute(self, complete: set, write: bool = True) -> RunSummary:
        summary = RunSummary(self.run.path, executor=self.executor.describe() if self.executor is not None else "")
        jobs = plan(self.suite, device=self.opts.device, cache_dir=self.cache_dir, use_cache=self.opts.use_cache)
        evals = [j for j in jobs if isinstance(j, EvalJob)]
        summary.skipped = [j.cell for j in evals if j.cell in complete]
        wanted = {j.train_id for j in evals if j.cell not in complete}
        by_id = {j.id: j for j in jobs}
        for tid in list(wanted):                     # and the pretrainings those depend on
            stack = [tid]
            while stack:
                for dep in by_id[stack.pop()].depends_on:
                    if dep not in wanted:
                        wanted.add(dep)
                        stack.append(dep)
        queue = [j for j in jobs if (isinstance(j, EvalJob) and j.cell not in complete)
                 or (isinstance(j, TrainJob) and j.id in wanted)]
        self.write = write
        if self.executor is None:
            self.executor = make_executor(self.opts, self.run.path, self.log, pending=len(queue))
            summary.executor = self.executor.describe()
        self.say(f"{len(queue)} job(s) to run with {summary.executor}; {len(summary.skipped)} cell(s) already complete")
        finished: dict[str, Done] = {}
        started = time.perf_counter()
        while queue or self.executor.running():
            queue = self._fail_orphans(queue, finished, summary)
            eager = self.executor.eager
            ready = [j for j in queue if eager or all(d in finished for d in j.depends_on)]
            for job in ready[: self.executor.free_slots()]:
                queue.remove(job)
                job = self._with_weights(job, finished)
                self.say(f"[{self._progress(finished, queue, starting=1)}] start {self._name(job)}")
                self.executor.submit(job, list(job.depends_on)) if eager else self.executor.submit(job)
            if not self.executor.running():
                if queue and not ready:     # cannot happen: every dependency is planned before its job
                    raise RuntimeError(f"no job can start: {[j.id for j in queue][:3]} wait on unplanned jobs")
                continue
            for done in self.executor.wait():
                finished[done.job.id] = done
                self._collect(done, summary)
                self.say(f"[{self._progress(finished, queue)}] {'done' if done.ok else 'FAILED'} {self._name(done.job)}")
        summary.seconds = time.perf_counter() - started
        return summary

    # ------------------------------------------------------------- scheduling helpers
    @staticmethod
    def _name(job) -> str:
        return f"train {job.label}" if isinstance(job, TrainJob) else f"eval {job.cell}"

    def _progress(self, finished: dict, queue: list, starting: int = 0) -> str:
        """`starting`: the job about to be submitted (the executor does not hold it yet)."""
        return f"jobs: {len(finished)} done, {len(self.executor.running()) + starting} running, {len(queue)} queued"

    def _with_weights(self, job, finished: dict):
        """An EvalJob gets its TrainJob's weights, a fine-tune its pretraining's weights (and Adam
        state), when they could not be cached."""
        if isinstance(job, EvalJob) and job.train_id in finished:
            outcome = finished[job.train_id].outcome
            if outcome is not None and outcome.weights is not None:
                return dataclasses.replace(job, weights=outcome.weights, train_info=outcome.info)
        if isinstance(job, TrainJob) and job.depends_on and job.depends_on[0] in finished:
            outcome = finished[job.depends_on[0]].outcome
            if outcome is not None and outcome.weights is not None:
                return dataclasses.replace(job, init_weights=outcome.weights, init_optimizer=outcome.optimizer)
        return job

    def _fail_orphans(self, queue: list, finished: dict, summary: RunSummary) -> list:
        """EvalJobs whose TrainJob failed fail with its reason (their cells are recorded as failed)."""
        keep = []
        for job in queue:
            dep = next((finished[d] for d in job.depends_on if d in finished and not finished[d].ok), None)
            if dep is None:
                keep.append(job)
                continue
            if self.executor.eager:
                self.executor.cancel(job.id)
            if isinstance(job, TrainJob):            # a fine-tune of a failed pretraining: its cells fail in turn
                finished[job.id] = Done(job, reason=f"its pretraining failed: {dep.reason}", details=dep.details)
                continue
            self._fail(summary, job, dep.reason, dep.details)
        return keep

    # ------------------------------------------------------------- results
    def _collect(self, done: Done, summary: RunSummary) -> None:
        job = done.job
        if isinstance(job, TrainJob):
            if done.ok:
                if done.outcome.note:
                    self.say(f"  {job.label}: {done.outcome.note}")
            return                      # a failed training fails its cells (_fail_orphans)
        if not done.ok:
            self._fail(summary, job, done.reason, done.details)
            return
        out = done.outcome
        for line in out.log:
            self.say(f"  {line}")
        if self.write:
            ident = {**job.identity, **out.extra, **out.env}
            try:
                if out.samples_npz is not None:
                    write_samples(self.run.path, job.cell, out.samples_npz)
                self.run.commit_cell([{**ident, **r} for r in out.records], [{**ident, **c} for c in out.curves],
                                     self.config_hash)
            except OSError as exc:    # full disk, read-only records: this cell fails, the others are tried
                err = RunDirUnwritable.from_os_error(getattr(exc, "path", None) or exc.filename or self.run.path, exc)
                self._fail(summary, job, f"could not write its records: {err}")
                return
        summary.done.append(job.cell)
        self.say(summary_line(job, out.records))

    def _fail(self, summary: RunSummary, job: EvalJob, reason: str, details: str = "") -> None:
        summary.failed.append((job.cell, reason))
        if self.write:
            row = {"cell": job.cell, "reason": reason, "time": time.time(), "traceback": details or None,
                   "suite": self.suite.name, "suite_version": self.suite.version}
            if not self.run.record_failure(row):
                print(f"  (could not record the failure in {self.run.failures})", file=sys.stderr)
        print(f"  FAILED {job.cell}: {reason}", file=sys.stderr)

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


class Runner(Coordinator):
    """The one-object interface: Runner(suite, out_dir, device=..., ...).execute()."""

    def __init__(self, suite: Suite, out_dir: str | Path, device: str | None = None, use_cache: bool = True,
                 cache_dir: str | Path | None = None, progress: bool = True, log=print,
                 accelerate: dict | None = None, executor: str | None = None, jobs: int | None = None,
                 threads: int | None = None, slurm: dict | None = None, default_executor: str = "inline"):
        super().__init__(suite, out_dir, RunOptions(device, use_cache, cache_dir, progress, executor, jobs, threads,
                                                    dict(accelerate or {}), dict(slurm or {}), default_executor),
                         log)
        self.log = log
