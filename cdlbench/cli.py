"""Command line: parses and calls the library. Exit 0 ok, 1 a cell failed (or a bug: traceback
shown), 2 a user error (invalid suite, bad option, missing file, another suite's run directory)."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from .errors import UserError

__all__ = ["cli", "main"]


def _exit_interrupted(message: str):
    """Ctrl-C: say so and exit 130 at once. Further Ctrl-C are ignored and interpreter shutdown is
    skipped (a library interrupted half-way through its import can re-raise there and turn the exit
    into death by SIGINT); records are fsynced as they are written and the lock is already released."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        click.echo(message, err=True)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(130)


def _fail_usage(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # replaced or closed stream
        return False


def _version() -> str:
    from . import __version__

    return __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="cdlbench")
def cli():
    """Benchmark diffusion losses (DDPM, EDM, CDL) across samplers (DDPM, Picard, ...)."""


def _parse_seeds(text: str | None):
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        _fail_usage(f"--seeds: expected comma-separated non-negative integers such as 0,1,2, got {text!r}")
    if not seeds or any(s < 0 for s in seeds):
        _fail_usage(f"--seeds: expected comma-separated non-negative integers such as 0,1,2, got {text!r}")
    if len(set(seeds)) != len(seeds):
        _fail_usage(f"--seeds: contains duplicates ({text!r}); give each seed once")
    return seeds


def _missing_suite(path: str) -> str:
    """The message for a suite path that does not exist: the suites that do."""
    here = sorted(str(p) for p in Path("suites").glob("*.yaml")) if Path("suites").is_dir() else []
    hint = f"; suites here: {', '.join(here)}" if here else ""
    return f"{path}: no such suite file{hint}"


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run directory (default results/<suite name>)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--seeds", default=None, help="comma-separated seeds overriding the suite, e.g. 0,1,2")
@click.option("--dry-run", is_flag=True, help="print the expanded cells and their work, then exit")
@click.option("--no-cache", is_flag=True, help="retrain instead of using cached checkpoints")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="checkpoint cache (default $CDLBENCH_CACHE, else <run directory's parent>/cache)")
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option("--executor", type=click.Choice(["auto", "inline", "local", "submitit"]), default=None,
              help="auto (default; $CDLBENCH_EXECUTOR sets another): local workers, one per CPU (1 thread each) "
                   "or per GPU, inline where that is one; inline: this process; local: worker processes; "
                   "submitit: Slurm jobs")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="local/auto: worker processes (default one per visible GPU, else the CPUs); "
                   "submitit: most jobs at once")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per worker (default 1 with auto; inline/local: the CPUs this process may use "
                   "/ workers)")
@click.option("--slurm-partition", default=None)
@click.option("--slurm-gpus-per-job", type=click.IntRange(min=0), default=None)
@click.option("--slurm-cpus-per-job", type=click.IntRange(min=1), default=None)
@click.option("--slurm-time", type=click.IntRange(min=1), default=None, help="minutes per job (default 60)")
@click.option("--slurm-account", default=None)
@click.option("--slurm-mem", default=None, help="memory per job, e.g. 4G or 16000M (sbatch --mem)")
@click.option("--slurm-qos", default=None, help="quality of service (sbatch --qos)")
@click.option("--slurm-constraint", default=None, help="node features, e.g. 'a100|h100' (sbatch --constraint)")
@click.option("--slurm-gpu-type", default=None, help="GPU model: --gres=gpu:TYPE:N with N --slurm-gpus-per-job")
@click.option("--slurm-setup", multiple=True,
              help="a shell line run before each job, e.g. 'module load cuda' (repeatable)")
@click.option("--slurm-cluster", type=click.Choice(["slurm", "local"]), default=None,
              help="submitit backend: slurm (default; needs sbatch on the PATH) or local (subprocesses here)")
def run(suite, out, device, seeds, dry_run, no_cache, cache_dir, quiet, executor, jobs, threads, slurm_partition,
        slurm_gpus_per_job, slurm_cpus_per_job, slurm_time, slurm_account, slurm_cluster, slurm_mem, slurm_qos,
        slurm_constraint, slurm_gpu_type, slurm_setup):
    """Train, sample and measure every cell of SUITE (resumes an interrupted run)."""
    from .suite import SuiteError, load_suite

    if not Path(suite).exists():
        _fail_usage(_missing_suite(suite))
    default_executor = os.environ.get("CDLBENCH_EXECUTOR", "").strip() or "auto"
    if default_executor not in ("auto", "inline", "local", "submitit"):
        _fail_usage(f"$CDLBENCH_EXECUTOR: unknown executor {default_executor!r}; choose from auto, inline, local, "
                    "submitit")
    try:
        s = load_suite(suite, seeds=_parse_seeds(seeds))
    except SuiteError as exc:
        _fail_usage(str(exc))
    if dry_run:
        from tabulate import tabulate

        from .run.plan import planned_work

        rows = planned_work(s)
        click.echo(tabulate(rows, headers="keys", tablefmt="github"))
        click.echo(f"\n{len(rows)} cells; {sum(r['train_steps'] for r in rows)} training steps in all")
        return
    from .run.coordinator import Runner

    out = Path(out) if out else Path("results") / s.name
    slurm = {"partition": slurm_partition, "gpus_per_job": slurm_gpus_per_job, "cpus_per_job": slurm_cpus_per_job,
             "time": slurm_time, "account": slurm_account, "cluster": slurm_cluster, "mem": slurm_mem, "qos": slurm_qos,
             "constraint": slurm_constraint, "gpu_type": slurm_gpu_type, "setup": list(slurm_setup) or None}
    # progress bars only on a terminal: in a log file the job lines below are the progress, one a job
    progress = not quiet and _is_terminal(sys.stderr)
    try:
        runner = Runner(s, out, device=device, use_cache=not no_cache, cache_dir=cache_dir, progress=progress,
                        executor=executor, jobs=jobs, threads=threads, slurm=slurm, default_executor=default_executor)
        summary = runner.execute()
    except UserError as exc:    # a second run on the same directory, another suite's, a missing package
        _fail_usage(str(exc))
    except KeyboardInterrupt:   # finished records are on disk; the same command resumes
        _exit_interrupted(f"\ninterrupted; finished cells are saved in {out}; run the same command to resume")
    click.echo(f"run directory: {summary.run_dir}  ({len(summary.done)} cells run, "
               f"{len(summary.skipped)} already complete, {len(summary.failed)} failed)")
    if summary.failed:
        for name, reason in summary.failed:
            click.echo(f"failed: {name}: {reason}", err=True)
        click.echo(f"tracebacks of the failed cells: {Path(summary.run_dir) / 'failures.jsonl'}", err=True)
        sys.exit(1)


@cli.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--format", "fmt", default="markdown", show_default=True,
              help="markdown, latex, csv, json, html, or a format a plugin registers (cdlbench/report/formats/)")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="reference numbers (YAML)")
@click.option("--plots", type=click.Path(file_okay=False), default=None, help="directory for PNG plots")
@click.option("--claims", type=click.Path(dir_okay=False), default=None,
              help="the paper's claims (YAML, e.g. baselines/claims.yaml): paired statistics and a verdict each")
def report(run_dirs, fmt, baseline, plots, claims):
    """Paper-style tables (mean +- std over seeds) from RUN_DIRS (default: newest under results/).

    \b
    A cell held by two of RUN_DIRS (same suite, version and cell) is counted once when all its
    values agree, with a warning naming both directories; when any value differs the report
    stops with exit 2 naming both and the cells: it never picks one by the order given."""
    from . import report as rep
    from .run.rundir import newest_run

    if fmt not in rep.format_names():
        _fail_usage(f"--format: {rep.FORMATS.unknown_message(fmt)}")
    dirs = list(run_dirs)
    if not dirs:
        newest = newest_run("results")
        if newest is None:
            _fail_usage("no run directory given and none found under results/; run `cdlbench run SUITE` first")
        dirs = [newest]
    for d in dirs:
        if not (Path(d) / "records.jsonl").exists():
            _fail_usage(f"{d}: not a run directory (no records.jsonl)")
    if baseline is not None and not Path(baseline).is_file():
        _fail_usage(f"--baseline: no such file {baseline!r} (e.g. baselines/paper.yaml)")
    if claims is not None and not Path(claims).is_file():
        _fail_usage(f"--claims: no such file {claims!r} (e.g. baselines/claims.yaml)")
    with _warnings_on_stderr():
        try:
            text = rep.render(dirs, fmt, baseline=baseline, plots=plots, claims=claims)
        except UserError as exc:  # an unusable baselines file, no complete records, a missing extra, duplicates
            _fail_usage(str(exc))
    click.echo(text, nl=False)


@contextlib.contextmanager
def _warnings_on_stderr():
    """Warnings of the library (a plugin that failed to import, duplicate cells, corrupt lines)
    as 'warning: ...' lines on stderr, each once, also when the command then fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            shown = set()
            for w in caught:
                if not issubclass(w.category, UserWarning):      # another library's: as Python shows it
                    sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
                elif str(w.message) not in shown:
                    shown.add(str(w.message))
                    click.echo(f"warning: {w.message}", err=True)


@cli.command(name="list")
@click.argument("kind", required=False, type=click.Choice(["datasets", "losses", "metrics", "models", "samplers"]))
def list_components(kind):
    """Registered components with their parameters and defaults."""
    from .registry import REGISTRIES, load_components
    from .specs import describe_spec

    with _warnings_on_stderr():      # a plugin that failed to import: named, the rest listed
        load_components()
    for k in [kind] if kind else sorted(REGISTRIES):
        click.echo(f"{k}:")
        for entry in REGISTRIES[k].entries():
            click.echo(f"  {entry.name}: {entry.doc}")
            what = describe_spec(entry.spec)
            if what:
                click.echo(f"      [{what}]")
            for p in entry.parameters():
                click.echo(f"      {p.describe()}")


@cli.command()
@click.argument("run_dir", type=click.Path())
def verify(run_dir):
    """Check RUN_DIR's records, curves and config: exit 0 clean, 1 damaged, 2 not a run directory."""
    from .run.verify import NotARunDirectory, verify_run

    try:
        result = verify_run(run_dir)
    except NotARunDirectory as exc:
        _fail_usage(str(exc))
    click.echo(result.text(), nl=False)
    sys.exit(1 if result.damaged else 0)


@cli.command()
@click.argument("run_dir", type=click.Path())
def repair(run_dir):
    """Rewrite RUN_DIR's records (complete cells only, one group each) and curves, keeping backups."""
    from .run.lock import RunLocked
    from .run.rundir import RunDirUnwritable
    from .run.verify import NotARunDirectory, repair_run

    try:
        result = repair_run(run_dir)
    except (NotARunDirectory, RunLocked) as exc:
        _fail_usage(str(exc))
    except RunDirUnwritable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(result.text(), nl=False)
    sys.exit(1 if result.after is not None and result.after.damaged else 0)


def main():
    try:
        cli.main(standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):   # Ctrl-C anywhere, start-up included
        _exit_interrupted("\ninterrupted")
    except click.exceptions.Exit as exc:                  # --help, --version
        sys.exit(exc.exit_code)
    except click.ClickException as exc:                   # a bad option: click's message, exit 2
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
