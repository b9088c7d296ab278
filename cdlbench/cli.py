"""Command line: parses and calls the library. Exit 0 ok, 1 a cell failed, 2 bad usage or suite."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .suite import SuiteError, load_suite
from .registry import REGISTRIES


def _fail_usage(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Benchmark diffusion losses (DDPM, EDM, CDL) across samplers (DDPM, Picard, ...)."""


def _parse_seeds(text: str | None):
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        _fail_usage(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}")


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run directory (default results/<suite name>)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--seeds", default=None, help="comma-separated seeds overriding the suite, e.g. 0,1,2")
@click.option("--dry-run", is_flag=True, help="print the expanded cells and their work, then exit")
@click.option("--no-cache", is_flag=True, help="retrain instead of using cached checkpoints")
@click.option("--quiet", is_flag=True, help="no progress bars")
def run(suite, out, device, seeds, dry_run, no_cache, quiet):
    """Train, sample and measure every cell of SUITE (resumes an interrupted run)."""
    try:
        s = load_suite(suite, seeds=_parse_seeds(seeds))
    except SuiteError as exc:
        _fail_usage(str(exc))
    from .run.runner import Runner, planned_work

    if dry_run:
        from tabulate import tabulate

        rows = planned_work(s)
        click.echo(tabulate(rows, headers="keys", tablefmt="github"))
        click.echo(f"\n{len(rows)} cells; {sum(r['train_steps'] for r in rows)} training steps in all")
        return
    out = Path(out) if out else Path("results") / s.name
    try:
        runner = Runner(s, out, device=device, use_cache=not no_cache, progress=not quiet)
    except RuntimeError as exc:
        _fail_usage(str(exc))
    from .run.runner import RunDirMismatch, RunLocked

    try:
        summary = runner.execute()
    except (RunLocked, RunDirMismatch) as exc:   # a second run on the same directory, or another suite's
        _fail_usage(str(exc))
    except KeyboardInterrupt:   # finished records are on disk; the same command resumes
        click.echo(f"\ninterrupted; finished cells are saved in {out}; run the same command to resume", err=True)
        sys.exit(130)
    click.echo(f"run directory: {summary.run_dir}  ({len(summary.done)} cells run, "
               f"{len(summary.skipped)} already complete, {len(summary.failed)} failed)")
    if summary.failed:
        for name, reason in summary.failed:
            click.echo(f"failed: {name}: {reason}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv", "json", "html"]), default="markdown")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="reference numbers (YAML)")
@click.option("--plots", type=click.Path(file_okay=False), default=None, help="directory for PNG plots")
def report(run_dirs, fmt, baseline, plots):
    """Paper-style tables (mean +- std over seeds) from RUN_DIRS (default: newest under results/)."""
    from . import report as rep
    from .run.rundir import newest_run

    dirs = list(run_dirs)
    if not dirs:
        newest = newest_run("results")
        if newest is None:
            _fail_usage("no run directory given and none found under results/; run `cdlbench run SUITE` first")
        dirs = [newest]
    for d in dirs:
        if not (Path(d) / "records.jsonl").exists():
            _fail_usage(f"{d}: not a run directory (no records.jsonl)")
    try:
        click.echo(rep.render(dirs, fmt, baseline=baseline, plots=plots), nl=False)
    except FileNotFoundError as exc:
        _fail_usage(str(exc))
    except ValueError as exc:
        _fail_usage(str(exc))


@cli.command(name="list")
@click.argument("kind", required=False, type=click.Choice(sorted(REGISTRIES)))
def list_components(kind):
    """Registered components with their parameters and defaults."""
    for k in [kind] if kind else sorted(REGISTRIES):
        click.echo(f"{k}:")
        for entry in REGISTRIES[k].entries():
            click.echo(f"  {entry.name}: {entry.doc}")
            for p in entry.parameters():
                click.echo(f"      {p.describe()}")


def main():
    cli()


if __name__ == "__main__":
    main()
