"""Sequential samplers (DDIM, EDM Heun/Euler, Picard with DDIM drift) against the exact gmm1d
denoiser, and EDM training (preconditioning, loss, CDL with base edm). Issue 3."""
from __future__ import annotations

import math

import pytest
import torch

from cdlbench import DATASETS, LOSSES, MODELS, SAMPLERS, Denoiser
from cdlbench.datasets.mixture import GaussianMixture
from cdlbench.diffusion.schedules import karras_sigmas
from cdlbench.models.precond import EDMPrecond


@pytest.fixture(scope="module")
def gmm():
    return DATASETS["gmm1d"]()


def oracle(data) -> Denoiser:
    return Denoiser.from_eps(data.exact_eps)


def x_T(n=128, d=1, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class CountingDenoiser(Denoiser):
    """Counts denoiser evaluations per sample: points evaluated / batch size, over both views."""

    def __init__(self, fn, batch: int):
        super().__init__(eps_fn=self._count)
        self._fn, self.batch, self.points = fn, batch, 0

    def _count(self, z, a):
        self.points += z.shape[0]
        return self._fn(z, a)

    @property
    def evaluations(self) -> float:
        return self.points / self.batch


def rms(a, b):
    return (a - b).pow(2).mean().sqrt().item()


# ------------------------------------------------------------------ order of accuracy
def test_heun_second_order_euler_first_order(gmm):
    den, x = oracle(gmm), x_T(64)
    ref = SAMPLERS["heun"](den, x, steps=1024).samples        # fine-step probability-flow ODE solution
    heun = [rms(SAMPLERS["heun"](den, x, steps=n).samples, ref) for n in (16, 32, 64)]
    euler = [rms(SAMPLERS["euler"](den, x, steps=n).samples, ref) for n in (16, 32, 64)]
    for coarse, fine in zip(heun, heun[1:]):
        assert coarse / fine >= 3.0, heun                     # second order: ~4 per halving
    for coarse, fine in zip(euler, euler[1:]):
        assert 1.7 <= coarse / fine <= 2.6, euler             # first order: ~2 per halving
    assert heun[-1] < 0.1 * euler[-1]


def test_heun_deterministic_is_algorithm_1(gmm):
    """Algorithm 1 written out literally, against heun with S_churn = 0."""
    den, x = oracle(gmm), x_T(64)
    n = 12
    t = [float(s) for s in karras_sigmas(n, 0.002, 80.0, 7.0)]
    y = x * t[0]
    for i in range(n):
        d = (y - den.x0(y, t[i])) / t[i]
        y_next = y + (t[i + 1] - t[i]) * d
        if t[i + 1] != 0:
            d2 = (y_next - den.x0(y_next, t[i + 1])) / t[i + 1]
            y_next = y + (t[i + 1] - t[i]) * (0.5 * d + 0.5 * d2)
        y = y_next
    out = SAMPLERS["heun"](den, x, steps=n, S_churn=0.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.samples, y, rtol=0, atol=1e-12)
    assert out.nfe == 2 * n - 1


def test_heun_churn_window_and_noise(gmm):
    den, x = oracle(gmm), x_T(64)
    noise = torch.randn(10, *x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    det = SAMPLERS["heun"](den, x, steps=10).samples
    # churn confined to sigma in [S_tmin, S_tmax] that contains no step: Algorithm 1 again
    off = SAMPLERS["heun"](den, x, steps=10, S_churn=40.0, S_tmin=100.0, S_tmax=200.0, noise=noise).samples
    torch.testing.assert_close(off, det, rtol=0, atol=0)
    on = SAMPLERS["heun"](den, x, steps=10, S_churn=40.0, noise=noise).samples
    assert rms(on, det) > 1e-3
    same = SAMPLERS["heun"](den, x, steps=10, S_churn=40.0, noise=noise).samples
    torch.testing.assert_close(on, same, rtol=0, atol=0)      # the noise comes only from `noise`
    tuned = SAMPLERS["heun"](den, x, steps=10, S_churn=40.0, S_noise=1.007, noise=noise).samples
    assert 0 < rms(tuned, on) < rms(on, det)


@pytest.mark.parametrize("S_churn", [0.0, 30.0, 80.0])
def test_heun_samples_the_mixture(gmm, S_churn):
    """With the exact denoiser every churn setting samples 0.5 N(-5,1) + 0.5 N(5,1)."""
    x = x_T(3000, seed=3, dtype=torch.float32)
    out = SAMPLERS["heun"](oracle(gmm), x, steps=32, S_churn=S_churn,
                           generator=torch.Generator().manual_seed(4)).samples
    assert abs(out.abs().mean().item() - 5.0) < 0.1
    assert abs((out.abs() - 5.0).var().item() - 1.0) < 0.12
    assert abs((out > 0).float().mean().item() - 0.5) < 0.04


# ------------------------------------------------------------------ DDIM and Picard
def test_ddim_eta0_deterministic_given_x_T(gmm):
    den, x = oracle(gmm), x_T(256)
    a = SAMPLERS["ddim"](den, x, steps=50, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = SAMPLERS["ddim"](den, x, steps=50, eta=0.0, generator=torch.Generator().manual_seed(2),
                         noise=torch.randn(50, *x.shape, dtype=x.dtype))
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    assert a.nfe == 50
    c = SAMPLERS["ddim"](den, x, steps=50, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert rms(a.samples, c.samples) > 0.01
    # a 200-step DDIM ODE on the exact denoiser lands on the mixture
    fine = SAMPLERS["ddim"](den, x_T(1000, seed=7), steps=200).samples
    assert abs(fine.abs().mean().item() - 5.0) < 0.15


def test_ddim_eta1_is_ancestral_ddpm(gmm):
    """eta = 1 gives sigma^2 = beta~, i.e. the DDPM posterior-variance sampler, noise for noise."""
    den, x = oracle(gmm), x_T(64)
    noise = torch.randn(20, *x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    a = SAMPLERS["ddim"](den, x, steps=20, eta=1.0, noise=noise).samples
    b = SAMPLERS["ddpm"](den, x, steps=20, variance="posterior", noise=noise).samples
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ddim_clip_sample_bounds_x0(gmm):
    den = Denoiser.from_eps(lambda z, a: -3.0 * z)            # a wildly wrong denoiser
    x = x_T(64)
    out = SAMPLERS["ddim"](den, x, steps=10, clip_sample=1.0).samples
    assert out.abs().max().item() <= 1.0 + 1e-9               # the last step returns x0_hat


def test_picard_ddim_equals_sequential_ddim(gmm):
    den, x = oracle(gmm), x_T(128)
    seq = SAMPLERS["ddim"](den, x, steps=100, eta=0.0)
    par = SAMPLERS["picard"](den, x, drift="ddim", steps=100, tolerance=1e-6)
    assert par.converged
    torch.testing.assert_close(par.samples, seq.samples, rtol=0, atol=1e-6)
    loose = SAMPLERS["picard"](den, x, drift="ddim", steps=100, tolerance=0.1)
    assert loose.iterations < par.iterations <= 100


# ------------------------------------------------------------------ NFE accounting
SAMPLER_CASES = [
    ("ddpm", {"steps": 100}),
    ("ddim", {"steps": 37, "eta": 0.0}),
    ("ddim", {"steps": 25, "eta": 0.5}),
    ("heun", {"steps": 18}),
    ("heun", {"steps": 7, "S_churn": 30.0, "S_noise": 1.007}),
    ("heun", {"steps": 1}),
    ("euler", {"steps": 18}),
    ("euler", {"steps": 9, "S_churn": 10.0}),
    ("picard", {"drift": "ddpm", "steps": 60, "tolerance": 0.1}),
    ("picard", {"drift": "ddim", "steps": 60, "tolerance": 0.1, "window": 16}),
    ("picard", {"drift": "ddim", "steps": 40, "tolerance": 0.1, "chunk_size": 100}),
]


@pytest.mark.parametrize("name,params", SAMPLER_CASES, ids=lambda v: str(v))
def test_reported_nfe_equals_counted_evaluations(gmm, name, params):
    x = x_T(50)
    den = CountingDenoiser(gmm.exact_eps, batch=x.shape[0])
    out = SAMPLERS[name](den, x, generator=torch.Generator().manual_seed(0), **params)
    assert out.nfe == den.evaluations
    if name == "heun":
        assert out.nfe == 2 * params["steps"] - 1
    elif name != "picard":
        assert out.nfe == params["steps"]


# ------------------------------------------------------------------ EDM preconditioning and loss
def test_edm_precond_views_agree():
    torch.manual_seed(0)
    net = MODELS.build("mlp", {"width": 32, "blocks": 1, "precond": "edm", "sigma_data": 0.7}, shape=(2,))
    assert isinstance(net, EDMPrecond) and net.sigma_data == 0.7
    den = Denoiser.wrap(net)
    x = torch.randn(64, 2, dtype=torch.float32) * 3
    sigma = torch.exp(torch.linspace(-4, 4, 64))
    with torch.no_grad():
        x0 = den.x0(x, sigma)
        a = -2 * torch.log(sigma)
        eps = den.eps(x / torch.sqrt(1 + sigma ** 2).unsqueeze(1), a)
    torch.testing.assert_close(x0, x - sigma.unsqueeze(1) * eps, rtol=1e-4, atol=1e-4)
    # c_skip -> 1 and c_out -> 0 as sigma -> 0: D(x; sigma) -> x
    with torch.no_grad():
        torch.testing.assert_close(den.x0(x, 1e-6), x, rtol=0, atol=1e-4)
    # sigma_data defaults to the data's RMS std
    assert MODELS.build("mlp", {"precond": "edm"}, data_var=torch.tensor([4.0, 4.0])).sigma_data == 2.0
    # the plain model stays a noise predictor
    assert Denoiser.wrap(MODELS.build("mlp", {"width": 8}))._eps_fn is not None


def test_edm_loss_of_the_exact_denoiser_is_one_per_dimension():
    """Data N(0, sd^2 I): the optimal D has error sd^2 sigma^2/(sd^2 + sigma^2) per dimension,
    which lambda(sigma) = (sigma^2 + sd^2)/(sigma sd)^2 turns into exactly 1."""
    sd = 0.6
    data = GaussianMixture([[0.0, 0.0]], sd ** 2)
    loss = LOSSES.build("edm", {"P_mean": -0.5, "P_std": 1.5}, data_var=torch.tensor([sd ** 2, sd ** 2]), shape=(2,))
    assert abs(loss.sigma_data - sd) < 1e-6
    g = torch.Generator().manual_seed(0)
    x0 = data.sample(200_000, g).double()
    out = loss(Denoiser.from_eps(data.exact_eps), x0, generator=g)
    assert out.per_sample.shape == (200_000,)
    assert abs(out.per_sample.mean().item() - 2.0) < 0.02
    # a worse denoiser (identity) scores higher
    bad = loss(Denoiser.from_x0(lambda x, s: x), x0[:20_000], generator=g).per_sample.mean().item()
    assert bad > 2.5


def test_cdl_with_edm_base_trains_through_precond():
    torch.manual_seed(0)
    net = MODELS.build("mlp", {"width": 16, "blocks": 1, "precond": "edm"}, shape=(2,))
    loss = LOSSES.build("cdl", {"base": "edm", "samples_per_batch": 2, "mc_points": 8},
                        data_var=torch.ones(2), shape=(2,))
    assert type(loss.base).__name__ == "EDMLoss"
    x0 = torch.randn(32, 2)
    out = loss(Denoiser.wrap(net), x0, generator=torch.Generator().manual_seed(0))
    assert out.per_sample.shape == (32,) and torch.isfinite(out.per_sample).all()
    assert {"edm", "cdl", "classifier_acc"} <= set(out.parts)
    out.per_sample.mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_edm_training_learns_two_modes():
    """EDM training of the preconditioned MLP on two well separated modes lowers the EDM loss
    markedly (the untrained network already is the best Gaussian denoiser, through c_skip)."""
    from cdlbench.run.training import train

    torch.manual_seed(0)
    data_law = GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], 0.01)
    data = data_law.sample(4096, torch.Generator().manual_seed(1))
    var = data.var(0)
    net = MODELS.build("mlp", {"width": 32, "blocks": 1, "precond": "edm"}, shape=(2,), data_var=var)
    loss = LOSSES.build("edm", {}, data_var=var, shape=(2,))
    cfg = {"steps": 150, "batch_size": 256, "lr": 3e-3, "ema": None, "log_every": 50}
    probe = data[:2048]

    def value(n):
        return loss(Denoiser.wrap(n), probe, generator=torch.Generator().manual_seed(3)).per_sample.mean().item()

    before = value(net)
    trained, log = train(net, loss, data, cfg, torch.Generator().manual_seed(2), progress=False)
    assert value(trained) < 0.8 * before
    assert math.isfinite(log.final_loss)
