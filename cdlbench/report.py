"""Paper-style tables from records: one row per (loss, sampler), one column per metric,
each cell mean +- std over seeds with n."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .results import RunDir

# metric -> (column header, unit shown in the header)
COLUMNS = {
    "mmd": ("MMD^2", ""),
    "iterations": ("Picard iterations", "passes"),
    "nfe": ("denoiser evals", ""),
    "wall_clock": ("wall-clock", "s"),
    "mmd_iters_to_threshold": ("iteration MMD < thr", "pass"),
}
ROW_KEYS = ["dataset", "model", "loss", "sampler"]
FORMATS = ("markdown", "latex", "csv", "json")


def load(run_dirs: list[str | Path]) -> pd.DataFrame:
    rows = []
    for d in run_dirs:
        rows += RunDir(d).load_records()
    if not rows:
        raise FileNotFoundError(f"no complete records in {', '.join(map(str, run_dirs))}")
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (dataset, model, loss, sampler, metric) with mean, std, n, reached."""
    out = []
    for key, g in df.groupby(ROW_KEYS + ["metric"], sort=False):
        vals = pd.to_numeric(g["value"], errors="coerce")
        reached = vals.dropna()
        out.append({**dict(zip(ROW_KEYS + ["metric"], key)), "mean": reached.mean() if len(reached) else math.nan,
                    "std": reached.std(ddof=1) if len(reached) > 1 else (0.0 if len(reached) == 1 else math.nan),
                    "n": int(len(reached)), "n_runs": int(len(g)),
                    "censored": int(len(g) - len(reached)), "unit": g["unit"].iloc[0],
                    "higher_is_better": g["higher_is_better"].iloc[0]})
    return pd.DataFrame(out)


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


def fmt_cell(row) -> str:
    if row["n"] == 0:
        return f"never (0/{row['n_runs']})"
    text = f"{fmt_number(row['mean'])} ± {fmt_number(row['std'])}"
    if row["censored"]:
        return f"{text} ({row['n']}/{row['n_runs']} reached)"
    return f"{text} (n={row['n']})"


def dino_table(summary: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    metrics = metrics or [m for m in COLUMNS if m in set(summary["metric"])]
    keys = [k for k in ROW_KEYS if summary[k].nunique() > 1 or k in ("loss", "sampler")]
    table = []
    for key, g in summary.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        by_metric = {r["metric"]: r for _, r in g.iterrows()}
        for m in metrics:
            header, unit = COLUMNS.get(m, (m, ""))
            row[f"{header} ({unit})" if unit else header] = fmt_cell(by_metric[m]) if m in by_metric else "-"
        table.append(row)
    return pd.DataFrame(table)


def render(run_dirs: list[str | Path], fmt: str = "markdown") -> str:
    df = load(run_dirs)
    summary = summarise(df)
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        return json.dumps(summary.to_dict(orient="records"), indent=2, default=str)
    table = dino_table(summary)
    suites = ", ".join(sorted(set(df["suite"])))
    if fmt == "markdown":
        head = f"## {suites}: mean ± std over seeds (n = seeds)\n\n"
        return head + tabulate(table, headers="keys", tablefmt="github", showindex=False) + "\n"
    if fmt == "latex":
        return tabulate(table.replace("±", r"$\pm$", regex=True), headers="keys", tablefmt="latex_raw",
                        showindex=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
