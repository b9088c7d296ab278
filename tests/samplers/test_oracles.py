"""Oracle tests: samplers, the ITD likelihood and the CDL classifier against the exact
denoiser of the two-mode Gaussian (docs/method.md section 6), whose score is known in closed form."""
import math

import pytest
import torch

from cdlbench import DATASETS, SAMPLERS, Denoiser
from cdlbench.diffusion import default_proposal, log_likelihood
from cdlbench.losses.cdl import classifier_logit
from cdlbench.metrics.mmd import mmd2_unbiased


from .conftest import inputs as _inputs  # noqa: E402  (the shared oracle fixtures live in conftest.py)


def test_ddpm_with_exact_denoiser_samples_the_mixture(gmm, exact):
    x_T, noise = _inputs(2000, 1000)
    out = SAMPLERS["ddpm"](exact, x_T, noise=noise)
    x = out.samples
    assert out.nfe == 1000 and out.iterations == 1000 and out.converged
    assert abs((x > 0).float().mean().item() - 0.5) < 0.05
    g = torch.Generator().manual_seed(7)
    bw = 1.0   # the component variance: resolves the shape of each mode
    null = [mmd2_unbiased(gmm.sample(2000, g), gmm.sample(2000, g), bw) for _ in range(6)]
    fresh = gmm.sample(2000, g)
    value = mmd2_unbiased(x, fresh, bw)
    bound = max(abs(v) for v in null) * 3 + 1e-4
    assert abs(value) < bound, (value, null)
    # negative control: a denoiser that under-predicts noise must be detected by the same check
    wrong = SAMPLERS["ddpm"](Denoiser.from_eps(lambda z, a: 0.8 * gmm.exact_eps(z, a)), x_T, noise=noise)
    assert mmd2_unbiased(wrong.samples, fresh, bw) > 5 * bound


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_picard_tiny_tolerance_equals_sequential_ddpm(exact, variance):
    x_T, noise = _inputs(64, 1000, seed=1)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise, variance=variance)
    par = SAMPLERS["picard"](exact, x_T, noise=noise, variance=variance, tolerance=1e-6, window=64)
    assert par.converged
    assert (par.samples - seq.samples).abs().max().item() < 1e-4


def test_picard_full_window_tiny_tolerance_on_strided_grid(exact):
    x_T, noise = _inputs(128, 200, seed=2)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise, steps=200)
    par = SAMPLERS["picard"](exact, x_T, noise=noise, steps=200, tolerance=1e-6)
    assert (par.samples - seq.samples).abs().max().item() < 1e-4
    assert par.nfe <= 200 * 201 // 2


def test_picard_default_tolerance_converges_in_few_iterations(gmm, exact):
    x_T, noise = _inputs(1000, 1000, seed=3)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise)
    par = SAMPLERS["picard"](exact, x_T, noise=noise, tolerance=0.1, trace=True)
    assert par.converged and par.iterations < 100, par.iterations
    assert len(par.trace) == par.iterations
    assert par.nfe == pytest.approx(sum_windows(par), abs=0)
    # converged samples are close to the sequential ones (same noise) and in the right modes
    assert (par.samples - seq.samples).abs().median().item() < 0.1
    assert abs((par.samples > 0).float().mean().item() - 0.5) < 0.05


def sum_windows(result):
    # with the full window, each pass evaluates [b, T): nfe is what the sampler reported and
    # must be at least the iteration count and at most T per pass
    assert result.iterations <= result.nfe <= 1000 * result.iterations
    return result.nfe


def test_picard_max_iters_reports_not_converged(exact):
    x_T, noise = _inputs(100, 1000, seed=4)
    par = SAMPLERS["picard"](exact, x_T, noise=noise, tolerance=0.1, max_iters=3)
    assert par.iterations == 3 and not par.converged


def _entropy_by_quadrature(gmm):
    z = torch.linspace(-20, 20, 400001, dtype=torch.float64).unsqueeze(1)
    logp = gmm.log_density(z)
    return -(logp.exp() * logp).sum().item() * (z[1, 0] - z[0, 0]).item()


def test_log_likelihood_matches_mixture_entropy(gmm, exact):
    g = torch.Generator().manual_seed(11)
    x = gmm.sample(4000, g)
    ll = log_likelihood(exact, x, data_var=torch.tensor([26.0]), n_points=64, generator=g)
    se = ll.std().item() / math.sqrt(x.shape[0])
    entropy = _entropy_by_quadrature(gmm)
    assert abs(-ll.mean().item() - entropy) < 3 * se, (-ll.mean().item(), entropy, se)
    # pointwise: with many Monte-Carlo points the estimate tracks log p(x) from the modes
    # (-1.6 nats) into the gap between them (-13.4 nats); the residual is truncation of the a-range
    pts = torch.tensor([[-9.0], [-5.0], [-2.0], [0.0], [1.0], [5.0], [7.5]])
    est = log_likelihood(exact, pts, data_var=torch.tensor([26.0]), n_points=4000, generator=g)
    assert (est.double() - gmm.log_density(pts)).abs().max().item() < 0.75


def test_log_likelihood_of_noised_density(gmm, exact):
    # p_zeta of the mixture is the mixture noised at log-SNR zeta: 0.5 N(+-5 sqrt(s), 1)
    zeta = 1.0
    s = torch.sigmoid(torch.tensor(zeta)).item()
    noised = DATASETS["gmm1d"](separation=5.0 * math.sqrt(s), variance=1.0)
    g = torch.Generator().manual_seed(12)
    y = noised.sample(4000, g)
    ll = log_likelihood(exact, y, data_var=torch.tensor([26.0]), n_points=64, generator=g, zeta=zeta)
    truth = noised.log_density(y)
    se = (ll.double() - truth).std().item() / math.sqrt(y.shape[0])
    assert abs((ll.double() - truth).mean().item()) < 3 * se + 0.01


def test_cdl_logit_sign_with_exact_denoiser(gmm, exact):
    g = torch.Generator().manual_seed(13)
    k, b = 400, 64
    x = gmm.sample(k, g)
    proposal = default_proposal(torch.tensor([26.0]), 1)
    zeta = proposal.sample((k,), g)
    noised = torch.sigmoid(zeta).sqrt()[:, None] * x + torch.sigmoid(-zeta).sqrt()[:, None] * torch.randn(x.shape, generator=g)
    a = proposal.sample((k, b), g)
    eps = torch.randn(k, b, 1, generator=g)
    assert classifier_logit(exact, x, zeta, a, eps, proposal).mean().item() > 0
    assert classifier_logit(exact, noised, zeta, a, eps, proposal).mean().item() < 0


def test_denoiser_views_agree(gmm):
    den = Denoiser.from_eps(gmm.exact_eps)
    g = torch.Generator().manual_seed(14)
    x = 3 * torch.randn(50, 1, generator=g)
    sigma = torch.exp(torch.randn(50, generator=g))
    a = -2 * torch.log(sigma)
    expect = x - sigma[:, None] * gmm.exact_eps(x / torch.sqrt(1 + sigma[:, None] ** 2), a)
    assert torch.allclose(den.x0(x, sigma), expect)
    # and the x0 view of the exact denoiser is E[x0 | x]: at tiny sigma it returns x
    assert torch.allclose(den.x0(x, torch.full((50,), 1e-4)), x, atol=1e-3)
