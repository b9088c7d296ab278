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

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
    init_key: str | None = None         # a fine-tune: the training key of its pretraining
    init_config: dict | None = None     # ... and the config its checkpoint is verified against
    keep_optimizer: bool = False        # a pretraining whose Adam state a fine-tune resumes
    init_weights: dict | None = None    # the pretraining's weights when they could not be cached
    init_optimizer: dict | None = None

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
    snapshot_step: int | None = None   # evaluate the weights saved at this training step (train.snapshots)

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
    if uses_default_proposal(cell.loss.name, cell.loss.params):
        constant = constant_dimensions(cell.dataset, cell.seed)
        if constant:     # only such trainings: every other cached checkpoint keeps its hash
            config["proposal_excludes_constant_dims"] = constant
    return config


# loss -> its (loc, scale) parameter pairs that fall back to the default proposal when None
# (losses/itd.py, losses/cdl.py); a nested `base` loss is looked at too
DEFAULT_PROPOSAL_PARAMS = {"itd": (("loc", "scale"),), "cdl": (("mc_loc", "mc_scale"), ("zeta_loc", "zeta_scale"))}


def uses_default_proposal(name: str, params: dict) -> bool:
    """Whether loss `name` with `params` draws a log-SNR from the default proposal (docs/method.md section 2)."""
    if any(params.get(p) is None for pair in DEFAULT_PROPOSAL_PARAMS.get(name, ()) for p in pair):
        return True
    base = params.get("base")
    if base is None:
        return False
    base = {"name": base} if isinstance(base, str) else dict(base)
    return uses_default_proposal(base.pop("name"), base)


_CONSTANT_DIMS: dict = {}       # (dataset key, its input files, seed) -> count


def constant_dimensions(dataset: Component, seed: int) -> int:
    """How many dimensions of the training data of (dataset, seed) are constant (variance at or
    below VARIANCE_FLOOR), which the default proposal leaves out (digits: 3 of its 64 pixels).
    Computed from the data as run/data.py draws them, once per process and dataset (a finite
    image set is read once for all seeds: its training set is the whole set, whatever the seed;
    a CIFAR-size folder costs one extra read of the data at planning); 0 when the data cannot be
    read here (the training then fails reading them, as before)."""
    from ..datasets.base import FiniteImageSet
    from ..datasets.images import ImageSetError
    from ..diffusion.itd import varying_dimensions
    from ..registry import DATASETS
    from ..seeding import make_generator

    cls = DATASETS.entry(dataset.name).obj
    finite = inspect.isclass(cls) and issubclass(cls, FiniteImageSet)
    files = json.dumps(input_digests({"dataset": dataset.params}), sort_keys=True)
    memo = (dataset.key(), files, "every seed" if finite else seed)   # a finite set ignores the generator
    if memo not in _CONSTANT_DIMS:
        try:
            built = DATASETS.build(dataset.name, dataset.params)
        except (ImageSetError, FileNotFoundError, ImportError):
            return 0
        data, _ = built.train_set(make_generator(torch.device("cpu"), seed, "data", dataset.key()))
        var = data.var(0, unbiased=False).flatten()
        _CONSTANT_DIMS[memo] = int((~varying_dimensions(var, var.numel())).sum())
    return _CONSTANT_DIMS[memo]


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


def pretraining_cell(cell: Cell) -> Cell | None:
    """The cell whose training a fine-tune starts from (train.init_from as a mapping): the same
    dataset, model and seed with the pretraining's loss and train block; None for other cells.
    Its training key is that of the same training from scratch, so it shares that checkpoint."""
    init = cell.train.get("init_from")
    if not isinstance(init, dict):
        return None
    from ..registry import LOSSES
    from ..suite.schema import TRAIN_DEFAULTS, parse_component

    loss = parse_component(dict(init["loss"]), LOSSES, "<init_from>", "init_from.loss")
    return Cell(cell.dataset, cell.model, {**TRAIN_DEFAULTS, **init["train"]}, loss, cell.sampler, cell.seed)


def snapshot_steps(train: dict) -> list:
    """The steps an EvalJob is made for: each of train.snapshots, else the last step only."""
    return list(train.get("snapshots") or [train["steps"]])


def _train_job(cell: Cell, device: str, cache_dir, use_cache: bool, label: str | None = None, **extra) -> TrainJob:
    key = cell.training_key()
    label = label or f"{cell.dataset.label}/{cell.model.label}/{cell.loss.label}/seed={cell.seed}"
    return TrainJob(f"train:{key}", key, label, cell.dataset, cell.model, cell.loss, dict(cell.train), cell.seed,
                    training_config(cell), device, str(cache_dir), use_cache, **extra)


def plan(suite: Suite, *, device: str | None = None, cache_dir: str | Path, use_cache: bool = True) -> list:
    """The suite's jobs: per (training key, seed) one TrainJob, followed by the EvalJobs of its
    cells (one per sampler, and per snapshot step where train.snapshots is set), in the suite's
    cell order. A fine-tune (train.init_from a mapping) depends on its pretraining's TrainJob,
    planned once for every loss that starts from it."""
    device = device or suite.device
    n, trace = sample_count(suite), wants_trace(suite)
    jobs, trains = [], {}
    for cell in suite.cells():
        key = cell.training_key()
        if key not in trains:
            pre = pretraining_cell(cell)
            extra = {}
            if pre is not None:
                pre_key = pre.training_key()
                resume = bool(cell.train["init_from"].get("resume_optimizer"))
                if pre_key not in trains or (resume and not trains[pre_key].keep_optimizer):
                    trains[pre_key] = _train_job(pre, device, cache_dir, use_cache, keep_optimizer=resume,
                                                 label=f"{cell.dataset.label}/{cell.model.label}/pretrain:{pre.loss.label}"
                                                       f"/seed={cell.seed}")
                    jobs = [j for j in jobs if j.id != trains[pre_key].id] + [trains[pre_key]]
                extra = {"depends_on": (trains[pre_key].id,), "init_key": pre_key, "init_config": trains[pre_key].config}
            trains[key] = _train_job(cell, device, cache_dir, use_cache, **extra)
            jobs.append(trains[key])
        for step in snapshot_steps(cell.train):
            name, ident, snap = cell.name, cell_identity(suite, cell), None
            if cell.train.get("snapshots"):
                name = f"{cell.name}/step={step}"
                ident = {**ident, "cell": name, "p_train_step": step}
                snap = None if step == cell.train["steps"] else step
            jobs.append(EvalJob(f"eval:{name}", name, trains[key].id, key, cell.dataset, cell.model, cell.loss,
                                dict(cell.train), cell.sampler, tuple(suite.metrics), cell.seed, ident,
                                n, suite.sample_batch, device, str(cache_dir), trace, trains[key].config,
                                snapshot_step=snap))
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
    return _dependencies_first(out)


def _dependencies_first(jobs: list) -> list:
    """A pretraining before every fine-tune that depends on it (stable otherwise)."""
    planned, placed, out = {j.id for j in jobs}, set(), []
    pending = list(jobs)
    while pending:
        rest = []
        for j in pending:
            if all(d in placed for d in j.depends_on if d in planned):
                out.append(j)
                placed.add(j.id)
            else:
                rest.append(j)
        if len(rest) == len(pending):
            raise RuntimeError(f"cyclic job dependencies: {[j.id for j in rest][:3]}")
        pending = rest
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
        pre = pretraining_cell(cell)
        if pre is not None and steps and pre.training_key() not in trained:     # its pretraining too
            steps += pre.train["steps"]
            trained.add(pre.training_key())
        spec = SAMPLERS.entry(cell.sampler.name).spec
        if spec.nfe is None:
            nfe = "?"
        else:
            count, bound = spec.nfe(cell.sampler.params)
            nfe = f"<= {count}" if bound else str(count)
        for i, step in enumerate(snapshot_steps(cell.train)):      # one cell per snapshot step
            name = f"{cell.name}/step={step}" if cell.train.get("snapshots") else cell.name
            rows.append({"cell": name, "train_steps": steps if i == 0 else 0, "batch": cell.train["batch_size"],
                         "denoiser_evals": nfe, "samples": n})
    return rows
