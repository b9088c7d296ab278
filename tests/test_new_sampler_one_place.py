"""A sampler registered in one place (here, in this file) gets the contract tests, suite
validation, a report section and `cdlbench list` output, without an edit anywhere else."""
import pytest
import torch
from click.testing import CliRunner

import contracts
from cdlbench import SAMPLERS
from cdlbench.cli import cli
from cdlbench.samplers.base import SampleResult, Stopwatch, standard_noise
from cdlbench.samplers.ddpm_grid import ddpm_grid
from cdlbench.specs import SamplerSpec
from cdlbench.suite import SuiteError, parse_suite


def ddpm_half_noise(denoiser, x_T, *, generator=None, noise=None, steps: int = 100, class_labels=None):
    """Ancestral DDPM with half the posterior noise (a test-only sampler)."""
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    xi = standard_noise(noise, grid.steps, x_T, generator)
    std = 0.5 * grid.posterior_var.sqrt()
    x = x_T
    with Stopwatch(x_T.device) as clock:
        for j in range(grid.steps):
            x = grid.mean_step(x, denoiser.eps(x, grid.logsnr[j], class_labels), j) + std[j] * xi[j]
    return SampleResult(x, nfe=grid.steps, iterations=grid.steps, converged=True, wall_s=clock.seconds)


@pytest.fixture
def registered():
    SAMPLERS.names()                      # built-ins first
    SAMPLERS.register("ddpm_half_noise", spec=SamplerSpec(grid="ddpm", noise="per_step", stochastic=True,
                                                         nfe=lambda p: (p["steps"], False)))(ddpm_half_noise)
    yield "ddpm_half_noise"
    SAMPLERS.unregister("ddpm_half_noise")


SUITE = {"name": "one-place", "seeds": [0], "device": "cpu", "dataset": {"name": "8gaussians", "n_train": 500},
         "model": {"name": "mlp", "width": 16, "blocks": 1}, "train": {"steps": 30, "batch_size": 32},
         "losses": {"name": "ddpm"}, "samplers": {"name": "ddpm_half_noise", "steps": 20},
         "metrics": {"name": "mmd", "bandwidth": 0.5, "n_samples": 64}}


@pytest.mark.parametrize("check", contracts.SAMPLER_CHECKS, ids=lambda c: c.__name__)
def test_contracts(registered, check):
    check(registered)


def test_validation_reads_its_spec(registered):
    parse_suite(SUITE)
    with pytest.raises(SuiteError, match="steps.*1000-step DDPM grid"):       # its declared grid
        parse_suite({**SUITE, "samplers": {"name": registered, "steps": 5000}})


def test_a_run_and_its_report_section(registered, tmp_path):
    from cdlbench.report import load, render_frame
    from cdlbench.run.coordinator import Runner

    summary = Runner(parse_suite(SUITE), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False,
                     log=None, threads=1).execute()
    assert summary.done and not summary.failed
    text = render_frame(load([tmp_path / "run"]), "markdown")
    assert "· ddpm_half_noise[steps=20]" in text and "denoiser evals" in text


def test_listed(registered):
    out = CliRunner().invoke(cli, ["list", "samplers"]).output
    assert "ddpm_half_noise: Ancestral DDPM with half the posterior noise" in out
    assert "steps: int = 100" in out


def test_half_noise_differs_from_ddpm(registered):
    data, den, _ = contracts.oracle()
    x_T, noise = contracts.inputs({"steps": 20}, 0)
    a = SAMPLERS[registered](den, x_T, noise=noise, steps=20).samples
    b = SAMPLERS["ddpm"](den, x_T, noise=noise, steps=20).samples
    assert (a - b).abs().max() > 1e-3 and torch.isfinite(a).all()
