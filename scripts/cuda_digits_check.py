"""CUDA check of the image path (issue "Images and FID"): run suites/digits.yaml on a GPU for
one seed and report Picard vs sequential DDPM sampling wall-clock there, with the device
synchronised (cdlbench/samplers/base.py Stopwatch).

    python scripts/cuda_digits_check.py [--out DIR] [--device cuda] [--quick]

Where torch-fidelity is not installed (e.g. a GPU box without the 'fid' extra), FID/KID are
swapped for MMD on pixels so the timing still runs. --quick (100 training steps, 200 samples)
is for trying the script on a CPU with --device cpu; its numbers mean nothing.
Exit code: 0 when every cell ran on the requested device, 1 otherwise."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def derived_suite(device: str, quick: bool) -> dict:
    """suites/digits.yaml for one seed on `device` (metrics kept where torch-fidelity exists)."""
    suite = yaml.safe_load((ROOT / "suites" / "digits.yaml").read_text())
    suite.update(name="digits-cuda-check", seeds=[0], device=device)
    if importlib.util.find_spec("torch_fidelity") is None:
        suite["metrics"] = [{"name": "mmd", "n_samples": 500}]
    if quick:
        suite["train"]["steps"] = 100
        for m in suite["metrics"]:
            m["n_samples"] = 200
            m.pop("subset_size", None)
    return suite


def wall_clock_table(records: list[dict]) -> list[dict]:
    """One row per (loss, sampler): wall-clock, iterations, evaluations, device."""
    rows = {}
    for r in records:
        key = (r["loss"], r["sampler"])
        rows.setdefault(key, {"loss": r["loss"], "sampler": r["sampler"], "device": r.get("env_device")})
        if r["metric"] in ("wall_clock", "iterations", "nfe", "fid", "mmd"):
            rows[key][r["metric"]] = r["value"]
    return list(rows.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "digits-cuda-check"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("no CUDA device visible to torch", file=sys.stderr)
            return 1
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    from cdlbench.suite import parse_suite
    from cdlbench.run.coordinator import Runner

    suite = parse_suite(derived_suite(args.device, args.quick), file="digits-cuda-check")
    summary = Runner(suite, args.out, device=args.device, progress=False).execute()
    records = [json.loads(line) for line in (Path(args.out) / "records.jsonl").read_text().splitlines()]
    table = wall_clock_table(records)
    print("\n| loss | sampler | device | wall-clock (s) | iterations | evaluations | quality |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        quality = row.get("fid", row.get("mmd"))
        print(f"| {row['loss']} | {row['sampler']} | {row['device']} | {row.get('wall_clock', float('nan')):.3f} "
              f"| {row.get('iterations')} | {row.get('nfe')} | {quality:.4g} |")
    for loss in sorted({r["loss"] for r in table}):
        walls = {r["sampler"].split("[")[0]: r.get("wall_clock") for r in table if r["loss"] == loss}
        if walls.get("picard") and walls.get("ddpm"):
            print(f"{loss}: Picard / sequential DDPM wall-clock = {walls['picard'] / walls['ddpm']:.2f}")
    want_cpu = args.device == "cpu"
    on_device = all(str(r["device"]).startswith("cpu") == want_cpu for r in table)
    return 0 if not summary.failed and on_device else 1


if __name__ == "__main__":
    sys.exit(main())
