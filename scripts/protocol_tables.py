"""README's tables of the paper's protocol at CPU scale (issue: the paper's regime), from the
committed runs: training length (results/dino-length: snapshots at 20k, 50k, 100k steps),
fine-tuning (results/dino-finetune, results/digits-finetune).

    python scripts/protocol_tables.py length   [results/dino-length]
    python scripts/protocol_tables.py finetune [results/dino-finetune]
    python scripts/protocol_tables.py digits   [results/digits-finetune]

Every number is mean ± std over seeds (and how many seeds reached a threshold where not all did).
"""
from __future__ import annotations

import argparse

import pandas as pd

from cdlbench.report.tables import load
from reference_ablation_table import show   # scripts/ is on sys.path when a script runs

DINO = [("picard", "mmd", "Picard MMD²"), ("picard", "iterations", "Picard passes"),
        ("picard", "mmd_iters_to_threshold", "pass with MMD² < 2e-3"), ("ddpm", "mmd", "sequential DDPM MMD²")]
DIGITS = [(sampler, metric, f"{label} {metric.upper()}") for sampler, label in
          (("picard", "Picard"), ("heun", "Heun 18"), ("ddpm", "DDPM 100")) for metric in ("fid", "kid")] + \
         [("picard", "iterations", "Picard passes")]
TABLES = {"length": ("results/dino-length", DINO), "finetune": ("results/dino-finetune", DINO),
          "digits": ("results/digits-finetune", DIGITS)}


def training_steps(df: pd.DataFrame) -> pd.Series:
    """The training length a record's model had: its snapshot step, else the training's steps."""
    step = pd.to_numeric(df.get("p_train_step", pd.Series(index=df.index, dtype=float)), errors="coerce")
    return step.fillna(pd.to_numeric(df["p_train_steps"], errors="coerce")).astype(int)


def table(df: pd.DataFrame, columns: list[tuple[str, str, str]], first: str) -> list[str]:
    df = df.assign(steps=training_steps(df), sampler_name=df["sampler"].str.split("[").str[0])
    lines = [f"| {first} | loss | " + " | ".join(label for _, _, label in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for (steps, loss), rows in df.groupby(["steps", "loss"], sort=True):
        cells = []
        for sampler, metric, _ in columns:
            sel = rows[(rows["sampler_name"] == sampler) & (rows["metric"] == metric)]
            cells.append(show(pd.to_numeric(sel["value"], errors="coerce"), "nfe" if metric == "nfe" else
                              "mmd" if metric in ("mmd", "kid") else metric))
        lines.append(f"| {steps:,} | {loss} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("which", choices=sorted(TABLES))
    ap.add_argument("run", nargs="?")
    args = ap.parse_args()
    default_run, columns = TABLES[args.which]
    first = "training steps" if args.which == "length" else "fine-tune steps"
    print("\n".join(table(load([args.run or default_run]), columns, first)))


if __name__ == "__main__":
    main()
