"""eval_job(job, ctx): sample one cell with its trained model and measure every metric; a plain
function returning the cell's records, curves and sample artifacts (the coordinator writes them).
Figures: the runner's own (cdlbench/figures.py), each metric's as its MetricSpec declares."""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..denoiser import Denoiser
from ..metrics.base import MetricValue
from ..metrics.convergence import first_below
from ..registry import LOSSES, METRICS, SAMPLERS
from ..seeding import make_generator
from .checkpoints import load_checkpoint
from .context import JobContext
from .data import Prepared, prepare, reference_points
from .plan import EvalJob, flatten_params
from .sampling import CellSampler
from .train_job import build_network, checkpoint_path, snapshot_config, snapshot_path


#: record of the share of the sampler's denoiser evaluations at log-SNRs outside the loss's training range
OOD_EVAL_SHARE = "ood_eval_share"


class NonFiniteSamples(RuntimeError):
    """The sampler diverged: some samples are NaN or infinite (the cell fails with this reason)."""


@dataclass
class EvalOutcome:
    records: list                  # without identity columns (the coordinator adds them)
    curves: list
    extra: dict                    # further identity columns (e.g. oom_retry_chunk_size)
    env: dict                      # env_* of the process that sampled
    samples_npz: bytes | None      # RUN_DIR/samples/<cell>.npz content
    log: list = field(default_factory=list)


def reference_key(job: EvalJob, dataset) -> str:
    """Names a dataset's reference split for cached metric statistics (FID/KID features)."""
    return dataset.reference_key() or f"{job.dataset.name}/{hashlib.sha256(job.dataset.key().encode()).hexdigest()[:12]}"


def trained_denoiser(job: EvalJob, prep: Prepared, device: torch.device) -> tuple[Denoiser, dict]:
    """The cell's trained network: weights handed over by the coordinator (not cacheable), else
    the verified checkpoint its TrainJob cached."""
    net = build_network(job, prep, device)
    if job.snapshot_step is not None:           # the weights at an earlier step (train.snapshots; cached only)
        blob = load_checkpoint(snapshot_path(job.cache_dir, job.train_key, job.snapshot_step, device),
                               snapshot_config(job.train_config, job.snapshot_step), map_location=device)
        net.load_state_dict(blob["state_dict"])
        info = blob["train_log"]
    elif job.weights is not None:
        net.load_state_dict({k: v.to(device) for k, v in job.weights.items()})
        info = dict(job.train_info or {})
    else:
        blob = load_checkpoint(checkpoint_path(job.cache_dir, job.train_key, device), job.train_config,
                               map_location=device)
        net.load_state_dict(blob["state_dict"])
        info = blob["train_log"]
    net.eval()
    return Denoiser.wrap(net), info


def training_range(job: EvalJob, prep: Prepared) -> tuple[float, float] | None:
    """The log-SNR range the cell's loss trains the denoiser on (its `training_logsnr_range`; None
    for a loss that declares none). A fine-tune is judged by its own loss's range."""
    loss = LOSSES.build(job.loss.name, job.loss.params, data_var=prep.data_var.cpu(), shape=prep.shape)
    declared = getattr(loss, "training_logsnr_range", None)
    return declared() if callable(declared) else None


def _record(metric, value, unit="", higher=False, comp=None, censored=False, own: dict | None = None) -> dict:
    """One record; `own`: p_metric_<key> values of this record replacing the metric's (e.g. one bandwidth)."""
    r = {"metric": metric, "value": value, "unit": unit, "higher_is_better": higher}
    if censored:
        r["censored"] = True
    if comp is not None:
        r.update(flatten_params("metric", comp))
    if own:
        r.update(flatten_params("metric", own))
    return r


def _value_records(name: str, value, spec, comp) -> list:
    """The records of one metric's value: a number, a dict of declared parts, or a list of MetricValue."""
    if isinstance(value, dict):      # one record per declared part, e.g. score_error_id
        return [_record(f"{name}_{part}", v, spec.unit, spec.higher_is_better, comp) for part, v in value.items()]
    if isinstance(value, list):      # several values, each with its own parameters (e.g. MMD bandwidths)
        out = []
        for v in value:
            if not isinstance(v, MetricValue):
                raise TypeError(f"metric {name!r} returned a list of {type(v).__name__}, not of MetricValue")
            out.append(_record(name if v.part is None else f"{name}_{v.part}", v.value,
                               spec.unit if v.unit is None else v.unit,
                               spec.higher_is_better if v.higher_is_better is None else v.higher_is_better,
                               comp, own=v.params))
        return out
    return [_record(name, value, spec.unit, spec.higher_is_better, comp)]


def check_finite(samples: torch.Tensor) -> None:
    bad = int((~torch.isfinite(samples.flatten(1))).any(1).sum())
    if bad:
        raise NonFiniteSamples(f"sampler produced {bad} non-finite samples (of {samples.shape[0]})")


def measure(job: EvalJob, prep: Prepared, result, train_info: dict, sampler: CellSampler, ctx: JobContext,
            artifacts: dict) -> tuple[list, list]:
    """Records and curves of one cell; `artifacts` collects arrays for the saved samples."""
    records, curves = [], []
    labels = sampler.labels(0, result.samples.shape[0])
    context = {"denoiser": sampler.plain, "dataset": prep.dataset, "result": result, "labels": labels,
               "replay": sampler.replay}
    if labels is not None:                       # saved beside the samples
        artifacts["class_labels"] = labels.cpu().numpy()
    records += [_record("iterations", result.iterations, "passes"), _record("nfe", result.nfe, "evals")]
    for name, unit in SAMPLERS.entry(job.sampler.name).spec.extra_figures:   # e.g. Jacobian products
        records.append(_record(name, result.extra.get(name), unit))
    share = sampler.ood_share()
    if share is not None:                    # diagnostic of the mechanism: queried outside the training range
        records.append(_record(OOD_EVAL_SHARE, share, "share"))
    records += [_record("wall_clock", result.wall_s, "s"), _record("converged", float(result.converged), ""),
                _record("train_seconds", train_info.get("seconds", float("nan")), "s"),
                _record("train_final_loss", train_info.get("final_loss", float("nan")), "")]
    for m in job.metrics:
        spec = METRICS.entry(m.name).spec
        metric = METRICS.build(m.name, m.params, device=ctx.device, cache_dir=job.cache_dir,
                               reference_key=reference_key(job, prep.dataset))
        ref = reference_points(prep, job.seed, metric.reference_count(job.n_samples), metric.reference_source)
        final_ref = ref if metric.final_reference_count is None else \
            reference_points(prep, job.seed, metric.final_reference_count, metric.reference_source)
        # random draws of a metric (e.g. MMD permutations): a generator of the cell seed and this
        # metric (its key: name and parameters)
        context["generator"] = make_generator(torch.device("cpu"), job.seed, "metric", m.key())
        value = metric(result.samples, final_ref, **{k: context[k] for k in spec.context})
        artifacts.setdefault("data", ref)            # the first metric's data, for the sample plots
        records += _value_records(m.name, value, spec, m)
        for key, arr in metric.artifacts.items():
            artifacts[f"{m.name}.{key}"] = arr
        if result.trace and spec.per_iteration:
            curve = [metric.per_iteration(state, ref) for state in result.trace]
            own = flatten_params("metric", dict(metric.curve_params))
            curves += [{"metric": m.name, "x": i, "value": v, **flatten_params("metric", m), **own}
                       for i, v in enumerate(curve, 1)]
            if metric.threshold is not None:
                hit = first_below(curve, metric.threshold, metric.threshold_inclusive)
                records.append(_record(f"{m.name}_iters_to_threshold", hit, "passes", False, m, censored=hit is None,
                                       own=dict(metric.curve_params)))
    return records, curves


def samples_blob(job: EvalJob, result, ref, artifacts: dict) -> bytes:
    """RUN_DIR/samples/<cell>.npz: a few thousand final samples (64 images), the data they are
    compared with, and metric artifacts (e.g. the Figure 1 grid and Picard paths), for plots."""
    per = int(result.samples[0].numel())
    keep = 2000 if per <= 16 else 64
    blob = {"cell": np.array(job.cell), "samples": result.samples[:keep].detach().float().cpu().numpy()}
    if isinstance(ref, torch.Tensor) and tuple(ref.shape[1:]) == tuple(result.samples.shape[1:]):
        blob["data"] = ref[:keep].detach().float().cpu().numpy()
    blob.update({k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in artifacts.items()})
    if "class_labels" in blob:                   # the class each saved sample was generated for
        blob["class_labels"] = blob["class_labels"][:keep]
    buf = io.BytesIO()
    np.savez_compressed(buf, **blob)
    return buf.getvalue()


def eval_job(job: EvalJob, ctx: JobContext) -> EvalOutcome:
    prep = prepare(job.dataset, job.seed, ctx.device)
    denoiser, info = trained_denoiser(job, prep, ctx.device)
    sampler = CellSampler(job, denoiser, prep.shape, ctx.device, ctx.world, ctx.accelerate, training_range(job, prep))
    result, extra = sampler.sample(job.trace, prep.is_image)
    log = [extra.pop("_note")] if "_note" in extra else []
    check_finite(result.samples)
    artifacts: dict = {}
    records, curves = measure(job, prep, result, info, sampler, ctx, artifacts)
    blob = samples_blob(job, result, artifacts.pop("data", None), artifacts) if ctx.world.is_main else None
    return EvalOutcome(records, curves, extra, ctx.env, blob, log)


def summary_line(job: EvalJob, records: list) -> str:
    main = {r["metric"]: r["value"] for r in records}
    return f"  {job.sampler.label}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}" for k, v in main.items()
        if not k.startswith("train_") and k != "converged")
