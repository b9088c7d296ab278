"""Sweep tables laid out as the paper's sequential-sampler results (SPEC.md sections 4 and 6):

- quality against NFE: one row per deterministic sampler setting (sampler, steps, NFE), one
  column per loss (the paper's Heun deterministic comparison);
- quality against S_churn: one row per churn value of EDM's stochastic sampler, one column per
  (loss, S_noise) (the paper's stochastic sweep).
Each cell is mean +- std over seeds with n. Built from the long records of `report.load`."""
from __future__ import annotations

import math

import pandas as pd

# bookkeeping metrics (everything else with a value is a quality metric)
NOT_QUALITY = {"iterations", "nfe", "wall_clock", "converged", "train_seconds", "train_final_loss", "_complete"}
PARALLEL = {"picard"}


def sampler_kind(label: str) -> str:
    """'heun[steps=5]' -> 'heun'."""
    return str(label).split("[", 1)[0]


def quality_metrics(df: pd.DataFrame) -> list[str]:
    names = [m for m in dict.fromkeys(df["metric"]) if m not in NOT_QUALITY and not str(m).endswith("_iters_to_threshold")]
    return names


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    a = abs(x)
    if x == 0:
        return "0"
    if a >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if a >= 1e-3 else f"{x:.2e}"


def mean_std(values) -> str:
    v = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()
    if v.empty:
        return "-"
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{_fmt(v.mean())} ± {_fmt(std)} (n={len(v)})"


def _mean(values) -> float:
    v = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def mark_best(table: pd.DataFrame, means: list[dict], higher_is_better: bool) -> pd.DataFrame:
    """table.attrs['best'] = {(row, column)} of the best mean per row (none when all tie)."""
    best = set()
    for i, m in enumerate(means):
        finite = {c: v for c, v in m.items() if not math.isnan(v)}
        if len(finite) < 2 or len(set(finite.values())) == 1:
            continue
        top = (max if higher_is_better else min)(finite.values())
        best |= {(i, c) for c, v in finite.items() if v == top}
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
    cells["kind"] = cells["sampler"].map(sampler_kind)
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
    cells = cells[~cells["kind"].isin(PARALLEL) & (churn == 0) & (noise == 1.0)]   # S_noise acts only with churn
    if cells["nfe"].nunique() < 2:
        return None
    values = df[df["metric"] == metric].drop_duplicates("cell").set_index("cell")["value"]
    cells = cells.assign(value=values.reindex(cells["cell"]).to_numpy(), steps=_param(cells, "steps"))
    keys = _context_keys(cells)
    losses = list(dict.fromkeys(cells["loss"]))
    kind_order = {k: i for i, k in enumerate(dict.fromkeys(cells["kind"]))}      # suite order
    # the kind names a row unless two labels share (kind, steps): then the full label does
    ambiguous = cells.drop_duplicates("sampler").duplicated(["kind", "steps"], keep=False).any()
    rows, means = [], []
    for key, g in cells.groupby(keys + ["kind", "sampler"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys + ["_kind", "sampler"], key))
        if not ambiguous:
            row["sampler"] = row["_kind"]
        row["_order"] = kind_order[row.pop("_kind")]
        row["steps"] = "-" if g["steps"].isna().all() else int(g["steps"].iloc[0])
        row["NFE"] = int(g["nfe"].median())
        for loss in losses:
            row[f"{loss}"] = mean_std(g.loc[g["loss"] == loss, "value"])
        rows.append(row)
        means.append({f"{loss}": _mean(g.loc[g["loss"] == loss, "value"]) for loss in losses})
    table = pd.DataFrame(rows)
    order = table.sort_values(keys + ["_order", "NFE"], kind="stable").index
    table = table.loc[order].drop(columns=["_order"]).reset_index(drop=True)
    return mark_best(table, [means[i] for i in order], _direction(df, metric))


def churn_table(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Quality against S_churn per (loss, S_noise) for samplers with a churn parameter
    (None when fewer than two S_churn values were run)."""
    cells = _cells(df)
    churn = _param(cells, "S_churn")
    cells = cells[churn.notna() & ~cells["kind"].isin(PARALLEL)]
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
    rows, means = [], []
    for key, g in cells.groupby(keys + ["kind", "steps", "S_churn"], sort=True):
        row = dict(zip(keys + ["sampler", "steps", "S_churn"], key))
        row["steps"] = int(row["steps"]) if not math.isnan(row["steps"]) else "-"
        row["S_churn"] = f"{row['S_churn']:g}"
        row["NFE"] = int(g["nfe"].median())
        for loss, noise in columns:
            sel = (g["loss"] == loss) & (g["S_noise"] == noise)
            row[f"{loss}, S_noise={noise:g}"] = mean_std(g.loc[sel, "value"])
        rows.append(row)
        means.append({f"{loss}, S_noise={noise:g}": _mean(g.loc[(g["loss"] == loss) & (g["S_noise"] == noise),
                                                                          "value"]) for loss, noise in columns})
    return mark_best(pd.DataFrame(rows), means, _direction(df, metric))


def sweep_tables(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) for every applicable sweep and quality metric."""
    out = []
    from .tables import header                      # late: report imports this module

    for metric in quality_metrics(df):
        name = header(metric)
        t = nfe_table(df, metric)
        if t is not None:
            out.append((f"{name} against NFE: sequential samplers, one column per loss, best per row in bold", t))
        t = churn_table(df, metric)
        if t is not None:
            out.append((f"{name} against S_churn: EDM stochastic sampler, one column per (loss, S_noise), best per row in bold", t))
    return out


def sweep_sections(df: pd.DataFrame, fmt: str) -> list[str]:
    """The sweep tables as report sections in fmt (markdown, latex or html)."""
    from .tables import _bold, _escape, _tabulate        # late: report imports this module

    out = []
    for title, table in sweep_tables(df):
        frame = table.astype(str).map(lambda v: _escape(v, fmt))
        for i, col in table.attrs.get("best", ()):
            frame.loc[i, col] = _bold(frame.loc[i, col], fmt)
        frame.columns = [_escape(str(c), fmt) for c in frame.columns]
        body = _tabulate(frame, fmt)
        if fmt == "markdown":
            out.append(f"### {title}\n\n{body}\n")
        elif fmt == "latex":
            out.append(f"% {_escape(title, fmt)}\n{body}\n")
        else:
            out.append(f"<h3>{_escape(title, fmt)}</h3>\n{body}\n")
    return out
