"""The claims table of README (compact: one line per claim, run and compared cells) from the
committed runs; `cdlbench report ... --claims baselines/claims.yaml` gives the full one with the
per-seed differences.

    python scripts/claims_table.py [RUN_DIR ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cdlbench.report.claims import _interval, _num, evaluate_all, load_claims
from cdlbench.report.tables import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--claims", default="baselines/claims.yaml")
    args = ap.parse_args()
    runs = args.runs or sorted(str(p.parent) for p in Path("results").glob("*/records.jsonl"))
    results = evaluate_all(load_claims(args.claims), load(runs))
    print("| claim | run | cells | CDL - control | n | mean | 95% t interval | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        cens = f" ({r.censored} censored)" if r.censored else ""
        print(f"| {r.claim.id} | {r.suite} | {r.where} | {r.treatment} - {r.control} | {r.n} | {_num(r.mean)}{cens} | "
              f"{_interval(r.t_interval)} | {r.verdict} |")


if __name__ == "__main__":
    main()
