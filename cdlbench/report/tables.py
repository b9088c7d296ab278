"""Paper-style tables from records (Wu et al. 2024, Dino table; docs/method.md section 6).

One table per (dataset, sampler): rows are losses (and models when several), columns are metrics
with units in the headers (labels, units, order and visibility declared by the components, see
cdlbench/figures.py), each cell mean ± std over seeds with n in one number format per column, the
clearly best per column marked (markup.clear_best). With a baselines file, a second table per
section gives the reference value, our difference and whether it is better or worse (knowing each
metric's direction), or "not comparable" where a setting that defines the number differs, and the
settings it crosses. The output formats (formats/) lay these tables out.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError

from ..figures import figure
from ..run.rundir import RunDir
from .baselines import compare_metric
from .markup import Candidate, Markup, NumberFormat, clear_best, fmt_cell, fmt_number, header  # noqa: F401

ROW_KEYS = ["dataset", "model", "train", "loss", "sampler"]
TRAIN_NEUTRAL_SHOWN = {"p_train_batches": "random"}     # a train key left out of records at this value


def _train_value(key: str, value) -> str:
    if _missing(value):
        return TRAIN_NEUTRAL_SHOWN.get(key, "none")
    if key == "p_train_init_from" and isinstance(value, str):    # the pretraining, briefly
        try:
            init = json.loads(value)
            return f"{init['loss']['name']}@{init['train']['steps']}"
        except (ValueError, KeyError, TypeError):
            return value
    return _show_number(value)


def _show_number(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def with_train_labels(df: pd.DataFrame) -> pd.DataFrame:
    """A `train` column naming what distinguishes the row's training from the other rows' (the
    p_train_* settings that vary over the records, e.g. several train blocks, or suites with other
    training), and the snapshot step (p_train_step: train.snapshots) as its own axis; '' where
    every record was trained alike."""
    cols = [c for c in df.columns if c.startswith("p_train_") and c != "p_train_step"
            and df[c].map(lambda v: _train_value(c, v)).nunique() > 1]
    parts = [df[c].map(lambda v, c=c: f"{c.removeprefix('p_train_')}={_train_value(c, v)}") for c in cols]
    if "p_train_step" in df.columns:
        parts.append(df["p_train_step"].map(lambda v: "" if _missing(v) else f"step={int(v)}"))
    if not parts:
        return df.assign(train="")
    label = parts[0]
    for part in parts[1:]:
        label = label.str.cat(part, sep=",")
    return df.assign(train=label.str.strip(",").str.replace(",,", ",", regex=False))


# ---------------------------------------------------------------- loading and statistics
class NoRecords(UserError, FileNotFoundError):
    """No complete records in the run directories given."""


class DuplicateCells(UserError, ValueError):
    """Run directories holding the same cells with different values."""


class DuplicateCellsWarning(UserWarning):
    """Run directories holding the same cells with identical values (each counted once)."""


DUPLICATE_RULE = ("a cell (suite, version, cell name) held by two run directories is counted once when every "
                  "value agrees (with a warning); when any value differs the report stops (exit 2): give one "
                  "of the directories")


def load(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Records of complete cells of all run directories (a directory given twice is read once).

    The same cell in two directories (DUPLICATE_RULE): counted once, with a warning naming both
    directories, when all its values agree; DuplicateCells naming both and the cells otherwise, so
    that the table never depends on the order of the directories.

    Each records file is streamed: only rows of complete groups are kept, as column lists (no
    dict per row), without the env_* columns the report does not read (env_device stays)."""
    keep = lambda column: not column.startswith("env_") or column == "env_device"  # noqa: E731
    run_dirs = _distinct(run_dirs)
    frames, sources = [], []
    for d in run_dirs:
        columns = RunDir(d).load_columns(keep)
        if columns and len(next(iter(columns.values()))):
            frames.append(pd.DataFrame(columns))
            sources.append(d)
        del columns
    if not frames:
        raise NoRecords(f"no complete records in {', '.join(map(str, run_dirs))}")
    if len(frames) == 1:
        df = frames[0]
    else:
        df = pd.concat([f.assign(_source=i) for i, f in enumerate(frames)], ignore_index=True, sort=False)
    del frames
    ident = [c for c in ("suite", "suite_version", "cell", "metric") if c in df.columns] + \
        [c for c in df.columns if c.startswith("p_metric_")]      # one metric at two bandwidths: two records
    # the identity as one text column: a parameter may be a list, which pandas cannot hash
    text = [df[c].map(str) for c in ident]              # str() of every value, NaN included
    df = df.assign(_ident=["\x1f".join(row) for row in zip(*text)] if text else "")
    if "_source" in df.columns:
        _check_duplicates(df, ["_ident"], sources)
        df = df.drop(columns="_source")
    first = ~df["_ident"].duplicated(keep="first")
    return with_train_labels(df[first].drop(columns="_ident").reset_index(drop=True))


def _distinct(run_dirs) -> list:
    out, seen = [], set()
    for d in run_dirs:
        try:
            key = Path(d).resolve()
        except OSError:
            key = Path(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _same_value(a, b) -> bool:
    if _missing(a) and _missing(b):
        return True
    if _missing(a) or _missing(b):
        return False
    return a == b


def _check_duplicates(df: pd.DataFrame, ident: list, sources: list) -> None:
    """Apply DUPLICATE_RULE to the records of several directories (column _source: the index of
    the directory in `sources`)."""
    import warnings

    shared = df[df.duplicated(subset=ident, keep=False)]
    if shared.empty:
        return
    shared = shared[shared.groupby(ident, sort=False)["_source"].transform("nunique") > 1]
    if shared.empty:
        return
    compared = [c for c in ("value", "censored") if c in shared.columns]
    firsts = shared.drop_duplicates(subset=ident, keep="first")
    others = shared.drop(index=firsts.index)
    m = others.merge(firsts[ident + ["_source"] + compared], on=ident, suffixes=("", "_first"))
    m = m[m["_source"] != m["_source_first"]]
    same = pd.Series(True, index=m.index)
    for c in compared:
        a, b = m[f"{c}_first"], m[c]
        same &= (a.isna() & b.isna()) | (a.notna() & b.notna() & (a == b))
    pairs: dict = {}               # (first dir, other dir) -> (cells, [(cell, metric, first value, other value)])
    for (i, j), g in m.assign(_same=same).groupby(["_source_first", "_source"], sort=True):
        bad = g[~g["_same"]]
        pairs[(int(i), int(j))] = (list(dict.fromkeys(g["cell"])) if "cell" in g.columns else [],
                                   list(zip(bad.get("cell", ""), bad.get("metric", ""), bad[f"{compared[0]}_first"],
                                            bad[compared[0]])) if compared else [])
    for (i, j), (cells, conflicts) in pairs.items():
        a, b = sources[i], sources[j]
        if conflicts:
            shown = "; ".join(f"{cell} {metric}: {va!r} in {a}, {vb!r} in {b}" for cell, metric, va, vb in conflicts[:3])
            more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
            raise DuplicateCells(f"{a} and {b} hold the same {len(cells)} cells, and {len(conflicts)} of their values "
                                 f"differ: {shown}{more}. The report counts a cell once and will not choose between "
                                 f"them: report one of the directories (or each on its own)")
        warnings.warn(f"{a} and {b} hold the same {len(cells)} cells with identical values (e.g. {cells[0]}); "
                      f"each is counted once", DuplicateCellsWarning, stacklevel=3)


def load_curves(run_dirs: list[str | Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        rows += RunDir(d).load_curves()
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (dataset, model, loss, sampler, metric) with mean, std (ddof 1), n
    (runs that reached a value), n_runs, censored, unit, direction and the group's p_* parameters."""
    out = []
    if "train" not in df.columns:
        df = with_train_labels(df)
    pcols = [c for c in df.columns if c.startswith("p_")]
    for key, g in df.groupby(ROW_KEYS + ["metric"], sort=False):
        vals = pd.to_numeric(g["value"], errors="coerce")
        reached = vals.dropna()
        n = int(len(reached))
        first = g.iloc[0]
        out.append({**dict(zip(ROW_KEYS + ["metric"], key)),
                    "mean": float(reached.mean()) if n else math.nan,
                    "std": float(reached.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
                    "n": n, "n_runs": int(len(g)), "censored": int(len(g) - n),
                    "unit": first.get("unit", ""), "higher_is_better": bool(first.get("higher_is_better") or False),
                    **{c: first[c] for c in pcols if not _missing(first[c])},
                    **accelerator_setting(first)})
    frame = pd.DataFrame(out)
    if len(frame) and (frame["train"] == "").all():     # one kind of training: no train column
        frame = frame.drop(columns="train")
    return frame


def accelerator_setting(record) -> dict:
    """Whether the numbers came from a CPU or a GPU (from env_device), so that a baseline made on
    the other kind says the comparison crosses that setting (wall-clock above all)."""
    device = record.get("env_device")
    if _missing(device) or not isinstance(device, str):
        return {}
    return {"p_env_accelerator": "cpu" if device.startswith("cpu") else "gpu"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------- sections (one paper table each)
@dataclass
class Row:
    labels: dict                      # dataset, model, loss, sampler
    stats: dict                       # metric -> summary row (dict)
    params: dict                      # p_* of the row


@dataclass
class Section:
    dataset: str
    sampler: str
    keys: list                        # row label columns shown
    rows: list = field(default_factory=list)
    metrics: list = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.sampler}"


def metric_order(names) -> list[str]:
    """The shown metrics in their declared column order (cdlbench/figures.py), ties by name."""
    return sorted((m for m in names if figure(m).shown), key=lambda m: (figure(m).order, m))


def sections(summary: pd.DataFrame) -> list[Section]:
    """Group the summary into paper tables: one per (dataset, sampler), rows (model,) loss."""
    out = []
    show_model = summary["model"].nunique() > 1
    show_train = "train" in summary.columns and summary["train"].nunique() > 1
    if "train" not in summary.columns:
        summary = summary.assign(train="")
    for (ds, sampler), g in summary.groupby(["dataset", "sampler"], sort=False):
        sec = Section(ds, sampler, (["model"] if show_model else []) + (["train"] if show_train else []) + ["loss"])
        for (model, train, loss), rg in g.groupby(["model", "train", "loss"], sort=False):
            recs = rg.to_dict(orient="records")
            params = {}
            for r in recs:          # union over the row's metrics (p_metric_* come from metric records)
                params.update({k: v for k, v in r.items() if k.startswith("p_") and not _missing(v) and k not in params})
            sec.rows.append(Row({"dataset": ds, "model": model, "train": train, "loss": loss, "sampler": sampler},
                                {r["metric"]: r for r in recs}, params))
        sec.metrics = metric_order(set(g["metric"]))
        out.append(sec)
    return out


def best_rows(sec: Section, metric: str) -> set[int]:
    """The index of the clearly best row of one column (markup.clear_best: fewest censored runs,
    then the mean in the metric's direction, ahead of every other row by more than the larger
    std), else nothing (ties, overlapping spreads, a single seed, a single row)."""
    cands, higher = [], False
    for i, row in enumerate(sec.rows):
        s = row.stats.get(metric)
        if s is None:
            continue
        higher = bool(s["higher_is_better"])
        cands.append(Candidate(i, s["mean"], s["std"], s["n"], s["censored"] / s["n_runs"] if s["n_runs"] else 1.0))
    return clear_best(cands, higher)


def column_format(sec: Section, metric: str, extra=()) -> NumberFormat:
    """The one number format of a column, from its means (and `extra` numbers shown with them)."""
    stats = [r.stats[metric] for r in sec.rows if metric in r.stats and r.stats[metric]["n"]]
    return NumberFormat.for_values([s["mean"] for s in stats] + [v for v in extra if v is not None],
                                   [s["std"] for s in stats if s["n"] > 1])


# ---------------------------------------------------------------- tables as display strings
def table_frame(sec: Section, markup: Markup) -> pd.DataFrame:
    """The section as a DataFrame of display strings (escaped by markup, clearly best cells bold),
    every column in one number format."""
    best = {m: best_rows(sec, m) for m in sec.metrics}
    units = {m: next((r.stats[m]["unit"] for r in sec.rows if m in r.stats), "") for m in sec.metrics}
    numbers = {m: column_format(sec, m) for m in sec.metrics}
    out = []
    for i, row in enumerate(sec.rows):
        d = {k: markup.escape(str(row.labels[k])) for k in sec.keys}
        for m in sec.metrics:
            s = row.stats.get(m)
            text = markup.escape(fmt_cell(s, numbers[m])) if s is not None else "-"
            d[markup.escape(header(m, units[m]))] = markup.bold(text) if i in best[m] else text
        out.append(d)
    return pd.DataFrame(out)


def comparisons(secs: list[Section], baselines) -> list[tuple]:
    """(section, row, Comparison) for every metric of every row that a baseline entry applies to;
    a metric's own p_metric_* parameters take precedence over the row's."""
    out = []
    for sec in secs:
        for row in sec.rows:
            for m in sec.metrics:
                s = row.stats.get(m)
                if s is None:
                    continue
                own = {k: v for k, v in s.items() if k.startswith("p_") and not _missing(v)}
                c = compare_metric(baselines, {**row.labels, **row.params, **own}, m, s)
                if c is not None:
                    out.append((sec, row, c))
    return out


def _footnotes(items) -> dict:
    """(baseline id, loss, crossed settings) -> footnote number, in order of appearance."""
    notes: dict = {}
    for _, row, c in items:
        key = (c.baseline.id, row.labels["train"], row.labels["loss"], tuple(c.crossed))
        if key not in notes:
            notes[key] = len(notes) + 1
    return notes


def footnote_lines(items) -> list[str]:
    lines = []
    for (bid, train, loss, crossed), i in _footnotes(items).items():
        b = next(c.baseline for _, _, c in items if c.baseline.id == bid)
        loss = loss + (f" ({train})" if train else "")
        where = f"[{i}] {loss} vs `{bid}` ({b.provenance_text()}; {b.experiment}"
        where += f"; {b.note})" if b.note else ")"
        lines.append(where + (": crosses settings: " + "; ".join(crossed) if crossed else ": same settings"))
    return lines


def verdict_text(c) -> str:
    """The verdict cell: better/worse/..., or which settings make the comparison meaningless."""
    if c.blocking:
        return "not comparable: " + ", ".join(k.removeprefix("p_") for k in c.blocking) + " differ" + \
            ("s" if len(c.blocking) == 1 else "")
    return c.verdict


def comparison_frame(items, markup: Markup) -> pd.DataFrame:
    """One row per compared metric; its numbers in the format of the metric's column (with the
    reference among the numbers that choose it); no difference where it is not comparable."""
    rows = []
    notes = _footnotes(items)
    for sec, row, c in items:
        note = notes[(c.baseline.id, row.labels["train"], row.labels["loss"], tuple(c.crossed))]
        number = column_format(sec, c.metric, extra=[c.reference])
        ours = "never" if c.ours is None else f"{number(c.ours)} (n={c.ours_n})"
        ref = "never" if c.reference is None else number(c.reference)
        delta = "-" if c.delta is None else ("+" if c.delta > 0 else "") + number(c.delta)
        rel = "" if c.delta is None or not c.reference else f" ({100 * c.delta / abs(c.reference):+.0f}%)"
        loss = row.labels["loss"] + (f" ({row.labels['train']})" if row.labels["train"] else "")
        rows.append({"loss": loss, "metric": header(c.metric), "ours (mean)": ours,
                     "reference": f"{ref} ({c.baseline.provenance_text()})", "ours - reference": delta + rel,
                     "verdict": verdict_text(c),
                     "settings": f"differ [{note}]" if c.crossed else f"same [{note}]"})
    frame = pd.DataFrame(rows)
    return frame.map(markup.escape) if len(frame) else frame


LONG_COLUMNS = ["reference", "reference_id", "reference_provenance", "delta", "verdict", "crossed_settings",
                "not_comparable_because"]


def long_frame(summary: pd.DataFrame, items) -> pd.DataFrame:
    """csv/json: the summary, plus reference columns where a baseline applies."""
    if not items:
        return summary
    extra = {}
    for _, row, c in items:
        key = tuple(row.labels[k] for k in ROW_KEYS) + (c.metric,)
        extra[key] = {"reference": c.reference, "reference_id": c.baseline.id,
                      "reference_provenance": c.baseline.provenance, "delta": c.delta, "verdict": c.verdict,
                      "crossed_settings": "; ".join(c.crossed),
                      "not_comparable_because": "; ".join(c.blocking_text) or None}
    add = [extra.get(tuple(r.get(k, "") for k in ROW_KEYS) + (r["metric"],), dict.fromkeys(LONG_COLUMNS))
           for _, r in summary.iterrows()]
    return pd.concat([summary.reset_index(drop=True), pd.DataFrame(add, columns=LONG_COLUMNS)], axis=1)
