"""Sweep tables laid out as the paper's sequential-sampler results (docs/method.md sections 4 and 6):

- quality against NFE: one row per deterministic sampler setting (sampler, steps, NFE), one
  column per loss (the paper's Heun deterministic comparison);
- quality against S_churn: one row per churn value of EDM's stochastic sampler, one column per
  (loss, S_noise) (the paper's stochastic sweep).
Each cell is mean +- std over seeds with n, one number format per column; in each row the clearly
best cell is bold (markup.clear_best). Samplers count as parallel or sequential by their declared
SamplerSpec, metrics as quality figures by their MetricSpec (cdlbench/figures.py).
Built from the long records of `report.load`."""
from __future__ import annotations

import math

import pandas as pd

from ..figures import figure, is_parallel, sampler_name
from .markup import BOLD_RULE, Candidate, Markup, NumberFormat, clear_best, header

sampler_kind = sampler_name          # 'heun[steps=5]' -> 'heun'


def quality_metrics(df: pd.DataFrame) -> list[str]:
    """The sample-quality figures among the records' metrics, in record order."""
    return [m for m in dict.fromkeys(df["metric"]) if figure(m).quality]


def _stats(values) -> tuple[float, float, int]:
    """(mean, std with ddof 1 (0 for one value), n) of the numeric values."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, int(len(v))


def mean_std(values, number: NumberFormat | None = None) -> str:
    mean, std, n = _stats(values)
    if n == 0:
        return "-"
    number = number or NumberFormat.for_values([mean])
    return f"{number(mean)} ± {number(std)} (n={n})"


def _fill(table: pd.DataFrame, stats: list[dict], higher_is_better: bool) -> pd.DataFrame:
    """Write the stats {column: (mean, std, n)} of every row into the table as text, one number
    format per column; table.attrs['best'] = {(row, column)} of each row's clearly best cell."""
    columns = list(dict.fromkeys(c for row in stats for c in row))
    for c in columns:
        number = NumberFormat.for_values([row[c][0] for row in stats if c in row and row[c][2]],
                                         [row[c][1] for row in stats if c in row and row[c][2] > 1])
        table[c] = [("-" if row[c][2] == 0 else f"{number(row[c][0])} ± {number(row[c][1])} (n={row[c][2]})")
                    if c in row else "-" for row in stats]
    best = set()
    for i, row in enumerate(stats):
        cands = [Candidate(c, m, s, n) for c, (m, s, n) in row.items() if n]
        best |= {(i, c) for c in clear_best(cands, higher_is_better)}
    table.attrs["best"] = best
    return table


def _direction(df: pd.DataFrame, metric: str) -> bool:
    hib = df.loc[df["metric"] == metric, "higher_is_better"] if "higher_is_better" in df.columns else pd.Series([])
    return bool(hib.iloc[0]) if len(hib) and not pd.isna(hib.iloc[0]) else False


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with its identity, sampler parameters and NFE."""
    ident = [c for c in ("cell", "dataset", "model", "loss", "sampler", "seed") if c in df.columns]
    params = [c for c in df.columns if c.startswith("p_sampler_")]
    cells = df.drop_duplicates("cell")[ident + params].set_index("cell")
    nfe = df[df["metric"] == "nfe"].drop_duplicates("cell").set_index("cell")["value"]
    cells["nfe"] = pd.to_numeric(nfe.reindex(cells.index), errors="coerce")
    cells["kind"] = cells["sampler"].map(sampler_name)
    cells["parallel"] = cells["sampler"].map(is_parallel).astype(bool)
    return cells.reset_index()


def _context_keys(cells: pd.DataFrame) -> list[str]:
    return [k for k in ("dataset", "model") if cells[k].nunique() > 1]


def _param(cells: pd.DataFrame, name: str) -> pd.Series:
    col = f"p_sampler_{name}"
    return pd.to_numeric(cells[col], errors="coerce") if col in cells.columns else pd.Series(math.nan, index=cells.index)


def nfe_table(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Quality against NFE per loss for the sequential, non-churned samplers (None if < 2 NFE values)."""
    cells = _cells(df)
    churn, noise = _param(cells, "S_churn").fillna(0.0), _param(cells, "S_noise").fillna(1.0)
    cells = cells[~cells["parallel"] & (churn == 0) & (noise == 1.0)]   # S_noise acts only with churn
    if cells["nfe"].nunique() < 2:
        return None
    values = df[df["metric"] == metric].drop_duplicates("cell").set_index("cell")["value"]
    cells = cells.assign(value=values.reindex(cells["cell"]).to_numpy(), steps=_param(cells, "steps"))
    keys = _context_keys(cells)
    losses = list(dict.fromkeys(cells["loss"]))
    kind_order = {k: i for i, k in enumerate(dict.fromkeys(cells["kind"]))}      # suite order
    # the kind names a row unless two labels share (kind, steps): then the full label does
    ambiguous = cells.drop_duplicates("sampler").duplicated(["kind", "steps"], keep=False).any()
    rows, stats = [], []
    for key, g in cells.groupby(keys + ["kind", "sampler"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys + ["_kind", "sampler"], key))
        if not ambiguous:
            row["sampler"] = row["_kind"]
        row["_order"] = kind_order[row.pop("_kind")]
        row["steps"] = "-" if g["steps"].isna().all() else int(g["steps"].iloc[0])
        row["NFE"] = int(g["nfe"].median())
        rows.append(row)
        stats.append({f"{loss}": _stats(g.loc[g["loss"] == loss, "value"]) for loss in losses})
    table = pd.DataFrame(rows)
    order = table.sort_values(keys + ["_order", "NFE"], kind="stable").index
    table = table.loc[order].drop(columns=["_order"]).reset_index(drop=True)
    return _fill(table, [stats[i] for i in order], _direction(df, metric))


def churn_table(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Quality against S_churn per (loss, S_noise) for samplers with a churn parameter
    (None when fewer than two S_churn values were run)."""
    cells = _cells(df)
    churn = _param(cells, "S_churn")
    cells = cells[churn.notna() & ~cells["parallel"]]
    steps = _param(cells, "steps")
    swept = cells.assign(_c=_param(cells, "S_churn"), _s=steps).groupby(["kind", "_s"])["_c"].transform("nunique")
    cells = cells[swept > 1]                               # only (sampler, steps) with a churn sweep
    if cells.empty:
        return None
    values = df[df["metric"] == metric].drop_duplicates("cell").set_index("cell")["value"]
    cells = cells.assign(value=values.reindex(cells["cell"]).to_numpy(), S_churn=_param(cells, "S_churn"),
                         S_noise=_param(cells, "S_noise").fillna(1.0), steps=_param(cells, "steps"))
    keys = _context_keys(cells)
    columns = list(dict.fromkeys(zip(cells["loss"], cells["S_noise"])))
    rows, stats = [], []
    for key, g in cells.groupby(keys + ["kind", "steps", "S_churn"], sort=True):
        row = dict(zip(keys + ["sampler", "steps", "S_churn"], key))
        row["steps"] = int(row["steps"]) if not math.isnan(row["steps"]) else "-"
        row["S_churn"] = f"{row['S_churn']:g}"
        row["NFE"] = int(g["nfe"].median())
        rows.append(row)
        stats.append({f"{loss}, S_noise={noise:g}": _stats(g.loc[(g["loss"] == loss) & (g["S_noise"] == noise), "value"])
                      for loss, noise in columns})
    return _fill(pd.DataFrame(rows), stats, _direction(df, metric))


PARALLEL_FIGURES = ("iterations", "nfe", "jvp", "wall_clock")


def parallel_table(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Parallel samplers side by side on one dataset (docs/method.md section 4.5): one row per
    parallel sampler, per loss its rounds, NFE, Jacobian products (where any), wall-clock, final
    quality and the round reaching the quality threshold (never-reached runs counted as k/n);
    None unless two or more parallel samplers ran on one dataset."""
    cells = _cells(df)
    cells = cells[cells["parallel"]]
    if cells.empty or cells.groupby("dataset")["sampler"].nunique().max() < 2:
        return None
    keys = _context_keys(cells)
    losses = list(dict.fromkeys(cells["loss"]))
    threshold = f"{metric}_iters_to_threshold"
    figures = [m for m in PARALLEL_FIGURES if (df["metric"] == m).any() and
               pd.to_numeric(df.loc[df["metric"] == m, "value"], errors="coerce").notna().any()]
    figures += [metric] + ([threshold] if (df["metric"] == threshold).any() else [])
    by_metric = {m: df[df["metric"] == m].drop_duplicates("cell").set_index("cell")["value"] for m in figures}
    rows = []
    for key, g in cells.groupby(keys + ["sampler"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys + ["sampler"], key))
        for loss in losses:
            mine = g.loc[g["loss"] == loss, "cell"]
            for m in figures:
                values = by_metric[m].reindex(mine)
                text = mean_std(values)
                if m == threshold and len(values):
                    reached = int(pd.to_numeric(values, errors="coerce").notna().sum())
                    text = "never" if reached == 0 else text
                    text += f" ({reached}/{len(values)} reached)" if reached < len(values) else ""
                row[f"{loss}: {header(m)}"] = text
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_tables(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) for every applicable sweep and quality metric."""
    out = []
    bold = BOLD_RULE.format(other="cell of its row")
    metrics = quality_metrics(df)
    if metrics:
        t = parallel_table(df, metrics[0])
        if t is not None:
            out.append((f"Parallel samplers side by side (same models, x_T and noise): per loss rounds, NFE, "
                        f"wall-clock, final {header(metrics[0])} and the round reaching its threshold; mean ± std "
                        f"over seeds", t))
    for metric in quality_metrics(df):
        name = header(metric)
        t = nfe_table(df, metric)
        if t is not None:
            out.append((f"{name} against NFE: sequential samplers, one column per loss; {bold}", t))
        t = churn_table(df, metric)
        if t is not None:
            out.append((f"{name} against S_churn: EDM stochastic sampler, one column per (loss, S_noise); {bold}", t))
    return out


def sweep_frames(df: pd.DataFrame, markup: Markup) -> list[tuple[str, pd.DataFrame]]:
    """(escaped title, frame of display strings with the clearly best cells bold) per sweep table."""
    out = []
    for title, table in sweep_tables(df):
        frame = table.astype(str).map(markup.escape)
        for i, col in table.attrs.get("best", ()):
            frame.loc[i, col] = markup.bold(frame.loc[i, col])
        frame.columns = [markup.escape(str(c)) for c in frame.columns]
        out.append((markup.escape(title), frame))
    return out
