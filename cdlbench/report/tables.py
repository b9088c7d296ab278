"""Paper-style tables from records (Wu et al. 2024, Dino table; SPEC section 6).

One table per (dataset, sampler): rows are losses (and models when several), columns are metrics
with units in the headers, each cell mean ± std over seeds with n, the best per column marked.
With a baselines file, a second table per section gives the reference value, our difference and
whether it is better or worse (knowing each metric's direction) and the settings it crosses.
"""
from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .baselines import compare_metric, load_baselines
from .sweeps import sweep_sections
from ..run.rundir import RunDir

# metric -> (column header, unit shown in the header); order = column order
COLUMNS = {
    "mmd": ("MMD^2", ""),
    "fid": ("FID", ""),
    "kid": ("KID", ""),
    "class_accuracy": ("class accuracy", "fraction"),
    "iterations": ("iterations", "passes or steps"),
    "nfe": ("denoiser evals", ""),
    "wall_clock": ("wall-clock", "s"),
    "mmd_iters_to_threshold": ("iteration MMD < thr", "pass"),
    "score_error_id": ("score error, high-density", ""),
    "score_error_ood": ("score error, OOD", ""),
    "score_error_path": ("score error on path", ""),
    "score_error_path_ood": ("score error on path, OOD part", ""),
    "score_error_path_ood_fraction": ("path evals OOD", "fraction"),
}
HIDDEN = {"converged", "train_seconds", "train_final_loss"}      # in csv/json, not in the tables
ROW_KEYS = ["dataset", "model", "loss", "sampler"]
FORMATS = ("markdown", "latex", "csv", "json", "html")


# ---------------------------------------------------------------- loading and statistics
def load(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Records of complete cells of all run directories; a cell given twice counts once."""
    rows = []
    for d in run_dirs:
        rows += RunDir(d).load_records()
    if not rows:
        raise FileNotFoundError(f"no complete records in {', '.join(map(str, run_dirs))}")
    df = pd.DataFrame(rows)
    ident = [c for c in ("suite", "suite_version", "cell", "metric") if c in df.columns]
    return df.drop_duplicates(subset=ident, keep="first").reset_index(drop=True)


def load_curves(run_dirs: list[str | Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        rows += RunDir(d).load_curves()
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (dataset, model, loss, sampler, metric) with mean, std (ddof 1), n
    (runs that reached a value), n_runs, censored, unit, direction and the group's p_* parameters."""
    out = []
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
    return pd.DataFrame(out)


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
    known = [m for m in COLUMNS if m in names]
    return known + sorted(m for m in names if m not in COLUMNS and m not in HIDDEN)


def sections(summary: pd.DataFrame) -> list[Section]:
    """Group the summary into paper tables: one per (dataset, sampler), rows (model,) loss."""
    out = []
    show_model = summary["model"].nunique() > 1
    for (ds, sampler), g in summary.groupby(["dataset", "sampler"], sort=False):
        sec = Section(ds, sampler, (["model"] if show_model else []) + ["loss"])
        for (model, loss), rg in g.groupby(["model", "loss"], sort=False):
            recs = rg.to_dict(orient="records")
            params = {}
            for r in recs:          # union over the row's metrics (p_metric_* come from metric records)
                params.update({k: v for k, v in r.items() if k.startswith("p_") and not _missing(v) and k not in params})
            sec.rows.append(Row({"dataset": ds, "model": model, "loss": loss, "sampler": sampler},
                                {r["metric"]: r for r in recs}, params))
        sec.metrics = metric_order(set(g["metric"]))
        out.append(sec)
    return out


def best_rows(sec: Section, metric: str) -> set[int]:
    """Indices of the best rows for one column: fewest censored runs first, then the mean in the
    metric's direction. Nothing is marked when all rows tie or only one row has the metric."""
    scored = []
    for i, row in enumerate(sec.rows):
        s = row.stats.get(metric)
        if s is None:
            continue
        frac = s["censored"] / s["n_runs"] if s["n_runs"] else 1.0
        mean = s["mean"] if s["n"] else math.inf
        scored.append((i, frac, -mean if s["higher_is_better"] and s["n"] else mean))
    if len(scored) < 2:
        return set()
    keys = [(f, m) for _, f, m in scored]
    if len(set(keys)) == 1:
        return set()
    best = min(keys)
    return {i for i, f, m in scored if (f, m) == best}


# ---------------------------------------------------------------- cell text
def fmt_number(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 1:
        return f"{x:.3g}" if a < 100 else f"{x:.0f}"
    return f"{x:.3g}" if a >= 1e-3 else f"{x:.2e}"


def fmt_cell(s: dict) -> str:
    """'mean ± std (n=3)'; with censored runs '(2/3 reached)'; none reached: 'never (0/3)'."""
    if s["n"] == 0:
        return f"never (0/{s['n_runs']})"
    text = f"{fmt_number(s['mean'])} ± {fmt_number(s['std'])}"
    if s["censored"]:
        return f"{text} ({s['n']}/{s['n_runs']} reached)"
    return f"{text} (n={s['n']})"


def header(metric: str, unit: str = "") -> str:
    name, u = COLUMNS.get(metric, (metric, unit))
    return f"{name} ({u})" if u else name


# ---------------------------------------------------------------- rendering per format
def _escape(text: str, fmt: str) -> str:
    if fmt == "latex":
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                     ("^", r"\^{}"), ("<", "$<$"), (">", "$>$"), ("±", r"$\pm$")):
            text = text.replace(a, b)
        return text
    if fmt == "html":
        return html.escape(text)
    return text


def _bold(text: str, fmt: str) -> str:
    return {"markdown": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}[fmt]


def table_frame(sec: Section, fmt: str) -> pd.DataFrame:
    """The section as a DataFrame of display strings (escaped for fmt, best cells bold)."""
    best = {m: best_rows(sec, m) for m in sec.metrics}
    units = {m: next((r.stats[m]["unit"] for r in sec.rows if m in r.stats), "") for m in sec.metrics}
    out = []
    for i, row in enumerate(sec.rows):
        d = {k: _escape(str(row.labels[k]), fmt) for k in sec.keys}
        for m in sec.metrics:
            s = row.stats.get(m)
            text = _escape(fmt_cell(s), fmt) if s is not None else "-"
            d[_escape(header(m, units[m]), fmt)] = _bold(text, fmt) if i in best[m] else text
        out.append(d)
    return pd.DataFrame(out)


def _tabulate(frame: pd.DataFrame, fmt: str) -> str:
    style = {"markdown": "github", "latex": "latex_raw", "html": "unsafehtml"}[fmt]
    return tabulate(frame, headers="keys", tablefmt=style, showindex=False, disable_numparse=True)


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
        key = (c.baseline.id, row.labels["loss"], tuple(c.crossed))
        if key not in notes:
            notes[key] = len(notes) + 1
    return notes


def footnote_lines(items) -> list[str]:
    lines = []
    for (bid, loss, crossed), i in _footnotes(items).items():
        b = next(c.baseline for _, _, c in items if c.baseline.id == bid)
        where = f"[{i}] {loss} vs `{bid}` ({b.provenance_text()}; {b.experiment}"
        where += f"; {b.note})" if b.note else ")"
        lines.append(where + (": crosses settings: " + "; ".join(crossed) if crossed else ": same settings"))
    return lines


def comparison_frame(items, fmt: str) -> pd.DataFrame:
    rows = []
    notes = _footnotes(items)
    for sec, row, c in items:
        note = notes[(c.baseline.id, row.labels["loss"], tuple(c.crossed))]
        ours = "never" if c.ours is None else f"{fmt_number(c.ours)} (n={c.ours_n})"
        ref = "never" if c.reference is None else fmt_number(c.reference)
        delta = "-" if c.delta is None else ("+" if c.delta > 0 else "") + fmt_number(c.delta)
        rel = "" if c.delta is None or not c.reference else f" ({100 * c.delta / abs(c.reference):+.0f}%)"
        rows.append({"loss": row.labels["loss"], "metric": header(c.metric), "ours (mean)": ours,
                     "reference": f"{ref} ({c.baseline.provenance_text()})", "ours - reference": delta + rel,
                     "verdict": c.verdict,
                     "settings": f"differ [{note}]" if c.crossed else f"same [{note}]"})
    frame = pd.DataFrame(rows)
    return frame.map(lambda v: _escape(str(v), fmt)) if len(frame) else frame


def _section_text(sec: Section, items, fmt: str) -> str:
    title = _escape(sec.title, fmt)
    body = _tabulate(table_frame(sec, fmt), fmt)
    mine = [it for it in items if it[0] is sec]
    notes = [_escape(line, fmt) for line in footnote_lines(mine)]
    if fmt == "markdown":
        text = f"### {title}\n\n{body}\n"
        if mine:
            text += (f"\nCompared with the reference numbers:\n\n{_tabulate(comparison_frame(mine, fmt), fmt)}\n\n"
                     + "".join(f"- {n}\n" for n in notes))
        return text
    if fmt == "latex":
        text = f"% {title}\n{body}\n"
        if mine:
            text += (f"% {title}: compared with the reference numbers\n{_tabulate(comparison_frame(mine, fmt), fmt)}\n"
                     + "".join(f"% {n}\n" for n in notes))
        return text
    text = f"<h3>{title}</h3>\n{body}\n"
    if mine:
        text += (f"<p>Compared with the reference numbers:</p>\n{_tabulate(comparison_frame(mine, fmt), fmt)}\n"
                 + "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>\n")
    return text


def _long_frame(summary: pd.DataFrame, items) -> pd.DataFrame:
    """csv/json: the summary, plus reference columns where a baseline applies."""
    if not items:
        return summary
    extra = {}
    for _, row, c in items:
        key = (row.labels["dataset"], row.labels["model"], row.labels["loss"], row.labels["sampler"], c.metric)
        extra[key] = {"reference": c.reference, "reference_id": c.baseline.id,
                      "reference_provenance": c.baseline.provenance, "delta": c.delta, "verdict": c.verdict,
                      "crossed_settings": "; ".join(c.crossed)}
    cols = ["reference", "reference_id", "reference_provenance", "delta", "verdict", "crossed_settings"]
    add = [extra.get(tuple(r[k] for k in ROW_KEYS + ["metric"]), dict.fromkeys(cols)) for _, r in summary.iterrows()]
    return pd.concat([summary.reset_index(drop=True), pd.DataFrame(add, columns=cols)], axis=1)


def _html_page(title: str, parts: list[str], images: list[Path]) -> str:
    figs = "".join(f'<figure><img alt="{html.escape(p.name)}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.name)}</figcaption></figure>\n'
                   for p in images)
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
             "img{max-width:100%}figure{margin:1em 0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h2>{html.escape(title)}</h2>\n" + "".join(parts)
            + (f"<h3>Plots</h3>\n{figs}" if images else "") + "</body></html>\n")


def render_frame(df: pd.DataFrame, fmt: str = "markdown", baselines=None, images: list[Path] | None = None,
                 plots_dir: str | Path | None = None) -> str:
    """The report of a records DataFrame (what `render` does after loading)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    summary = summarise(df)
    secs = sections(summary)
    items = comparisons(secs, baselines) if baselines else []
    if fmt == "csv":
        return _long_frame(summary, items).to_csv(index=False)
    if fmt == "json":
        return json.dumps(_long_frame(summary, items).to_dict(orient="records"), indent=2, default=str) + "\n"
    suites = ", ".join(sorted(set(df["suite"]))) if "suite" in df.columns else "results"
    title = f"{suites}: mean ± std over seeds (n = seeds that reached a value); best per column in bold"
    parts = sweep_sections(df, fmt) + [_section_text(sec, items, fmt) for sec in secs]   # sweeps: report_sweeps.py
    if fmt == "html":
        return _html_page(title, [p + "\n" for p in parts], list(images or []))
    if fmt == "latex":
        return f"% {_escape(title, fmt)}\n" + "\n".join(parts)
    text = f"## {title}\n\n" + "\n".join(parts)
    if images:
        where = f" in {plots_dir}" if plots_dir else ""
        text += f"\nPlots{where}: " + ", ".join(p.name for p in images) + "\n"
    return text


def render(run_dirs: list[str | Path], fmt: str = "markdown", baseline: str | Path | None = None,
           plots: str | Path | None = None) -> str:
    """`cdlbench report`: tables in fmt; with `baseline`, the reference comparison; with `plots`,
    PNGs written there (html embeds them; html without `plots` draws them in a temporary folder)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    df = load(run_dirs)
    baselines = load_baselines(baseline)[0] if baseline else None
    if plots is None and fmt != "html":
        return render_frame(df, fmt, baselines)
    try:
        from . import plots as plotting
    except ImportError as exc:
        raise ValueError(f"--plots and --format html need matplotlib ({exc}); pip install 'cdlbench[plots]'") from None

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(plots) if plots is not None else Path(tmp)
        images = plotting.write_all(run_dirs, df, load_curves(run_dirs), out)
        return render_frame(df, fmt, baselines, images, plots)
