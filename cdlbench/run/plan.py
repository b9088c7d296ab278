"""A suite becomes a plan: TrainJobs and EvalJobs, plain picklable data with their dependencies.

    suite -> plan(suite, settings) -> [TrainJob, EvalJob, EvalJob, TrainJob, ...]

A TrainJob trains one (dataset, model, train block, loss, seed) and caches its checkpoint; an
EvalJob samples one cell (a sampler on that model), measures every metric and returns records.
An EvalJob depends on the TrainJob whose checkpoint it uses. The plan lists every train job
before the eval jobs that need it, in the suite's cell order, so the inline executor runs them
in the order the old one-class runner did (records in the same order).

Everything that changes a number is in the job (resolved component specs, seed, sample count,
sample batch) and reaches the records as identity or p_* columns.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..registry import METRICS
from ..suite.schema import DEFAULT_SAMPLE_BATCH, Cell, Component, Suite, keyed
from .input_files import input_digests

DEFAULT_SAMPLES = 1000           # samples per cell when no metric asks for a count


@dataclass(frozen=True)
class TrainJob:
    """Train (or take from the cache) one model; `key` names its checkpoint."""

    id: str
    key: str                    # training key: hash of everything that changes the weights
    label: str                  # for logs: dataset/model/loss/seed
    dataset: Component
    model: Component
    loss: Component
    train: dict                 # the train block (execution-only keys included)
    seed: int
    config: dict                # training config stored with the checkpoint (training_config)
    device: str                 # requested: auto | cpu | cuda
    cache_dir: str
    use_cache: bool = True      # False: retrain even when a valid checkpoint is cached
    depends_on: tuple = ()      # job ids (a fine-tune's pretraining)

    @property
    def checkpoint_name(self) -> str:
        return self.key


@dataclass(frozen=True)
class EvalJob:
    """Sample one cell with its trained model, measure every metric; returns records."""

    id: str
    cell: str                   # cell name (records' `cell`)
    train_id: str               # the TrainJob whose checkpoint it uses
    train_key: str
    dataset: Component
    model: Component
    loss: Component
    train: dict
    sampler: Component
    metrics: tuple              # Components
    seed: int
    identity: dict              # record columns that name the cell (suite, cell, labels, p_*)
    n_samples: int
    sample_batch: int
    device: str
    cache_dir: str
    trace: bool                 # a metric wants the state after every pass of a parallel sampler
    train_config: dict = field(default_factory=dict)
    weights: dict | None = None  # in-memory weights when the checkpoint could not be cached
    train_info: dict | None = None

    @property
    def depends_on(self) -> tuple:
        return (self.train_id,)


def sample_count(suite: Suite) -> int:
    """Samples per cell: the largest n_samples a metric asks for (1000 when none does)."""
    asked = [m.params.get("n_samples", 0) or 0 for m in suite.metrics]
    return max(asked + [0]) or DEFAULT_SAMPLES


def training_config(cell: Cell) -> dict:
    """Everything that changes the trained weights; its hash is stored with the checkpoint.
    Data, pretrained weights and init_from files enter by content (cdlbench/run/input_files.py)."""
    comp = lambda c: {"name": c.name, **c.keyed_params}  # noqa: E731
    config = {"dataset": comp(cell.dataset), "model": comp(cell.model), "loss": comp(cell.loss),
              "train": keyed(cell.train), "seed": cell.seed}
    files = input_digests(config)
    if files:            # only suites with input files: other cached checkpoints keep their hash
        config["input_files"] = files
    return config


def flatten_params(prefix: str, comp: Component | dict) -> dict:
    """p_<prefix>_<key> columns; non-scalar values as JSON text."""
    params = comp.keyed_params if isinstance(comp, Component) else comp
    return {f"p_{prefix}_{k}": v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
            for k, v in params.items()}


def cell_identity(suite: Suite, cell: Cell) -> dict:
    """The record columns that name a cell: suite, labels, seed and every parameter."""
    ident = {"suite": suite.name, "suite_version": suite.version, "cell": cell.name,
             "dataset": cell.dataset.label, "model": cell.model.label, "loss": cell.loss.label,
             "sampler": cell.sampler.label, "seed": cell.seed,
             **flatten_params("dataset", cell.dataset), **flatten_params("model", cell.model),
             **flatten_params("train", keyed(cell.train)), **flatten_params("loss", cell.loss),
             **flatten_params("sampler", cell.sampler)}
    if suite.sample_batch != DEFAULT_SAMPLE_BATCH:
        ident["p_sample_batch"] = suite.sample_batch
    return ident


def wants_trace(suite: Suite) -> bool:
    return any(METRICS.entry(m.name).spec.per_iteration for m in suite.metrics)


def plan(suite: Suite, *, device: str | None = None, cache_dir: str | Path, use_cache: bool = True) -> list:
    """The suite's jobs: per (training key, seed) one TrainJob, followed by the EvalJobs of its
    cells (one per sampler), in the suite's cell order."""
    device = device or suite.device
    n, trace = sample_count(suite), wants_trace(suite)
    jobs, trains = [], {}
    for cell in suite.cells():
        key = cell.training_key()
        if key not in trains:
            tid = f"train:{key}"
            trains[key] = TrainJob(tid, key, f"{cell.dataset.label}/{cell.model.label}/{cell.loss.label}/seed={cell.seed}",
                                   cell.dataset, cell.model, cell.loss, dict(cell.train), cell.seed,
                                   training_config(cell), device, str(cache_dir), use_cache)
            jobs.append(trains[key])
        jobs.append(EvalJob(f"eval:{cell.name}", cell.name, trains[key].id, key, cell.dataset, cell.model, cell.loss,
                            dict(cell.train), cell.sampler, tuple(suite.metrics), cell.seed, cell_identity(suite, cell),
                            n, suite.sample_batch, device, str(cache_dir), trace, trains[key].config))
    return _grouped(jobs)


def _grouped(jobs: list) -> list:
    """Each TrainJob directly followed by its EvalJobs (cells of one model may be spread over the
    suite's cell order when it lists several samplers: the old runner grouped them the same way)."""
    evals: dict[str, list] = {}
    for j in jobs:
        if isinstance(j, EvalJob):
            evals.setdefault(j.train_id, []).append(j)
    out = []
    for j in jobs:
        if isinstance(j, TrainJob):
            out += [j] + evals.get(j.id, [])
    return out


def planned_work(suite: Suite) -> list[dict]:
    """What --dry-run prints: each cell with its training steps and denoiser evaluations (from
    each sampler's declared NFE; '<=' where it is only an upper bound)."""
    from ..registry import SAMPLERS

    n = sample_count(suite)
    rows, trained = [], set()
    for cell in suite.cells():
        key = cell.training_key()
        steps = 0 if key in trained else cell.train["steps"]
        trained.add(key)
        spec = SAMPLERS.entry(cell.sampler.name).spec
        if spec.nfe is None:
            nfe = "?"
        else:
            count, bound = spec.nfe(cell.sampler.params)
            nfe = f"<= {count}" if bound else str(count)
        rows.append({"cell": cell.name, "train_steps": steps, "batch": cell.train["batch_size"],
                     "denoiser_evals": nfe, "samples": n})
    return rows
