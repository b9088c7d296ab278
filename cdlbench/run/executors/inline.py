"""inline: every job in this process, one after another (the default; torchrun ranks shard one
EvalJob's samples: training then runs on rank 0 first and the others load its checkpoint)."""
from __future__ import annotations

from ..distributed import main_first
from ..jobs import failure_details, run_job
from ..plan import TrainJob
from .base import Done, Executor


class InlineExecutor(Executor):
    name = "inline"

    def __init__(self, ctx):
        self.ctx = ctx
        self.threads = ctx.threads
        self.follower = not ctx.world.is_main
        self._done: list[Done] = []

    def free_slots(self) -> int:
        return 0 if self._done else 1

    def submit(self, job) -> None:
        try:
            if isinstance(job, TrainJob):
                outcome = main_first(self.ctx.world, lambda: run_job(job, self.ctx))
            else:
                outcome = run_job(job, self.ctx)
            self._done.append(Done(job, outcome))
        except KeyboardInterrupt:
            raise
        except Exception as exc:   # the job failed: recorded, the others go on
            reason, details = failure_details(exc)
            self._done.append(Done(job, reason=reason, details=details))

    def running(self) -> list:
        """Jobs run but not yet collected (inline: a job runs inside submit)."""
        return [d.job for d in self._done]

    def wait(self) -> list[Done]:
        done, self._done = self._done, []
        return done
