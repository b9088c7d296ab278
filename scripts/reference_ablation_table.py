"""The ablation from the CDL reference code's settings to cdlbench's defaults on Dino (README,
"Fidelity to the reference code"), as a markdown table from the committed runs:

    python scripts/reference_ablation_table.py [results/parallel-reference results/parallel-reference-ema
                                                results/parallel-reference-defaults]

Each step turns one of cdlbench's deviations on, cumulatively (docs/method.md section 7). A row
is (step, loss); every number is mean +- std over seeds of the Picard cells (tolerance 0.1, full
window), the MMD measured as the reference code measures it (fresh data, 8000 points, `<=`).
A step that does not touch a loss (shared points: DDPM loss; reduction: CDL) repeats its row.
"""
from __future__ import annotations

import argparse
import math

import pandas as pd

from cdlbench.report.tables import load

RUNS = ["results/parallel-reference", "results/parallel-reference-ema", "results/parallel-reference-defaults"]

# (step, {loss name: (suite, model name, batches, loss label)}) in ablation order
STEPS = [
    ("reference settings", {"ddpm": ("parallel-reference", "mlp-discrete", None, "ddpm[reduction=sum]"),
                            "cdl": ("parallel-reference", "mlp-discrete", None, "cdl[shared_points=False]")}),
    ("+ EMA 0.999", {"ddpm": ("parallel-reference-ema", "mlp-discrete", None, "ddpm[reduction=sum]"),
                     "cdl": ("parallel-reference-ema", "mlp-discrete", None, "cdl[shared_points=False]")}),
    ("+ residual mlp", {"ddpm": ("parallel-reference-ema", "mlp", None, "ddpm[reduction=sum]"),
                        "cdl": ("parallel-reference-ema", "mlp", None, "cdl[shared_points=False]")}),
    ("+ shared CDL points", {"ddpm": ("parallel-reference-ema", "mlp", None, "ddpm[reduction=sum]"),
                             "cdl": ("parallel-reference-defaults", "mlp", "sequential", "cdl")}),
    ("+ mean DDPM loss", {"ddpm": ("parallel-reference-defaults", "mlp", "sequential", "ddpm"),
                          "cdl": ("parallel-reference-defaults", "mlp", "sequential", "cdl")}),
    ("+ random batches (= parallel.yaml's training)", {"ddpm": ("parallel-reference-defaults", "mlp", "random", "ddpm"),
                                                       "cdl": ("parallel-reference-defaults", "mlp", "random", "cdl")}),
]
FIGURES = [("mmd", "MMD² (fresh, 8000)"), ("iterations", "Picard passes"), ("nfe", "evaluations"),
           ("mmd_iters_to_threshold", "pass with MMD² <= 2e-3")]


def cell_values(df: pd.DataFrame, suite: str, model: str, batches: str | None, loss: str, metric: str) -> pd.Series:
    sel = ((df["suite"] == suite) & (df["model"].str.split("[").str[0] == model) & (df["loss"] == loss)
           & (df["sampler"].str.startswith("picard")) & (df["metric"] == metric))
    if batches is not None:
        col = df["p_train_batches"] if "p_train_batches" in df.columns else pd.Series(None, index=df.index)
        sel &= col.fillna("random") == batches
    return pd.to_numeric(df.loc[sel, "value"], errors="coerce")


def show(values: pd.Series, metric: str) -> str:
    reached = values.dropna()
    if values.empty:
        return "not run"
    if reached.empty:
        return f"never (0/{len(values)})"
    std = reached.std(ddof=1) if len(reached) > 1 else 0.0
    digits = {"mmd": lambda v: f"{v:.5f}", "fid": lambda v: f"{v:.3f}", "nfe": lambda v: f"{v:,.0f}"}.get(
        metric, lambda v: f"{v:.1f}")
    text = f"{digits(reached.mean())} ± {digits(std) if not math.isnan(std) else '-'}"
    return text + (f" ({len(reached)}/{len(values)})" if len(reached) < len(values) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", default=RUNS)
    df = load(ap.parse_args().runs)
    print("| step | loss | " + " | ".join(label for _, label in FIGURES) + " |")
    print("|---|---|" + "---|" * len(FIGURES))
    for step, losses in STEPS:
        for loss, (suite, model, batches, label) in losses.items():
            cells = [show(cell_values(df, suite, model, batches, label, m), m) for m, _ in FIGURES]
            print(f"| {step} | {loss} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
