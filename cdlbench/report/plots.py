"""The paper's figures as PNGs (matplotlib, headless Agg backend), drawn from a run directory.

- figure1_*: |model score - exact score| heat map over (t, z) with Picard iterates on top (Figure 1);
- figure3_*: final samples beside the data, one panel per loss (Figure 3); image data: sample grids;
- figure4_*: MMD against Picard iteration per loss, mean ± std over seeds (Figure 4);
- figure5_*: quality (FID, else MMD) against denoiser evaluations (Figure 5), when NFE varies;
- figure6_*: quality against S_churn (Figure 6), when the records hold an S_churn sweep.
Every figure has a fixed size (PANEL inches per panel at DPI), so tests can check the PNG size.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
PANEL = (3.6, 3.2)          # inches per panel (width, height)
QUALITY = ("fid", "mmd")    # preferred quality metric, first present wins


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_")


def new_figure(ncols: int, nrows: int = 1):
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols, PANEL[1] * nrows), dpi=DPI,
                             squeeze=False, layout="constrained")
    return fig, axes


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)          # no bbox_inches="tight": the size stays PANEL * panels * DPI
    plt.close(fig)
    return path


# ---------------------------------------------------------------- saved samples
def load_samples(run_dirs, records: pd.DataFrame) -> list[dict]:
    """Every RUN_DIR/samples/*.npz as a dict with its cell's dataset, model, loss, sampler, seed."""
    ident = records.drop_duplicates("cell").set_index("cell") if "cell" in records.columns else None
    order = {c: i for i, c in enumerate(ident.index)} if ident is not None else {}
    out = []
    for d in run_dirs:
        for f in sorted((Path(d) / "samples").glob("*.npz")):
            if f.name.endswith(".tmp.npz"):
                continue
            with np.load(f) as z:
                blob = {k: z[k] for k in z.files}
            cell = str(blob.get("cell", ""))
            if ident is None or cell not in ident.index:
                continue
            r = ident.loc[cell]
            out.append({**blob, "cell": cell, "order": order[cell],
                        **{k: r[k] for k in ("dataset", "model", "loss", "sampler", "seed")}})
    return out


def _first_seed(items: list[dict]) -> list[dict]:
    """Items of the lowest seed, in the order of the records (the suite's order of losses)."""
    seed = min(int(it["seed"]) for it in items)
    return sorted((it for it in items if int(it["seed"]) == seed), key=lambda it: it["order"])


def _points_panel(ax, pts: np.ndarray, title: str, lims=None) -> None:
    pts = pts.reshape(pts.shape[0], -1)
    if pts.shape[1] == 1:                                    # 1-D: histogram
        ax.hist(pts[:, 0], bins=80, range=lims, density=True, color="C0")
    else:                                                    # 2-D (first two coordinates)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        if lims is not None:
            ax.set_xlim(*lims)
            ax.set_ylim(*lims)
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


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


def figure3_samples(items: list[dict], out: Path) -> list[Path]:
    """Figure 3: per (dataset, sampler), the data then one panel per loss (lowest seed)."""
    written = []
    groups: dict = {}
    for it in items:
        groups.setdefault((it["dataset"], it["sampler"]), []).append(it)
    for (ds, sampler), group in groups.items():
        group = _first_seed(group)
        is_image = group[0]["samples"].ndim == 4
        panels = ([("data", group[0]["data"])] if "data" in group[0] else []) + \
                 [(f"{it['loss']} ({it['model']})" if len({g['model'] for g in group}) > 1 else it["loss"], it["samples"])
                  for it in group]
        fig, axes = new_figure(len(panels))
        if not is_image:              # the data's frame (samples far outside it are off the panel)
            base = (group[0]["data"] if "data" in group[0] else np.concatenate([p for _, p in panels]))
            lo, hi = np.percentile(base.reshape(base.shape[0], -1), [0, 100])
            pad = 0.25 * (hi - lo) + 1e-6
            lims = (float(lo - pad), float(hi + pad))
        for ax, (title, pts) in zip(axes[0], panels):
            if is_image:
                ax.imshow(image_grid(pts), cmap="gray")
                ax.axis("off")
                ax.set_title(title, fontsize=9)
            else:
                _points_panel(ax, pts, title, lims)
        fig.suptitle(f"{ds} · {sampler} · seed {group[0]['seed']}", fontsize=10)
        prefix = "samples_grid" if is_image else "figure3_samples"
        written.append(save(fig, out / f"{prefix}_{safe_name(ds)}_{safe_name(sampler)}.png"))
    return written


# ---------------------------------------------------------------- Figure 4: MMD per Picard iteration
def figure4_mmd_curves(curves: pd.DataFrame, out: Path, metric: str = "mmd") -> list[Path]:
    if curves.empty or "metric" not in curves.columns or not (curves["metric"] == metric).any():
        return []
    c = curves[curves["metric"] == metric]
    written = []
    for (ds, sampler), g in c.groupby(["dataset", "sampler"], sort=False):
        fig, axes = new_figure(1)
        ax = axes[0, 0]
        for i, (loss, lg) in enumerate(g.groupby("loss", sort=False)):
            stats = lg.groupby("x")["value"].agg(["mean", "std", "count"]).sort_index()
            x, m, s = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["std"].fillna(0).to_numpy()
            ax.plot(x, m, color=f"C{i}", label=f"{loss} (n={lg['seed'].nunique()})")
            ax.fill_between(x, np.clip(m - s, 1e-12, None), m + s, color=f"C{i}", alpha=0.2)
        thr = g.get("p_metric_threshold")
        if thr is not None and thr.notna().any():
            ax.axhline(float(thr.dropna().iloc[0]), color="k", ls="--", lw=0.8, label="threshold")
        ax.set_yscale("log")
        ax.set_xlabel("Picard iteration")
        ax.set_ylabel("MMD$^2$ (mean ± std over seeds)")
        ax.set_title(f"{ds} · {sampler}", fontsize=9)
        ax.legend(fontsize=8)
        written.append(save(fig, out / f"figure4_mmd_vs_iteration_{safe_name(ds)}_{safe_name(sampler)}.png"))
    return written


# ---------------------------------------------------------------- Figures 5 and 6: quality sweeps
def _quality_metric(records: pd.DataFrame) -> str | None:
    return next((m for m in QUALITY if (records["metric"] == m).any()), None)


def _sweep_plot(table: pd.DataFrame, xcol: str, series: list[str], xlabel: str, q: str, title: str, path: Path):
    fig, axes = new_figure(1)
    ax = axes[0, 0]
    for i, (key, g) in enumerate(table.groupby(series, sort=False)):
        g = g.sort_values(xcol)
        label = " · ".join(map(str, key if isinstance(key, tuple) else (key,)))
        ax.errorbar(g[xcol], g["mean"], yerr=g["std"].fillna(0), marker="o", ms=3, capsize=2, color=f"C{i % 10}",
                    label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{q.upper() if q == 'fid' else 'MMD$^2$'} (mean ± std)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


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
                                   f"{ds}: quality vs NFE", out / f"figure5_quality_vs_nfe_{safe_name(ds)}.png"))
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
                                   out / f"figure6_quality_vs_schurn_{safe_name(ds)}.png"))
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


def figure1_score_error(items: list[dict], out: Path) -> list[Path]:
    """Figure 1: per dataset, one heat map per loss (Picard cell, lowest seed); Picard iterates
    1, 2, 4, ... coloured by iteration (the last in white), the sequential paths dashed green (same
    x_T and noise), the high-density region outlined in cyan."""
    have = [it for it in items if "score_error.grid" in it]
    if not have:
        return []
    written = []
    for ds in dict.fromkeys(it["dataset"] for it in have):
        group = _first_seed([it for it in have if it["dataset"] == ds])
        losses = list(dict.fromkeys(it["loss"] for it in group))
        pick = {}
        for loss in losses:
            cand = [it for it in group if it["loss"] == loss]
            par = [it for it in cand if str(it["sampler"]).startswith("picard")]
            seq = [it for it in cand if str(it["sampler"]).startswith("ddpm")]
            pick[loss] = (par or cand)[0], (seq[0] if seq and par else None)
        logs = np.concatenate([np.log10(np.maximum(p["score_error.grid"].ravel(), 1e-6)) for p, _ in pick.values()])
        vmin, vmax = np.percentile(logs, [1, 99.5])
        fig, axes = new_figure(len(losses))
        fig.set_size_inches(PANEL[0] * 1.4 * len(losses), PANEL[1] * 1.2)
        mesh = None
        for ax, loss in zip(axes[0], losses):
            it, seq = pick[loss]
            mesh = _heatmap_panel(ax, it, seq, vmin, vmax)
            ax.set_title(f"{loss} · {it['sampler']} · seed {it['seed']}", fontsize=9)
        fig.colorbar(mesh, ax=axes[0].tolist(), label="log10 |score error|")
        written.append(save(fig, out / f"figure1_score_error_{safe_name(ds)}.png"))
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
    written += figure4_mmd_curves(curves, out)
    written += figure5_quality_vs_nfe(records, out)
    written += figure6_quality_vs_churn(records, out)
    return written
