"""Metrics added to a finished run from its saved samples (RUN_DIR/samples/<cell>.npz), without
sampling again and without rewriting a line of records.jsonl.

For each complete cell, the new metric's records are computed exactly as `eval_job.measure` would
have computed them (the same samples, the same reference points from the cell's seed, the same
per-metric generator), then the cell is committed again through the run directory's protocol
(run/rundir.py): ONE appended group holding the cell's current rows unchanged plus the new ones,
with its marker (digest, config_hash of config.yaml, and `extends`: the digest of the rows it
repeats). The last complete group of a cell wins, so the earlier group is extended, not edited
(`cdlbench verify` notes it; `repair` keeps only the later one); config.yaml is left as it is
(its hash still names the run). Done under the run lock.

A metric is recomputed for a cell only where the saved samples suffice: the file holds as many
samples as the metric scores (point sets keep up to 2000 samples, image sets 64), and the metric
needs nothing but samples, reference points, the dataset and class labels (not the trained
denoiser or the sampler's trajectory). Otherwise the cell is listed as needing a rerun.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import UserError
from ..registry import METRICS
from ..seeding import make_generator
from ..suite.schema import parse_suite
from ..suite.yaml_loading import SuiteError
from .coordinator import samples_file
from .data import prepare, reference_points
from .eval_job import _value_records
from .lock import RunLock
from .plan import cell_identity, sample_count
from .rundir import MEASUREMENT_KEYS, RunDir, RunDirMismatch, rows_digest, suite_config_hash

#: context a metric may take from a run directory (the rest needs the trained model: rerun)
FROM_SAMPLES = ("dataset", "generator", "labels")


@dataclass
class RecomputeReport:
    added: dict = field(default_factory=dict)          # cell -> records added
    present: list = field(default_factory=list)        # (cell, metric): already recorded, left alone
    rerun: list = field(default_factory=list)          # (cell, metric, why): samples do not suffice

    def lines(self) -> list[str]:
        out = [f"{len(self.added)} cell(s) gained {sum(self.added.values())} record(s)"]
        out += [f"  already recorded: {c} {m}" for c, m in self.present]
        out += [f"  needs a rerun: {c} {m} ({why})" for c, m, why in self.rerun]
        return out


def _metric_suite(run: RunDir, metrics: list[dict]):
    """(original suite, suite of the new metrics): config.yaml parsed twice, the second time with
    its metrics replaced, so the new ones are validated like a suite's (exit 2 naming the field)."""
    cfg = run.existing_config()
    if cfg is None:
        raise RunDirMismatch(f"{run.config}: missing; recomputing needs the run's configuration")
    where = f"{run.config} with metrics from --metric"
    original = parse_suite(dict(cfg), file=str(run.config))
    if not metrics:
        raise SuiteError(where, "metrics", "give at least one metric (a mapping with its name and parameters)")
    new = parse_suite({**cfg, "metrics": metrics}, file=where)
    for i, m in enumerate(new.metrics):
        needs = set(METRICS.entry(m.name).spec.context) - set(FROM_SAMPLES)
        if needs:
            raise SuiteError(where, f"metrics[{i}].name", f"metric '{m.name}' needs {', '.join(sorted(needs))} "
                             f"of the sampling run, which a run directory does not keep; rerun the cells instead")
    return cfg, original, new


def _params(row: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v, default=str)) for k, v in row.items() if k.startswith("p_metric_")))


def _cell_key(ident: dict) -> tuple:
    """A cell by its seed and parameters (p_* columns but the metric's and the snapshot step's):
    labels may order parameters as the suite file did, config.yaml as resolved."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in ident.items()
                        if k == "seed" or (k.startswith("p_") and not k.startswith("p_metric_")
                                           and k not in ("p_train_step", "p_train_snapshots"))))


def _suite_cell(name: str, row: dict, cells: dict, by_key: dict):
    """The suite cell of a record's cell (a snapshot cell `<cell>/step=N` is its cell's: the same
    data and reference points), by name, else by seed and parameters; None when none matches."""
    base = re.sub(r"/step=\d+$", "", name)
    return cells.get(name) or cells.get(base) or by_key.get(_cell_key(row))


def recompute(run_path: str | Path, metrics: list[dict], dry_run: bool = False) -> RecomputeReport:
    """Add `metrics` (suite-style mappings) to every complete cell of the run whose samples suffice."""
    run = RunDir(run_path)
    if not run.records.exists():
        raise UserError(f"{run.records}: no records; is {run.path} a run directory?")
    cfg, original, new = _metric_suite(run, metrics)
    config_hash = suite_config_hash(cfg)
    cells = {c.name: c for c in original.cells()}
    by_key = {_cell_key(cell_identity(original, c)): c for c in original.cells()}
    n_cell = sample_count(original)
    report = RecomputeReport()
    with RunLock(run.path):
        by_cell: dict[str, list] = {}
        for row in run.load_records():
            by_cell.setdefault(row["cell"], []).append(row)
        prepared = {}
        for name, rows in by_cell.items():
            cell = _suite_cell(name, rows[0], cells, by_key)
            path = samples_file(run.path, name)
            if cell is None or not path.exists():
                report.rerun += [(name, m.name, "no saved samples" if cell else "not a cell of config.yaml")
                                 for m in new.metrics]
                continue
            with np.load(path) as blob:
                samples = torch.from_numpy(blob["samples"])
                labels = torch.from_numpy(blob["class_labels"]) if "class_labels" in blob.files else None
            have = {(r["metric"], _params(r)) for r in rows}
            ident = {k: v for k, v in rows[0].items() if k not in MEASUREMENT_KEYS and not k.startswith("p_metric_")}
            added = []
            for m in new.metrics:
                spec = METRICS.entry(m.name).spec
                metric = METRICS.build(m.name, m.params, device=torch.device("cpu"), cache_dir=None,
                                       reference_key=None)
                wanted = metric.n_samples if metric.n_samples is not None else n_cell
                if min(wanted, n_cell) > samples.shape[0]:
                    report.rerun.append((name, m.name, f"{samples.shape[0]} samples saved, the metric scores "
                                                       f"{min(wanted, n_cell)}"))
                    continue
                key = (cell.dataset.key(), cell.seed)
                if key not in prepared:
                    prepared[key] = prepare(cell.dataset, cell.seed, torch.device("cpu"))
                prep = prepared[key]
                ref = reference_points(prep, cell.seed, metric.reference_count(n_cell), metric.reference_source)
                final_ref = ref if metric.final_reference_count is None else \
                    reference_points(prep, cell.seed, metric.final_reference_count, metric.reference_source)
                context = {"dataset": prep.dataset, "labels": labels,
                           "generator": make_generator(torch.device("cpu"), cell.seed, "metric", m.key())}
                value = metric(samples, final_ref, **{k: context[k] for k in spec.context})
                fresh = [{**ident, **r} for r in _value_records(m.name, value, spec, m)]
                if any((r["metric"], _params(r)) in have for r in fresh):
                    report.present.append((name, m.name))
                    continue
                added += fresh
            if added:
                report.added[name] = len(added)
                if not dry_run:
                    run.commit_cell(rows + added, [], config_hash, extends=rows_digest(rows))
    return report


def main(argv=None) -> int:
    """scripts/recompute_metrics.py RUN_DIR --metric MAPPING [--metric ...] [--dry-run]; exit 2 on bad input."""
    ap = argparse.ArgumentParser(prog="scripts/recompute_metrics.py",
                                 description="Add metrics to a finished run from its saved samples.")
    ap.add_argument("run")
    ap.add_argument("--metric", action="append", default=[], help="a metric mapping, e.g. '{name: energy}'")
    ap.add_argument("--dry-run", action="store_true", help="compute and report, write nothing")
    args = ap.parse_args(argv)
    try:
        metrics = []
        for i, text in enumerate(args.metric):
            try:
                m = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UserError(f"--metric #{i + 1}: not YAML ({str(exc).splitlines()[0]})") from None
            if not isinstance(m, dict) or "name" not in m:
                raise UserError(f"--metric #{i + 1}: must be a mapping with a 'name', got {text!r}")
            metrics.append(m)
        start = time.perf_counter()
        report = recompute(args.run, metrics, dry_run=args.dry_run)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"{'dry run, nothing written; ' if args.dry_run else ''}{time.perf_counter() - start:.1f} s")
    return 0
