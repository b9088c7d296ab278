"""Executors: how jobs run. Each takes ready jobs (`submit`) and hands back finished ones
(`wait`); the coordinator decides what is ready and alone writes the run directory.

- inline: in this process, one job at a time, in plan order (the default);
- local: N worker processes on this machine (one per visible GPU with CUDA);
- submitit: one Slurm job per job through submitit, watched with squeue (its local backend runs
  them as subprocesses); docs/slurm.md.
"""
from .base import Done, Executor
from .inline import InlineExecutor
from .local import LocalExecutor
from .submitit_executor import SubmititExecutor

EXECUTORS = {"inline": InlineExecutor, "local": LocalExecutor, "submitit": SubmititExecutor}

__all__ = ["Done", "Executor", "EXECUTORS", "InlineExecutor", "LocalExecutor", "SubmititExecutor"]
