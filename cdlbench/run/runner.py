"""Runs a suite: train each (dataset, model, train, loss, seed) once (cached), run every sampler
on it, measure every metric, append one record per (cell, metric). Resumes; failed cells are
recorded and the others go on."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..suite.schema import Cell, Component, Suite
from ..denoiser import Denoiser
from .init_from import load_init_weights
from .input_files import input_digests
from .distributed import FollowerRunDir, init_from_env, local_device, main_first, sample_batch_size, sharded_sample
from ..diffusion.schedules import strided_timesteps  # noqa: F401  (re-exported for plugins)
from .env import environment, resolve_device
from ..metrics.convergence import first_below
from ..registry import DATASETS, LOSSES, METRICS, MODELS, SAMPLERS
from .checkpoints import CACHE_FORMAT, CheckpointInvalid, load_checkpoint, save_checkpoint  # noqa: F401
from .lock import RunLock, RunLocked  # noqa: F401
from .rundir import RunDir, append_jsonl
from ..seeding import derived_seed, make_generator  # noqa: F401  (re-exported)
from .training import NonFiniteLoss, train


def training_config(cell: Cell) -> dict:
    """Everything that changes the trained weights; its hash is stored with the checkpoint.
    Data, pretrained weights and init_from files enter by content (cdlbench/input_files.py)."""
    comp = lambda c: {"name": c.name, **c.keyed_params}  # noqa: E731
    config = {"dataset": comp(cell.dataset), "model": comp(cell.model), "loss": comp(cell.loss),
              "train": dict(cell.train), "seed": cell.seed}
    files = input_digests(config)
    if files:            # only suites with input files: other cached checkpoints keep their hash
        config["input_files"] = files
    return config


class OutOfMemoryAfterRetry(RuntimeError):
    """The sampler ran out of memory, also after its chunk size was halved."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError saying 'out of memory' (older torch, other backends)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def halved_chunk(sampler_params: dict, n_samples: int) -> int:
    """Half the points per denoiser call actually used: chunk_size caps the points of one call,
    which are at most (window or steps) * n_samples (Picard evaluates a whole window at once)."""
    p = sampler_params
    per_call = n_samples * max(1, int(p.get("window") or p.get("steps") or 1))
    return max(1, min(int(p["chunk_size"]), per_call) // 2)


def check_resumable(run: RunDir, suite: Suite) -> None:
    """A run directory resumes only the suite that started it: the same cell name with other
    settings (a changed train block, a bumped version) would silently mix numbers."""
    old = run.existing_config()
    if not old:
        return
    new = suite.resolved()
    keys = ("name", "version", "dataset", "model", "train", "losses", "samplers", "metrics")
    changed = [k for k in keys if k in old and old.get(k) != yaml.safe_load(yaml.safe_dump(new.get(k)))]
    if changed:
        raise RunDirMismatch(f"{run.path} holds results of a different suite configuration "
                             f"(changed: {', '.join(changed)}); resume only with the same suite, "
                             f"or pass a different --out")


class RunDirMismatch(RuntimeError):
    """The run directory was started by a different suite configuration."""


def reference_key(comp: Component, dataset) -> str:
    """Names a dataset's reference split for cached metric statistics (FID/KID features)."""
    own = getattr(dataset, "reference_key", None)
    return own() if callable(own) else f"{comp.name}/{hashlib.sha256(comp.key().encode()).hexdigest()[:12]}"


@dataclass
class Prepared:
    """A dataset instantiated for one seed: training data, its per-dimension variance and its
    class labels (None for an unlabelled set)."""
    dataset: object
    data: torch.Tensor
    data_var: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        if self.labels is None:
            return 0
        return max(int(getattr(self.dataset, "num_classes", 0) or 0), int(self.labels.max().item()) + 1)


def balanced_labels(start: int, stop: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Class labels of samples start..stop-1 of a class-conditional run: sample i gets class
    i mod C, so every class is equally represented and a sample's class does not depend on its
    batch or rank."""
    return torch.arange(start, stop, device=device) % num_classes


@dataclass
class RunSummary:
    run_dir: Path
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # (cell name, reason)


def _flatten_params(prefix: str, comp: Component | dict) -> dict:
    params = comp.keyed_params if isinstance(comp, Component) else comp
    out = {}
    for k, v in params.items():
        out[f"p_{prefix}_{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def sample_count(suite: Suite) -> int:
    return max([m.params.get("n_samples", 0) or 0 for m in suite.metrics] + [1000 if not suite.metrics else 0]) or 1000


def planned_work(suite: Suite) -> list[dict]:
    """What --dry-run prints: each cell with its training steps and denoiser evaluations."""
    n = sample_count(suite)
    rows, trained = [], set()
    for cell in suite.cells():
        key = cell.training_key()
        steps = 0 if key in trained else cell.train["steps"]
        trained.add(key)
        p = cell.sampler.params
        st = p.get("steps", 0)
        nfe = f"<= {st * (st + 1) // 2 if p.get('window') in (None, st) else st * min(st, p.get('window') or st)} (Picard)" \
            if cell.sampler.name == "picard" else str(2 * st - 1 if cell.sampler.name == "heun" else st)
        rows.append({"cell": cell.name, "train_steps": steps, "batch": cell.train["batch_size"],
                     "denoiser_evals": nfe, "samples": n})
    return rows


class Runner:
    def __init__(self, suite: Suite, out_dir: str | Path, device: str | None = None, use_cache: bool = True,
                 cache_dir: str | Path | None = None, progress: bool = True, log=print,
                 accelerate: dict | None = None):
        self.suite = suite
        # sampling only: e.g. {"compile": True, "inference_mode": True} -> Denoiser.accelerated(**accelerate)
        self.accelerate = dict(accelerate or {})
        self.run = RunDir(out_dir)
        self.device = resolve_device(device or suite.device)
        self.world = init_from_env(self.device)           # torchrun: shard sampling (cdlbench/distributed.py)
        self.device = local_device(self.device, self.world)
        if not self.world.is_main:                        # ranks > 0 compute; only rank 0 writes the run
            self.run = FollowerRunDir(out_dir, self.world.rank)
            log, progress = (lambda *args, **kwargs: None), False
        self.use_cache = use_cache
        self.cache_dir = Path(cache_dir) if cache_dir else Path(out_dir).parent / "cache"
        self.progress = progress
        self.log = log
        self.env = environment(self.device)
        self.n_samples = sample_count(suite)
        for m in suite.metrics:     # e.g. FID: optional packages and weights present, before any training
            check = getattr(METRICS[m.name], "preflight", None)
            if check is not None:
                check(m.params)

    # ------------------------------------------------------------- data
    def prepare(self, ds: Component, seed: int) -> Prepared:
        dataset = DATASETS.build(ds.name, ds.params)
        data, labels = dataset.train_set(make_generator(torch.device("cpu"), seed, "data", ds.key()))
        return Prepared(dataset, data.to(self.device), data.var(0, unbiased=False).clamp_min(1e-8).to(self.device),
                        None if labels is None else labels.long().to(self.device))

    # ------------------------------------------------------------- model
    def build_network(self, cell: Cell, prep: Prepared) -> torch.nn.Module:
        torch.manual_seed(derived_seed(cell.seed, "init", cell.model.key()))  # nn.Module init uses the global RNG
        net = MODELS.build(cell.model.name, cell.model.params, shape=tuple(prep.data.shape[1:]),
                           data_var=prep.data_var.cpu(), num_classes=prep.num_classes)
        return net.to(self.device)

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.cache_dir / f"{cell.training_key()}-{self.device.type}.pt"

    def trained_denoiser(self, cell: Cell, prep: Prepared) -> tuple[Denoiser, dict]:
        net = self.build_network(cell, prep)
        path = self.checkpoint_path(cell)
        if self.use_cache and path.exists():
            try:   # verified load: weights_only, config hash and content hash (cdlbench/checkpoints.py)
                blob = load_checkpoint(path, training_config(cell), map_location=self.device)
                net.load_state_dict(blob["state_dict"])
                net.eval()
                self.log(f"  using cached checkpoint {path.name}")
                return Denoiser.wrap(net), blob["train_log"]
            except (CheckpointInvalid, RuntimeError) as exc:  # corrupt or stale cache entry: retrain
                self.log(f"  warning: cached checkpoint {path} {exc}; retraining")
        if cell.train.get("init_from"):                  # fine-tune from given weights (cdlbench/init_from.py)
            load_init_weights(net, cell.train["init_from"], self.device)
        loss = LOSSES.build(cell.loss.name, cell.loss.params, data_var=prep.data_var.cpu(),
                            shape=tuple(prep.data.shape[1:]))
        gen = make_generator(self.device, cell.seed, "train", cell.training_key())
        net.train()
        trained, tlog = train(net, loss, prep.data, cell.train, gen, progress=self.progress,
                              desc=f"train {cell.loss.label} seed={cell.seed}",
                              labels=prep.labels if getattr(net, "num_classes", 0) else None)
        trained.eval()
        info = {"steps": tlog.steps, "seconds": tlog.seconds, "final_loss": tlog.final_loss,
                "history": [list(h) for h in tlog.history]}
        if self.use_cache:   # temporary file, fsync, rename (cdlbench/checkpoints.py)
            save_checkpoint(path, trained.state_dict(), info, training_config(cell))
        return Denoiser.wrap(trained), info

    # ------------------------------------------------------------- sampling and metrics
    def sampler_inputs(self, cell: Cell, prep: Prepared):
        shape = tuple(prep.data.shape[1:])
        gen = make_generator(self.device, cell.seed, "sample")      # shared by every loss and sampler
        x_T = torch.randn((self.n_samples, *shape), generator=gen, device=self.device)
        return x_T, gen

    def sample_labels(self, denoiser: Denoiser, start: int, stop: int) -> torch.Tensor | None:
        """Class labels of samples start..stop-1 for a class-conditional denoiser, else None."""
        return balanced_labels(start, stop, denoiser.num_classes, self.device) if denoiser.num_classes else None

    def sample_with_retry(self, cell: Cell, denoiser: Denoiser, prep: Prepared, trace: bool):
        """Sample once; on out-of-memory, a sampler with `chunk_size` retries once with half the
        points per denoiser call (fresh inputs from the same seeds, so the retry's numbers are
        those of a run that never ran out). Returns (result, extra record columns)."""
        if self.world.size > 1 or getattr(prep.dataset, "is_image", False):
            return self.sharded_sample(cell, denoiser, prep), {}
        x_T, gen = self.sampler_inputs(cell, prep)
        try:
            return self.run_sampler(cell, denoiser, x_T, gen, trace), {}
        except Exception as exc:
            if not is_out_of_memory(exc) or "chunk_size" not in inspect.signature(SAMPLERS[cell.sampler.name]).parameters:
                raise
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        del x_T, gen
        free_device_memory(self.device)
        chunk = halved_chunk(cell.sampler.params, self.n_samples)
        self.log(f"  out of memory ({first}); retrying once with chunk_size={chunk}")
        x_T, gen = self.sampler_inputs(cell, prep)
        try:
            result = self.run_sampler(cell, denoiser, x_T, gen, trace, overrides={"chunk_size": chunk})
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryAfterRetry(f"out of memory, also after halving chunk_size to {chunk} "
                                            f"({first})") from None
            raise
        return result, {"oom_retry_chunk_size": chunk}

    def sharded_sample(self, cell: Cell, denoiser: Denoiser, prep: Prepared):
        """Image sets and torchrun: per-sample seeds, fixed global batches spread over ranks,
        samples gathered on every rank (cdlbench/distributed.py); no per-iteration trace."""
        takes_noise = "noise" in inspect.signature(SAMPLERS[cell.sampler.name]).parameters
        steps = cell.sampler.params.get("steps") if takes_noise else None

        def run_batch(x_T, noise, start):
            gen = make_generator(self.device, cell.seed, "sample", start)   # for samplers' own draws
            return self.run_sampler(cell, denoiser, x_T, gen, False, overrides={"noise": noise} if takes_noise else None,
                                    labels=self.sample_labels(denoiser, start, start + x_T.shape[0]))

        return sharded_sample(run_batch, self.n_samples, sample_batch_size(), tuple(prep.data.shape[1:]), steps,
                              (cell.seed, "sample"), self.device, self.world)

    def run_sampler(self, cell: Cell, denoiser: Denoiser, x_T: torch.Tensor, gen: torch.Generator, trace: bool,
                    overrides: dict | None = None, replay_n: int | None = None, labels: torch.Tensor | None = None):
        """Run the cell's sampler from x_T; `labels` [N] (class-conditional denoisers) default to
        the balanced labels of samples 0..N-1."""
        fn = SAMPLERS[cell.sampler.name]
        if labels is None:
            labels = self.sample_labels(denoiser, 0, x_T.shape[0])
        if self.accelerate:
            denoiser = denoiser.accelerated(**self.accelerate)
        accepted = inspect.signature(fn).parameters
        kwargs = {**cell.sampler.params, **(overrides or {})}
        if labels is not None:
            if "class_labels" not in accepted:
                raise ValueError(f"sampler '{cell.sampler.name}' takes no class_labels, so it cannot sample "
                                 f"from a class-conditional model")
            kwargs["class_labels"] = labels
        if "noise" in accepted and "steps" in kwargs and kwargs.get("noise") is None:
            kwargs["noise"] = torch.randn((kwargs["steps"], *x_T.shape), generator=gen, device=x_T.device)
        if replay_n is not None:     # trajectory metrics: the first replay_n paths, same noise, no warm-up
            if "noise" in kwargs:
                kwargs["noise"] = kwargs["noise"][:, :replay_n]
            kwargs.pop("trace", None)
            if labels is not None:
                kwargs["class_labels"] = labels[:replay_n]
            return fn(denoiser, x_T[:replay_n], generator=gen, **kwargs)
        if "trace" in accepted:
            kwargs["trace"] = trace
        with torch.no_grad():                                  # warm-up: first-call costs off the clock
            m = min(256, x_T.shape[0])
            denoiser.eps(x_T[:m], torch.zeros(()), None if labels is None else labels[:m])
        return fn(denoiser, x_T, generator=gen, **kwargs)

    def replay(self, cell: Cell, prep: Prepared, denoiser, n: int):
        """Re-run this cell's sampler on the first n of its x_T with the same per-step noise
        (metrics that score the sampler's own trajectory wrap `denoiser` to record them)."""
        x_T, gen = self.sampler_inputs(cell, prep)
        return self.run_sampler(cell, denoiser, x_T, gen, False, replay_n=n)

    @staticmethod
    def call_metric(metric, samples: torch.Tensor, ref: torch.Tensor, context: dict):
        """metric(samples, reference) plus the context arguments its __call__ names
        (denoiser, dataset, result, replay; see metrics/score_error.py)."""
        accepted = inspect.signature(metric.__call__).parameters
        return metric(samples, ref, **{k: v for k, v in context.items() if k in accepted})

    def save_samples(self, cell: Cell, result, ref: torch.Tensor | None, artifacts: dict) -> None:
        """RUN_DIR/samples/<cell>.npz: a few thousand final samples (64 images), the data they are
        compared with, and metric artifacts (e.g. the Figure 1 grid and Picard paths), for plots."""
        import numpy as np

        per = int(result.samples[0].numel())
        keep = 2000 if per <= 16 else 64
        blob = {"cell": np.array(cell.name), "samples": result.samples[:keep].detach().float().cpu().numpy()}
        if isinstance(ref, torch.Tensor) and tuple(ref.shape[1:]) == tuple(result.samples.shape[1:]):
            blob["data"] = ref[:keep].detach().float().cpu().numpy()
        blob.update(artifacts)
        if "class_labels" in blob:                   # the class each saved sample was generated for
            blob["class_labels"] = blob["class_labels"][:keep]
        safe = "".join(ch if ch.isalnum() or ch in "._=-" else "_" for ch in cell.name.replace("/", "__"))[:150]
        digest = hashlib.sha256(cell.name.encode()).hexdigest()[:8]
        folder = self.run.path / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{safe}-{digest}.tmp.npz"
        np.savez_compressed(tmp, **blob)
        os.replace(tmp, folder / f"{safe}-{digest}.npz")

    def reference(self, cell: Cell, prep: Prepared, n: int | None) -> torch.Tensor:
        if n is None or n >= prep.data.shape[0]:      # the whole set, in its own order (cacheable)
            return prep.data
        gen = make_generator(torch.device("cpu"), cell.seed, "reference")
        idx = torch.randperm(prep.data.shape[0], generator=gen)[:n]
        return prep.data[idx.to(prep.data.device)]

    def measure(self, cell: Cell, prep: Prepared, result, train_info: dict, denoiser=None,
                artifacts: dict | None = None) -> tuple[list[dict], list[dict]]:
        """Records and curves of one cell; `artifacts` (if given) collects arrays for save_samples."""
        records, curves = [], []
        artifacts = {} if artifacts is None else artifacts
        labels = None if denoiser is None else self.sample_labels(denoiser, 0, result.samples.shape[0])
        context = {"denoiser": denoiser, "dataset": prep.dataset, "result": result, "labels": labels,
                   "replay": lambda den, n: self.replay(cell, prep, den, n)}
        if labels is not None:                       # saved beside the samples (save_samples)
            artifacts["class_labels"] = labels.cpu().numpy()

        def rec(metric, value, unit="", higher=False, comp=None, censored=False):
            r = {"metric": metric, "value": value, "unit": unit, "higher_is_better": higher}
            if censored:
                r["censored"] = True
            if comp is not None:
                r.update(_flatten_params("metric", comp))
            records.append(r)

        rec("iterations", result.iterations, "passes")
        rec("nfe", result.nfe, "evals")
        rec("wall_clock", result.wall_s, "s")
        rec("converged", float(result.converged), "")
        rec("train_seconds", train_info.get("seconds", float("nan")), "s")
        rec("train_final_loss", train_info.get("final_loss", float("nan")), "")
        for m in self.suite.metrics:
            metric = METRICS.build(m.name, m.params, device=self.device, cache_dir=self.cache_dir,
                                   reference_key=reference_key(cell.dataset, prep.dataset))
            ref = self.reference(cell, prep, getattr(metric, "reference_samples",     # None: the whole split
                                                     getattr(metric, "n_samples", self.n_samples)))
            value = self.call_metric(metric, result.samples, ref, context)
            artifacts.setdefault("data", ref)            # the first metric's data, for the sample plots
            if isinstance(value, dict):      # one record per part, e.g. score_error_id, score_error_ood
                for part, v in value.items():
                    rec(f"{m.name}_{part}", v, metric.unit, metric.higher_is_better, m)
            else:
                rec(m.name, value, metric.unit, metric.higher_is_better, m)
            for key, arr in (getattr(metric, "artifacts", None) or {}).items():
                artifacts[f"{m.name}.{key}"] = arr
            if result.trace and getattr(metric, "per_iteration", True):
                curve = [metric(state, ref) for state in result.trace]
                for i, v in enumerate(curve, 1):
                    curves.append({"metric": m.name, "x": i, "value": v, **_flatten_params("metric", m)})
                threshold = getattr(metric, "threshold", None)
                if threshold is not None:
                    hit = first_below(curve, threshold)
                    rec(f"{m.name}_iters_to_threshold", hit, "passes", False, m, censored=hit is None)
        return records, curves

    def identity(self, cell: Cell) -> dict:
        return {"suite": self.suite.name, "suite_version": self.suite.version, "cell": cell.name,
                "dataset": cell.dataset.label, "model": cell.model.label, "loss": cell.loss.label,
                "sampler": cell.sampler.label, "seed": cell.seed,
                **_flatten_params("dataset", cell.dataset), **_flatten_params("model", cell.model),
                **_flatten_params("train", cell.train), **_flatten_params("loss", cell.loss),
                **_flatten_params("sampler", cell.sampler)}

    # ------------------------------------------------------------- the job
    def execute(self) -> RunSummary:
        """Run every cell not yet complete, holding the run directory's lock (cdlbench/lock.py)."""
        with RunLock(self.run.path):
            check_resumable(self.run, self.suite)
            return self._execute()

    def _execute(self) -> RunSummary:
        summary = RunSummary(self.run.path)
        self.run.write_config(self.suite.resolved())
        done = self.run.complete_cells()
        groups: OrderedDict[tuple, list[Cell]] = OrderedDict()
        for cell in self.suite.cells():
            groups.setdefault((cell.training_key(), cell.seed), []).append(cell)
        trace = any(getattr(METRICS[m.name], "per_iteration", True) for m in self.suite.metrics)
        for (_, seed), cells in groups.items():
            todo = [c for c in cells if c.name not in done]
            summary.skipped += [c.name for c in cells if c.name in done]
            if not todo:
                continue
            first = todo[0]
            self.log(f"[{first.dataset.label}/{first.model.label}/{first.loss.label}/seed={seed}] "
                     f"{len(todo)} cell(s) to run")
            try:
                prep = self.prepare(first.dataset, seed)
                denoiser, info = main_first(self.world, lambda: self.trained_denoiser(first, prep))
            except Exception as exc:   # training failed: every cell of this model fails, others go on
                reason = self._reason(exc)
                for c in todo:
                    self._fail(summary, c, reason)
                continue
            for cell in todo:
                try:
                    result, retry = self.sample_with_retry(cell, denoiser, prep, trace)
                    artifacts = {}
                    records, curves = self.measure(cell, prep, result, info, denoiser, artifacts)
                    self.save_samples(cell, result, artifacts.pop("data", None), artifacts)
                except Exception as exc:
                    self._fail(summary, cell, self._reason(exc))
                    continue
                ident = {**self.identity(cell), **retry, **self.env}
                append_jsonl(self.run.curves, [{**ident, **c} for c in curves])
                rows = [{**ident, **r} for r in records]
                rows.append({**ident, "metric": "_complete", "value": len(records), "unit": "records",
                             "higher_is_better": None})
                append_jsonl(self.run.records, rows)
                summary.done.append(cell.name)
                main = {r["metric"]: r["value"] for r in records}
                self.log(f"  {cell.sampler.label}: " + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in main.items()
                    if not k.startswith("train_") and k != "converged"))
        return summary

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, NonFiniteLoss):
            return f"non-finite loss: {exc}"
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        return f"{type(exc).__name__}: {exc}{where}"

    def _fail(self, summary: RunSummary, cell: Cell, reason: str) -> None:
        summary.failed.append((cell.name, reason))
        append_jsonl(self.run.failures, [{"cell": cell.name, "reason": reason, "time": time.time(), **self.env}])
        print(f"  FAILED {cell.name}: {reason}", file=sys.stderr)
