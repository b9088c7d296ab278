"""The paper's figures as PNGs (matplotlib, headless Agg backend), drawn from a run directory.

- figure1_*: |model score - exact score| heat map over (t, z) with the iterates of a parallel sampler
  on top and its sequential twin's paths (Figure 1);
- figure3_*: final samples beside the training data, one row per seed, one panel per loss (Figure 3);
  image data: sample grids;
- figure4_*: a quality metric against the iterations of a parallel sampler per loss, mean ± std over
  seeds, converged runs carried forward, with the sequential twin's final value (Figure 4);
- figure5_*: quality (the headline quality figure) against denoiser evaluations (Figure 5), when NFE varies;
- figure6_*: quality against S_churn (Figure 6), when the records hold an S_churn sweep.
Which sampler is parallel, its sequential twin, and which metric is a quality figure come from the
components' declarations (cdlbench/figures.py). Every figure has a fixed size (PANEL inches per
panel at DPI, at least MIN_WIDTH inches wide: 1000 px), so tests can check the PNG size, keeps its
legend outside the axes, and carries its title and a description in the PNG's text chunks (Title,
Description), which the html report uses as the caption.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..figures import figure, is_parallel, is_sampler, sampler_name, sequential_twin  # noqa: E402
from ..run.rundir import CorruptSamples, read_samples  # noqa: E402
from .markup import SUPERSCRIPT, plot_text  # noqa: E402

DPI = 100
PANEL = (3.6, 3.2)          # inches per panel (width, height)
MIN_WIDTH = 10.0            # inches: every figure is at least 1000 px wide at DPI
CURVE_SIZE = (12.0, 5.0)    # inches: Figure 4, one panel with its legend beside it


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_")


def math_label(label: str) -> str:
    """A declared label for matplotlib: 'MMD^2' -> 'MMD$^{2}$'."""
    return SUPERSCRIPT.sub(lambda m: f"$^{{{m.group(1)}}}$", plot_text(label))


def new_figure(ncols: int, nrows: int = 1):
    """ncols x nrows panels, PANEL inches each, at least MIN_WIDTH wide."""
    size = (max(PANEL[0] * ncols, MIN_WIDTH), PANEL[1] * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=DPI, squeeze=False, layout="constrained")
    return fig, axes


def outside_legend(fig, ax, fontsize: float = 8) -> None:
    """The legend of ax's lines to the right of the axes, outside the data."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=fontsize, frameon=False)


def save(fig, path: Path, title: str = "", description: str = "") -> Path:
    """Write the PNG (its size stays PANEL * panels * DPI: no bbox_inches="tight") with its title
    and description as PNG text, for captions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in (("Title", title), ("Description", description)) if v}
    fig.savefig(path, dpi=DPI, metadata=meta)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- saved samples
def load_samples(run_dirs, records: pd.DataFrame) -> list[dict]:
    """Every RUN_DIR/samples/*.npz as a dict with its cell's dataset, model, loss, sampler, seed
    and sampler parameters (p_sampler_*)."""
    ident = records.drop_duplicates("cell").set_index("cell") if "cell" in records.columns else None
    order = {c: i for i, c in enumerate(ident.index)} if ident is not None else {}
    params = [c for c in records.columns if str(c).startswith("p_sampler_")]
    out = []
    for d in run_dirs:
        for f in sorted((Path(d) / "samples").glob("*.npz")):
            if f.name.endswith(".tmp.npz"):
                continue
            try:
                blob = read_samples(f)
            except CorruptSamples as exc:       # truncated, bit rot, a FIFO: `cdlbench verify` reports it
                warnings.warn(f"{exc}; skipped in the plots", stacklevel=2)
                continue
            cell = str(blob.get("cell", ""))
            if ident is None or cell not in ident.index:
                continue
            r = ident.loc[cell]
            out.append({**blob, "cell": cell, "order": order[cell],
                        **{k: r[k] for k in ("dataset", "model", "loss", "sampler", "seed")},
                        **{k: r[k] for k in params}})
    return out


def _first_seed(items: list[dict]) -> list[dict]:
    """Items of the lowest seed, in the order of the records (the suite's order of losses)."""
    seed = min(int(it["seed"]) for it in items)
    return sorted((it for it in items if int(it["seed"]) == seed), key=lambda it: it["order"])


def _points_panel(ax, pts: np.ndarray, title: str, lims=None) -> None:
    pts = pts.reshape(pts.shape[0], -1)
    if pts.shape[1] == 1:                                    # 1-D: histogram
        ax.hist(pts[:, 0], bins=80, range=lims, density=True, color="C0")
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
    else:                                                    # 2-D (first two coordinates)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        if lims is not None:
            ax.set_xlim(*lims)
            ax.set_ylim(*lims)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$", fontsize=8)
        ax.set_ylabel("$x_2$", fontsize=8)
    ax.set_title(plot_text(title), fontsize=8)


def image_grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] (or [0, 1]) -> one [rows*H, cols*W, C] image in [0, 1]."""
    x = images[: cols * cols].astype(np.float32)
    if x.min() < 0:
        x = (x + 1) / 2
    x = np.clip(x, 0, 1)
    n, c, h, w = x.shape
    rows = math.ceil(n / cols)
    grid = np.ones((rows * h, cols * w, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = x[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def figure3_grid(group: list[dict]) -> list[list[tuple[str, np.ndarray | None]]]:
    """The panels of one Figure 3 (items of one dataset and sampler): one row per seed, of
    (title, points or images; None where a cell is missing): first the training data that the
    seed's cells compared their samples with (their saved `data`, where saved), then one panel per
    (model,) loss in the records' order, titled with loss, sampler and seed."""
    group = sorted(group, key=lambda it: it["order"])
    several_models = len({g["model"] for g in group}) > 1
    columns = list(dict.fromkeys((it["model"], it["loss"]) for it in group))
    by = {(int(it["seed"]), (it["model"], it["loss"])): it for it in group}
    with_data = [it for it in group if "data" in it]
    rows = []
    for seed in sorted({int(it["seed"]) for it in group}):
        cells = [by.get((seed, key)) for key in columns]
        row = []
        if with_data:
            source = next((it for it in cells if it is not None and "data" in it), with_data[0])
            what = "images" if source["data"].ndim == 4 else "points"
            row.append((f"training data, {source['data'].shape[0]} {what} · seed {source['seed']}", source["data"]))
        for (model, loss), it in zip(columns, cells):
            name = f"{loss} ({model})" if several_models else str(loss)
            sampler = group[0]["sampler"]
            row.append((f"{name} · {sampler} · seed {seed}" + ("" if it is not None else ": no samples"),
                        None if it is None else it["samples"]))
        rows.append(row)
    return rows


def figure3_samples(items: list[dict], out: Path) -> list[Path]:
    """Figure 3: per (dataset, sampler), one row per seed: the training data the metric compared
    the samples with (the cell's saved `data`: points of the training set, e.g. the jittered dino,
    not its base points), then one panel per loss, all on the data's axes (figure3_grid)."""
    written = []
    groups: dict = {}
    for it in items:
        groups.setdefault((it["dataset"], it["sampler"]), []).append(it)
    for (ds, sampler), group in groups.items():
        grid = figure3_grid(group)
        is_image = group[0]["samples"].ndim == 4
        lims = None
        if not is_image:              # the data's frame (samples far outside it are off the panel)
            arrays = [it["data"] for it in group if "data" in it] or [it["samples"] for it in group]
            lo, hi = np.percentile(np.concatenate([a.reshape(a.shape[0], -1) for a in arrays]), [0, 100])
            pad = 0.25 * (hi - lo) + 1e-6
            lims = (float(lo - pad), float(hi + pad))
        fig, axes = new_figure(len(grid[0]), len(grid))
        for r, row in enumerate(grid):
            for q, (title, arr) in enumerate(row):
                if arr is None:
                    axes[r, q].axis("off")
                    axes[r, q].set_title(plot_text(title), fontsize=8)
                else:
                    _panel(axes[r, q], arr, title, is_image, lims)
        fig.suptitle(plot_text(f"{ds}: samples of {sampler} per loss (columns) and seed (rows), beside the training data"),
                     fontsize=10)
        prefix = "samples_grid" if is_image else "figure3_samples"
        written.append(save(fig, out / f"{prefix}_{safe_name(ds)}_{safe_name(sampler)}.png",
                            f"Figure 3 · {ds}: samples of {sampler} beside the training data",
                            "One row per seed. First panel of a row: the training data that the metric "
                            "compared the samples with (drawn from the training distribution, jitter included "
                            "where the dataset jitters); then one panel per loss on the same axes."))
    return written


def _panel(ax, arr: np.ndarray, title: str, is_image: bool, lims) -> None:
    if is_image:
        ax.imshow(image_grid(arr), cmap="gray")
        ax.axis("off")
        ax.set_title(plot_text(title), fontsize=8)
    else:
        _points_panel(ax, arr, title, lims)


# ---------------------------------------------------------------- Figure 4: quality per parallel iteration
def iteration_stats(curve: pd.DataFrame, converged: dict | None = None) -> pd.DataFrame:
    """Per iteration x of one series (curve rows of several runs, one run per `cell`): mean, std
    (ddof 1; 0 for one run), n (runs with a value at x) and carried (of those, runs past their last
    iteration). A converged run's samples no longer change, so its last value is carried forward
    to the longest run's last iteration; a run that stopped without converging (`converged[cell]`
    false) is not carried and leaves n instead."""
    c = curve.drop_duplicates(["cell", "x"], keep="last")
    wide = c.pivot(index="x", columns="cell", values="value").sort_index().astype(float)
    observed = wide.notna()
    until_last = observed.astype(int).iloc[::-1].cummax().iloc[::-1].astype(bool)     # at or before the last value
    filled = wide.ffill()
    after = ~until_last
    for cell in wide.columns:
        if converged is not None and not converged.get(cell, True):
            filled.loc[after[cell], cell] = np.nan
    n = filled.notna().sum(axis=1)
    return pd.DataFrame({"x": wide.index.to_numpy(), "mean": filled.mean(axis=1).to_numpy(),
                         "std": filled.std(axis=1, ddof=1).fillna(0.0).to_numpy(), "n": n.to_numpy(),
                         "carried": (after & filled.notna()).sum(axis=1).to_numpy()})


def series_label(name: str, stats: pd.DataFrame) -> str:
    """Legend text of one Figure 4 line: its runs (n, or its range where runs that stopped without
    converging drop out) and whether converged runs are carried forward."""
    lo, hi = int(stats["n"].min()), int(stats["n"].max())
    runs = f"n={hi}" if lo == hi else f"n={hi} to {lo}"
    note = "; converged runs carried forward (dashed)" if (stats["carried"] > 0).any() else ""
    return f"{name} ({runs} runs{note})"


def _converged(records: pd.DataFrame | None) -> dict | None:
    if records is None or "metric" not in records.columns or not (records["metric"] == "converged").any():
        return None
    rows = records[records["metric"] == "converged"].drop_duplicates("cell")
    return {c: bool(v) for c, v in zip(rows["cell"], pd.to_numeric(rows["value"], errors="coerce").fillna(0) > 0)}


def identity_columns(records: pd.DataFrame, with_metric: bool = True) -> list[str]:
    """The record columns that name a cell apart from its sampler: suite and version, dataset,
    model, loss, seed and every p_* parameter (training step and settings included) except the
    sampler's (p_sampler_*), the environment's (p_env_*) and, unless with_metric, the metric's."""
    return [c for c in records.columns
            if c in ("suite", "suite_version", "dataset", "model", "loss", "seed")
            or (str(c).startswith("p_") and not str(c).startswith(("p_sampler_", "p_env_"))
                and (with_metric or not str(c).startswith("p_metric_")))]


def _matches(column: pd.Series, value) -> pd.Series:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return column.isna()
    return column == value


def twin_final(records: pd.DataFrame | None, cells, metric: str) -> tuple[str, float, int] | None:
    """(sampler label, mean, n) of `metric` of the sequential twins (SamplerSpec.fixed_point) of
    the parallel cells `cells`: for each cell, the record of its twin sampler with the same
    identity but the sampler (identity_columns: suite, training step and settings, seed, metric
    parameters...), so the mean is over exactly the trainings and seeds of `cells` (n of them);
    None without any."""
    if records is None or not len(cells) or "metric" not in records.columns:
        return None
    of_metric = records[records["metric"] == metric]
    values, label = [], None
    for cell in dict.fromkeys(cells):
        own = of_metric[of_metric["cell"] == cell]
        mine = own if len(own) else records[records["cell"] == cell]
        if mine.empty:
            continue
        ref = mine.iloc[0]
        twin = sequential_twin(ref)
        if twin is None:
            continue
        cand = of_metric[of_metric["sampler"].map(sampler_name) == twin[0]]
        for col in identity_columns(records, with_metric=len(own) > 0):
            cand = cand[_matches(cand[col], ref[col])]
        cand = cand[[is_sampler(r, *twin) for _, r in cand.iterrows()]] if len(cand) else cand
        found = pd.to_numeric(cand["value"], errors="coerce").dropna() if len(cand) else cand
        if len(found):
            values.append(float(found.mean()))
            label = label or str(cand["sampler"].iloc[0])
    if not values:
        return None
    return label, float(np.mean(values)), len(values)


NULL_DRAWS = 200            # permutation-null draws per Figure 4 panel, spread over its runs


def noise_band(items: list[dict] | None, curve: pd.DataFrame, metric: str) -> tuple[float, float, int, int] | None:
    """(low, high, m, n): the central 95% of the curve's metric between two sets of one law at the
    curve's sample counts (m samples, n reference points), from the permutation nulls of its runs'
    saved final samples and reference (report/noise_floor.py, NULL_DRAWS in all, seeded); None
    without saved samples or a metric that can be rebuilt from the curve's settings."""
    from .noise_floor import curve_metric, permutation_null

    mine = sorted((it for it in items or () if it["cell"] in set(curve["cell"]) and "data" in it),
                  key=lambda it: it["order"])
    statistic = curve_metric(metric, curve) if mine else None
    if statistic is None:
        return None
    import torch

    counts = curve["p_metric_n_samples"].dropna().unique() if "p_metric_n_samples" in curve.columns else []
    generator = torch.Generator().manual_seed(0)
    draws, sizes = [], set()
    for it in mine:
        x, y = torch.as_tensor(it["samples"]), torch.as_tensor(it["data"])
        x = x[: int(counts[0])] if len(counts) == 1 else x
        sizes.add((x.shape[0], y.shape[0]))
        draws.append(permutation_null(statistic, x, y, -(-NULL_DRAWS // len(mine)), generator))
    low, high = np.quantile(torch.cat(draws).numpy(), [0.025, 0.975])
    m, n = min(sizes)
    return float(low), float(high), m, n


def figure4_curves(curves: pd.DataFrame, out: Path, records: pd.DataFrame | None = None,
                   panel: str = "sampler", line: str = "loss", items: list[dict] | None = None) -> list[Path]:
    """Figure 4: per quality metric with a per-iteration curve and (dataset, parallel sampler), the
    metric against the sampler's iterations, one line per loss (mean ± std over seeds; converged
    runs carried forward, dashed where any is), and dotted the final value of the same runs'
    sequential twins (twin_final). The axis is symlog, linear within the noise floor, so values
    at or below 0 (the unbiased MMD^2 can be negative) stay on it; for MMD^2 with saved samples
    (items, load_samples) the noise floor is drawn as a grey band (noise_band).
    panel="loss", line="sampler": the same curves per (dataset, loss), one line per parallel
    sampler (figure4_samplers)."""
    if curves.empty or "metric" not in curves.columns:
        return []
    from .tables import with_train_labels

    curves = with_train_labels(curves)
    written = []
    converged = _converged(records)
    for metric in [m for m in dict.fromkeys(curves["metric"]) if figure(m).quality]:
        c = curves[curves["metric"] == metric]
        label = math_label(figure(metric).label)
        for (ds, panel_value), g in c.groupby(["dataset", panel], sort=False):
            if line == "sampler" and g["sampler"].nunique() < 2:
                continue
            fig, axes = new_figure(1)
            fig.set_size_inches(*CURVE_SIZE)                         # the legend beside the plot
            ax = axes[0, 0]
            several_models = g["model"].nunique() > 1 if "model" in g.columns else False
            keys = (["model"] if several_models else []) + (["train"] if g["train"].nunique() > 1 else []) + [line]
            for i, (key, lg) in enumerate(g.groupby(keys, sort=False)):
                name = " · ".join(map(str, key if isinstance(key, tuple) else (key,)))
                t = iteration_stats(lg, converged)
                x, m, s = t["x"].to_numpy(), t["mean"].to_numpy(), t["std"].to_numpy()
                carried = t["carried"].to_numpy() > 0
                solid = ~carried | np.r_[carried[1:] & ~carried[:-1], False]     # up to where carrying starts
                ax.plot(x[solid], m[solid], color=f"C{i}", label=plot_text(series_label(name, t)))
                if carried.any():
                    start = max(int(np.argmax(carried)) - 1, 0)
                    ax.plot(x[start:], m[start:], color=f"C{i}", ls="--")
                ax.fill_between(x, m - s, m + s, color=f"C{i}", alpha=0.2)
                twin = twin_final(records, lg["cell"].unique(), metric)
                if twin is not None:
                    tw_label, tw_mean, tw_n = twin
                    ax.axhline(tw_mean, color=f"C{i}", ls=":", lw=1.0,
                               label=plot_text(f"{name}: {tw_label}, sequential twin, same runs (n={tw_n})"))
            thr = g.get("p_metric_threshold")
            if thr is not None and thr.notna().any():
                ax.axhline(float(thr.dropna().iloc[0]), color="k", ls="--", lw=0.8, label="threshold")
            band = noise_band(items, g, metric)
            if band is not None:
                ax.axhspan(band[0], band[1], color="0.6", alpha=0.35, lw=0, zorder=0,
                           label=f"noise floor: 95% of {label} between two sets of one law (m={band[2]}, n={band[3]})")
            ax.axhline(0.0, color="0.4", lw=0.6)
            ax.set_yscale("symlog", linthresh=_linear_range(g, band), linscale=1.0)
            what = sampler_name(panel_value) if panel == "sampler" else "parallel sampler"
            ax.set_xlabel(plot_text(f"{what} iteration (pass)"))
            ax.set_ylabel(f"{label} (mean ± std over seeds)")
            ax.set_title(plot_text(f"{ds} · {panel_value}"), fontsize=9)
            outside_legend(fig, ax)
            stem = "figure4" if panel == "sampler" else "figure4_samplers"
            written.append(save(
                fig, out / f"{stem}_{safe_name(metric)}_vs_iteration_{safe_name(ds)}_{safe_name(panel_value)}.png",
                f"Figure 4 · {ds}: {figure(metric).label} per iteration of "
                + (f"{panel_value}" if panel == "sampler" else f"each parallel sampler, {panel_value} model"),
                "Mean ± std over seeds per loss. A run that converged before the longest run keeps its final "
                "value (its samples no longer change): the line is dashed where such values are carried "
                "forward. Dotted: the final value of the sequential sampler this one converges to, on the same "
                "trainings and seeds. Symlog axis, linear near 0 (values at or below 0 stay visible). Grey "
                "band, where drawn: the noise floor, the central 95% of the statistic between two sets of one "
                "law at these sample counts (permutations of each run's final samples with its reference); "
                "values inside it cannot be told from 0 or from each other."))
    return written


figure4_mmd_curves = figure4_curves          # the former name


def _linear_range(curve: pd.DataFrame, band: tuple | None) -> float:
    """The symlog axis's linear range around 0: up to the noise band's edge, else a thousandth of
    the curve's largest |value| (a positive number in any case)."""
    if band is not None and max(abs(band[0]), abs(band[1])) > 0:
        return max(abs(band[0]), abs(band[1]))
    top = float(pd.to_numeric(curve["value"], errors="coerce").abs().max())
    return top * 1e-3 if np.isfinite(top) and top > 0 else 1.0


def figure4_samplers(curves: pd.DataFrame, out: Path, records: pd.DataFrame | None = None,
                     items: list[dict] | None = None) -> list[Path]:
    """Figure 4 by sampler: per (dataset, loss) with two or more parallel samplers, one line each."""
    return figure4_curves(curves, out, records, panel="loss", line="sampler", items=items)


def figure7_training_length(records: pd.DataFrame, out: Path) -> list[Path]:
    """Quality and passes against training length (train.snapshots: p_train_step), per (dataset,
    sampler), one line per loss (mean ± std over seeds)."""
    if "p_train_step" not in records.columns or records["p_train_step"].dropna().nunique() < 2:
        return []
    q = _quality_metric(records)
    written = []
    for (ds, sampler), g in records[records["p_train_step"].notna()].groupby(["dataset", "sampler"], sort=False):
        metrics = [m for m in (q, "iterations") if m is not None and (g["metric"] == m).any()]
        if "iterations" in metrics and pd.to_numeric(g[g["metric"] == "iterations"]["value"]).nunique() < 2:
            metrics.remove("iterations")             # a sequential sampler: always its steps
        if not metrics:
            continue
        fig, axes = new_figure(len(metrics))
        for ax, m in zip(axes[0], metrics):
            t = g[g["metric"] == m].assign(value=lambda d: pd.to_numeric(d["value"], errors="coerce"))
            t = t.groupby(["loss", "p_train_step"], sort=False).agg(mean=("value", "mean"), std=("value", "std"),
                                                                     n=("value", "count")).reset_index()
            for i, (loss, lg) in enumerate(t.groupby("loss", sort=False)):
                lg = lg.sort_values("p_train_step")
                ax.errorbar(lg["p_train_step"], lg["mean"], yerr=lg["std"].fillna(0), marker="o", ms=3, capsize=2,
                            color=f"C{i}", label=plot_text(f"{loss} (n={int(lg['n'].min())}-{int(lg['n'].max())})"))
            ax.set_xlabel("training steps")
            ax.set_ylabel(f"{math_label(figure(m).label)} (mean ± std)")
            ax.set_title(plot_text(f"{ds} · {sampler}"), fontsize=9)
        outside_legend(fig, axes[0, 0])
        written.append(save(fig, out / f"figure7_training_length_{safe_name(ds)}_{safe_name(sampler)}.png",
                            f"Training length · {ds}: quality and passes of {sampler} against training steps",
                            "Snapshots of one training per (loss, seed): mean ± std over seeds, one line per loss."))
    return written


# ---------------------------------------------------------------- Figures 5 and 6: quality sweeps
def _quality_metric(records: pd.DataFrame) -> str | None:
    """The headline quality figure among the records' metrics (lowest declared headline rank)."""
    ranked = [(figure(m).headline, m) for m in dict.fromkeys(records["metric"]) if figure(m).headline is not None]
    return min(ranked)[1] if ranked else None


def _sweep_plot(table: pd.DataFrame, xcol: str, series: list[str], xlabel: str, q: str, title: str, path: Path,
                caption: str = ""):
    fig, axes = new_figure(1)
    ax = axes[0, 0]
    for i, (key, g) in enumerate(table.groupby(series, sort=False)):
        g = g.sort_values(xcol)
        label = " · ".join(map(str, key if isinstance(key, tuple) else (key,)))
        ax.errorbar(g[xcol], g["mean"], yerr=g["std"].fillna(0), marker="o", ms=3, capsize=2, color=f"C{i % 10}",
                    label=plot_text(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{math_label(figure(q).label)} (mean ± std)")
    ax.set_title(plot_text(title), fontsize=9)
    outside_legend(fig, ax)
    return save(fig, path, f"{caption}: {title}" if caption else title,
                "Mean ± std over seeds; one line per loss, sampler and further settings.")


def _series(records: pd.DataFrame, rows: pd.DataFrame, swept: str) -> pd.Series:
    """Series label per row: loss · sampler name plus every sampler parameter that varies in the
    records, except the swept one (and chunk_size), so that one line sweeps one parameter."""
    cols = [c for c in records.columns if c.startswith("p_sampler_") and c.lower() not in (swept.lower(), "p_sampler_chunk_size")
            and records[c].astype(str).nunique() > 1]
    label = rows["loss"].astype(str) + " · " + rows["sampler"].astype(str).str.split("[").str[0]
    for c in cols:
        label = label + ", " + c.removeprefix("p_sampler_") + "=" + rows[c].astype(str)
    return label


def figure5_quality_vs_nfe(records: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 5: quality against NFE, one line per (loss, sampler, other settings) over its steps."""
    q = _quality_metric(records)
    if q is None:
        return []
    nfe = records[records["metric"] == "nfe"][["cell", "value"]].rename(columns={"value": "nfe"})
    qual = records[records["metric"] == q].merge(nfe, on="cell")
    if qual.empty:
        return []
    qual = qual.assign(series=_series(records, qual, "p_sampler_steps"), value=pd.to_numeric(qual["value"]),
                       nfe=pd.to_numeric(qual["nfe"]))
    written = []
    for ds, g in qual.groupby("dataset", sort=False):
        t = g.groupby(["series", "sampler"], sort=False).agg(
            mean=("value", "mean"), std=("value", "std"), nfe=("nfe", "mean")).reset_index()
        t = t[t.groupby("series")["nfe"].transform("nunique") >= 2]
        if t.empty:
            continue
        written.append(_sweep_plot(t, "nfe", ["series"], "denoiser evaluations (NFE)", q,
                                   f"{ds}: quality vs NFE", out / f"figure5_quality_vs_nfe_{safe_name(ds)}.png",
                                   f"Figure 5 · {figure(q).label}"))
    return written


def _churn_column(records: pd.DataFrame) -> str | None:
    return next((c for c in records.columns if c.lower() == "p_sampler_s_churn"), None)


def figure6_quality_vs_churn(records: pd.DataFrame, out: Path) -> list[Path]:
    """Figure 6: quality against S_churn, one line per (loss, S_noise, other settings)."""
    q, col = _quality_metric(records), _churn_column(records)
    if q is None or col is None:
        return []
    qual = records[(records["metric"] == q) & records[col].notna()]
    if qual[col].nunique() < 2:
        return []
    qual = qual.assign(series=_series(records, qual, col), value=pd.to_numeric(qual["value"]),
                       churn=pd.to_numeric(qual[col]))
    written = []
    for ds, g in qual.groupby("dataset", sort=False):
        t = g.groupby(["series", "churn"], sort=False).agg(mean=("value", "mean"), std=("value", "std")).reset_index()
        t = t[t.groupby("series")["churn"].transform("nunique") >= 2]
        if t.empty:
            continue
        written.append(_sweep_plot(t, "churn", ["series"], "S_churn", q, f"{ds}: quality vs S_churn",
                                   out / f"figure6_quality_vs_schurn_{safe_name(ds)}.png",
                                   f"Figure 6 · {figure(q).label}"))
    return written


# ---------------------------------------------------------------- Figure 1: score-error heat map
def carry_forward(paths: np.ndarray) -> np.ndarray:
    """Picard iterate i only evaluates its window; steps outside it keep their previous value
    (frozen after convergence), so fill NaN from iteration i - 1. paths [iters, T, k]."""
    out = paths.copy()
    for i in range(1, out.shape[0]):
        out[i] = np.where(np.isnan(out[i]), out[i - 1], out[i])
    return out


def _iterations_to_draw(k: int, most: int = 6) -> list[int]:
    """Picard iterations shown: 1, 2, 4, 8, ... and the last (0-based indices)."""
    picks = sorted({min(2 ** i, k) - 1 for i in range(most)} | {k - 1})
    return picks


def _heatmap_panel(ax, it: dict, sequential: dict | None, vmin: float, vmax: float, n_paths: int = 3):
    t, z, grid = it["score_error.t"], it["score_error.z"], it["score_error.grid"]
    mesh = ax.pcolormesh(t, z, np.log10(np.maximum(grid.T, 1e-6)), shading="auto", cmap="magma",
                         vmin=vmin, vmax=vmax, rasterized=True)
    ax.contour(t, z, it["score_error.inside"].T.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    paths = it.get("score_error.paths")
    steps = np.arange(1000)
    if paths is not None and paths.shape[0]:
        paths = carry_forward(paths)
        picks = _iterations_to_draw(paths.shape[0])
        colors = plt.cm.cool(np.linspace(0, 1, len(picks)))
        for c, i in zip(colors, picks):                     # Picard iterate i of the first n_paths paths
            ax.plot(steps, paths[i, :, :n_paths], color="white" if i == picks[-1] else c, lw=0.8 if i == picks[-1] else 0.6)
    if sequential is not None and sequential.get("score_error.paths") is not None:
        sp = sequential["score_error.paths"]
        if sp.shape[0]:
            ax.plot(steps, sp[-1, :, :n_paths], color="lime", lw=0.8, ls="--")
    ax.set_xlim(t.max(), t.min())                           # sampling runs left (t = T) to right (t = 0)
    ax.set_ylim(z.min(), z.max())
    ax.set_xlabel("t (DDPM step)")
    ax.set_ylabel("z")
    return mesh


def figure1_pairs(group: list[dict]) -> dict:
    """loss -> (the cell drawn: a parallel sampler's where there is one, the cell of its sequential
    twin (SamplerSpec.fixed_point) or None), for the items of one dataset and seed."""
    pick = {}
    for loss in dict.fromkeys(it["loss"] for it in group):
        cand = [it for it in group if it["loss"] == loss]
        par = [it for it in cand if is_parallel(it["sampler"])]
        twin = sequential_twin(par[0]) if par else None
        seq = [it for it in cand if twin is not None and is_sampler(it, *twin)]
        pick[loss] = (par or cand)[0], (seq[0] if seq else None)
    return pick


def figure1_score_error(items: list[dict], out: Path) -> list[Path]:
    """Figure 1: per dataset, one heat map per loss (a parallel sampler's cell, lowest seed); its
    iterates 1, 2, 4, ... coloured by iteration (the last in white), the paths of its sequential twin
    (SamplerSpec.fixed_point: same grid, x_T and noise) dashed green, the high-density region
    outlined in cyan."""
    have = [it for it in items if "score_error.grid" in it]
    if not have:
        return []
    written = []
    for ds in dict.fromkeys(it["dataset"] for it in have):
        group = _first_seed([it for it in have if it["dataset"] == ds])
        pick = figure1_pairs(group)
        losses = list(pick)
        logs = np.concatenate([np.log10(np.maximum(p["score_error.grid"].ravel(), 1e-6)) for p, _ in pick.values()])
        vmin, vmax = np.percentile(logs, [1, 99.5])
        fig, axes = new_figure(len(losses))
        fig.set_size_inches(max(PANEL[0] * 1.4 * len(losses), MIN_WIDTH), PANEL[1] * 1.2)
        mesh = None
        for ax, loss in zip(axes[0], losses):
            it, seq = pick[loss]
            mesh = _heatmap_panel(ax, it, seq, vmin, vmax)
            ax.set_title(plot_text(f"{loss} · {it['sampler']} · seed {it['seed']}"), fontsize=9)
        fig.colorbar(mesh, ax=axes[0].tolist(), label="log10 |score error|")
        written.append(save(fig, out / f"figure1_score_error_{safe_name(ds)}.png",
                            f"Figure 1 · {ds}: score error over (t, z) with the sampler's paths",
                            "Heat map: log10 |model score - exact score|; cyan: the high-density region; "
                            "coloured: iterates 1, 2, 4, ... of the parallel sampler (last in white); "
                            "dashed green: its sequential twin's paths from the same x_T and noise."))
    return written


# ---------------------------------------------------------------- all
def write_all(run_dirs, records: pd.DataFrame, curves: pd.DataFrame, out: str | Path) -> list[Path]:
    """Every figure the records support, written under out; returns the PNG paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = load_samples(run_dirs, records)
    written = []
    written += figure1_score_error(items, out)
    written += figure3_samples(items, out)
    written += figure4_curves(curves, out, records, items=items)
    written += figure4_samplers(curves, out, records, items=items)
    written += figure7_training_length(records, out)
    written += figure5_quality_vs_nfe(records, out)
    written += figure6_quality_vs_churn(records, out)
    return written
