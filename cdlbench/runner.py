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

from .config import Cell, Component, Suite
from .denoiser import Denoiser
from .diffusion.schedules import strided_timesteps  # noqa: F401  (re-exported for plugins)
from .env import environment, resolve_device
from .metrics.convergence import first_below
from .registry import DATASETS, LOSSES, METRICS, MODELS, SAMPLERS
from .results import RunDir, append_jsonl
from .training import NonFiniteLoss, train

CACHE_FORMAT = 1


def derived_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (seed, purpose, ...)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(device: torch.device, *parts) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))


@dataclass
class Prepared:
    """A dataset instantiated for one seed: training data and its per-dimension variance."""
    dataset: object
    data: torch.Tensor
    data_var: torch.Tensor


@dataclass
class RunSummary:
    run_dir: Path
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # (cell name, reason)


def _flatten_params(prefix: str, comp: Component | dict) -> dict:
    params = comp.params if isinstance(comp, Component) else comp
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
                 cache_dir: str | Path | None = None, progress: bool = True, log=print):
        self.suite = suite
        self.run = RunDir(out_dir)
        self.device = resolve_device(device or suite.device)
        self.use_cache = use_cache
        self.cache_dir = Path(cache_dir) if cache_dir else Path(out_dir).parent / "cache"
        self.progress = progress
        self.log = log
        self.env = environment(self.device)
        self.n_samples = sample_count(suite)

    # ------------------------------------------------------------- data
    def prepare(self, ds: Component, seed: int) -> Prepared:
        dataset = DATASETS.build(ds.name, ds.params)
        data = dataset.train_data(make_generator(torch.device("cpu"), seed, "data", ds.key()))
        return Prepared(dataset, data.to(self.device), data.var(0, unbiased=False).clamp_min(1e-8).to(self.device))

    # ------------------------------------------------------------- model
    def build_network(self, cell: Cell, prep: Prepared) -> torch.nn.Module:
        torch.manual_seed(derived_seed(cell.seed, "init", cell.model.key()))  # nn.Module init uses the global RNG
        net = MODELS.build(cell.model.name, cell.model.params, shape=tuple(prep.data.shape[1:]))
        return net.to(self.device)

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.cache_dir / f"{cell.training_key()}-{self.device.type}.pt"

    def trained_denoiser(self, cell: Cell, prep: Prepared) -> tuple[Denoiser, dict]:
        net = self.build_network(cell, prep)
        path = self.checkpoint_path(cell)
        if self.use_cache and path.exists():
            try:
                blob = torch.load(path, map_location=self.device, weights_only=True)
                if blob.get("format") == CACHE_FORMAT:
                    net.load_state_dict(blob["state_dict"])
                    net.eval()
                    self.log(f"  using cached checkpoint {path.name}")
                    return Denoiser.from_eps(net), blob["train_log"]
            except Exception as exc:  # corrupt cache entry: retrain
                self.log(f"  warning: cached checkpoint {path} unreadable ({exc}); retraining")
        loss = LOSSES.build(cell.loss.name, cell.loss.params, data_var=prep.data_var.cpu(),
                            shape=tuple(prep.data.shape[1:]))
        gen = make_generator(self.device, cell.seed, "train", cell.training_key())
        net.train()
        trained, tlog = train(net, loss, prep.data, cell.train, gen, progress=self.progress,
                              desc=f"train {cell.loss.label} seed={cell.seed}")
        trained.eval()
        info = {"steps": tlog.steps, "seconds": tlog.seconds, "final_loss": tlog.final_loss,
                "history": [list(h) for h in tlog.history]}
        if self.use_cache:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"format": CACHE_FORMAT, "state_dict": trained.state_dict(), "train_log": info,
                        "config": json.loads(json.dumps({"dataset": cell.dataset.params, "model": cell.model.params,
                                                         "loss": cell.loss.params, "train": cell.train,
                                                         "seed": cell.seed}, default=str))}, tmp)
            os.replace(tmp, path)
        return Denoiser.from_eps(trained), info

    # ------------------------------------------------------------- sampling and metrics
    def sampler_inputs(self, cell: Cell, prep: Prepared):
        shape = tuple(prep.data.shape[1:])
        gen = make_generator(self.device, cell.seed, "sample")      # shared by every loss and sampler
        x_T = torch.randn((self.n_samples, *shape), generator=gen, device=self.device)
        return x_T, gen

    def run_sampler(self, cell: Cell, denoiser: Denoiser, x_T: torch.Tensor, gen: torch.Generator, trace: bool):
        fn = SAMPLERS[cell.sampler.name]
        accepted = inspect.signature(fn).parameters
        kwargs = dict(cell.sampler.params)
        if "noise" in accepted and "steps" in kwargs:
            kwargs["noise"] = torch.randn((kwargs["steps"], *x_T.shape), generator=gen, device=x_T.device)
        if "trace" in accepted:
            kwargs["trace"] = trace
        with torch.no_grad():                                  # warm-up: first-call costs off the clock
            denoiser.eps(x_T[: min(256, x_T.shape[0])], torch.zeros(()))
        return fn(denoiser, x_T, generator=gen, **kwargs)

    def reference(self, cell: Cell, prep: Prepared, n: int) -> torch.Tensor:
        gen = make_generator(torch.device("cpu"), cell.seed, "reference")
        idx = torch.randperm(prep.data.shape[0], generator=gen)[:n]
        return prep.data[idx.to(prep.data.device)]

    def measure(self, cell: Cell, prep: Prepared, result, train_info: dict) -> tuple[list[dict], list[dict]]:
        records, curves = [], []

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
            metric = METRICS.build(m.name, m.params)
            ref = self.reference(cell, prep, getattr(metric, "n_samples", self.n_samples))
            value = metric(result.samples, ref)
            rec(m.name, value, metric.unit, metric.higher_is_better, m)
            if result.trace:
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
                denoiser, info = self.trained_denoiser(first, prep)
            except Exception as exc:   # training failed: every cell of this model fails, others go on
                reason = self._reason(exc)
                for c in todo:
                    self._fail(summary, c, reason)
                continue
            for cell in todo:
                try:
                    x_T, gen = self.sampler_inputs(cell, prep)
                    result = self.run_sampler(cell, denoiser, x_T, gen, trace)
                    records, curves = self.measure(cell, prep, result, info)
                except Exception as exc:
                    self._fail(summary, cell, self._reason(exc))
                    continue
                ident = {**self.identity(cell), **self.env}
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
