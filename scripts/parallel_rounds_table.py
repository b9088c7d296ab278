"""Rounds against tolerance for every parallel sampler on the 1-D two-mode oracle (docs/method.md
sections 4.4-4.5): the exact mixture denoiser of 0.5 N(-5, 1) + 0.5 N(5, 1), the same x_T and
noise for every sampler, 1000 DDPM steps, full window. Prints a markdown table (rounds = warm-up
rounds + passes; NFE per sample batch; the largest |x - sequential| over the samples) for README.

    python scripts/parallel_rounds_table.py [--samples 256] [--steps 1000] [--drift ddpm] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import torch

import cdlbench.registry; cdlbench.registry.load_components()  # noqa: F401,E702
from cdlbench import DATASETS, SAMPLERS, Denoiser

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4)
ROWS = [
    ("picard", {}),
    ("picard", {"init": "frozen_x0"}),
    ("picard", {"init": "coarse", "coarse_steps": 10}),
    ("taa", {"history": 2}),
    ("taa", {"history": 3}),
    ("taa", {"history": 5}),
    ("newton", {"jacobian": "exact"}),
    ("newton", {"jacobian": "diagonal"}),
    ("newton", {"jacobian": "exact", "init": "frozen_x0"}),
]


def label(name: str, params: dict) -> str:
    return name + (f"[{', '.join(f'{k}={v}' for k, v in params.items())}]" if params else "")


def table(samples: int, steps: int, drift: str, seed: int) -> str:
    den = Denoiser.from_eps(DATASETS["gmm1d"]().exact_eps)
    g = torch.Generator().manual_seed(seed)
    x_T, noise = torch.randn(samples, 1, generator=g), torch.randn(steps, samples, 1, generator=g)
    twin = "ddim" if drift == "ddim" else "ddpm"
    seq = SAMPLERS[twin](den, x_T, noise=noise, steps=steps).samples
    head = "| sampler | " + " | ".join(f"tol {t:g}" for t in TOLERANCES) + " |"
    lines = [head, "|" + "---|" * (len(TOLERANCES) + 1)]
    for name, params in ROWS:
        cells = []
        for tol in TOLERANCES:
            out = SAMPLERS[name](den, x_T, noise=noise, steps=steps, drift=drift, tolerance=tol, **params)
            gap = (out.samples - seq).abs().max().item()
            note = "" if out.converged else " (not converged)"
            cells.append(f"{out.iterations} / {out.nfe} / {gap:.1e}{note}")
        lines.append(f"| {label(name, params)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--drift", choices=("ddpm", "ddim"), default="ddpm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"gmm1d oracle, {args.samples} samples, {args.steps} steps, drift {args.drift}, full window, seed {args.seed}; "
          f"cells: rounds / NFE / max |x - sequential {'DDIM' if args.drift == 'ddim' else 'DDPM'}|\n")
    print(table(args.samples, args.steps, args.drift, args.seed))
    print(f"\n({time.perf_counter() - start:.0f} s, 1 thread)")


if __name__ == "__main__":
    main()
