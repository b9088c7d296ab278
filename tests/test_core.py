"""Registries, datasets, losses and the CDL batching: unit tests that assert values."""
import math

import pytest
import torch

from cdlbench import DATASETS, LOSSES, METRICS, MODELS, SAMPLERS, Denoiser, Registry
from cdlbench.diffusion import ddpm_logsnr, karras_sigmas, strided_timesteps
from cdlbench.metrics.convergence import first_below
from cdlbench.metrics.mmd import mmd2_unbiased
from cdlbench.registry import UnknownComponentError


def test_registry_did_you_mean_lists_available():
    with pytest.raises(UnknownComponentError) as info:
        SAMPLERS["picrad"]
    msg = str(info.value)
    assert "unknown sampler 'picrad'; did you mean 'picard'?" in msg
    assert "available:" in msg and "ddpm" in msg


def test_registry_decorator_and_parameters():
    reg = Registry("widget")

    @reg.register("w")
    def widget(x, *, size: int = 3, name: str = "a"):
        """A widget."""
        return size

    assert reg["w"] is widget and reg.names() == ["w"]
    assert [(p.name, p.default) for p in reg.entry("w").parameters()] == [("x", None), ("size", 3), ("name", "a")]


def test_builtin_components_registered():
    assert {"dino", "gmm1d", "moons", "checkerboard", "8gaussians"} <= set(DATASETS.names())
    assert {"ddpm", "itd", "cdl"} <= set(LOSSES.names())
    assert {"ddpm", "picard"} <= set(SAMPLERS.names())
    assert "mmd" in METRICS.names() and "mlp" in MODELS.names()


def test_ddpm_logsnr_endpoints():
    a = ddpm_logsnr()
    assert a[0].item() == pytest.approx(9.21, abs=0.01) and a[-1].item() == pytest.approx(-10.12, abs=0.01)
    assert bool((a[1:] < a[:-1]).all())


def test_strided_timesteps_and_karras_sigmas():
    ts = strided_timesteps(10)
    assert ts.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    s = karras_sigmas(18)
    assert s.numel() == 19 and s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002) and s[-1] == 0


def test_dino_dataset_shape_and_standardisation():
    ds = DATASETS["dino"](n_train=1000)
    g = torch.Generator().manual_seed(0)
    x = ds.sample(50000, g)
    assert x.shape == (50000, 2)
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=0.02)
    assert torch.allclose(x.std(0), torch.ones(2), atol=0.02)
    assert ds.train_data(torch.Generator().manual_seed(0)).shape == (1000, 2)
    # same generator seed, same data; different seed, different data
    a = ds.sample(10, torch.Generator().manual_seed(3))
    assert torch.equal(a, ds.sample(10, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, ds.sample(10, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("name", ["moons", "checkerboard", "8gaussians", "gmm1d"])
def test_toys_sample_through_generator(name):
    ds = DATASETS[name]()
    a = ds.sample(500, torch.Generator().manual_seed(1))
    assert torch.equal(a, ds.sample(500, torch.Generator().manual_seed(1)))
    assert torch.isfinite(a).all() and a.shape[0] == 500


def test_eight_gaussians_exact_eps_is_posterior_mean():
    # E[eps | z] by Monte Carlo against the closed form, at one noise level
    ds = DATASETS["8gaussians"]()
    g = torch.Generator().manual_seed(2)
    a = torch.tensor(0.5)
    x = ds.sample(400000, g)
    eps = torch.randn(x.shape, generator=g)
    z = torch.sigmoid(a).sqrt() * x + torch.sigmoid(-a).sqrt() * eps
    pred = ds.exact_eps(z, a.expand(z.shape[0]))
    # regression identity: E[(eps - E[eps|z]) * f(z)] = 0 for any f, and the residual is smaller than eps
    assert (eps - pred).pow(2).mean() < eps.pow(2).mean() * 0.95
    assert torch.allclose(((eps - pred) * z).mean(0), torch.zeros(2), atol=0.01)


def _tiny_setup(loss_name, **params):
    g = torch.Generator().manual_seed(0)
    ds = DATASETS["dino"](n_train=2000)
    data = ds.train_data(g)
    torch.manual_seed(0)
    net = MODELS["mlp"](width=32, blocks=1, shape=(2,))
    loss = LOSSES.build(loss_name, params, data_var=data.var(0), shape=(2,))
    return net, loss, data, g


def test_cdl_evaluates_classifier_points_in_one_batched_call():
    net, loss, data, g = _tiny_setup("cdl", samples_per_batch=3, mc_points=16)
    sizes = []
    den = Denoiser.from_eps(lambda z, a: (sizes.append(z.shape[0]), net(z, a))[1])
    out = loss(den, data[:64], generator=g)
    assert sizes == [64, 2 * 3 * 16]          # base loss, then one call with all 2*K*B points
    assert out.per_sample.shape == (64,)
    assert "cdl" in out.parts and out.parts["cdl"] > 0


def test_cdl_total_is_base_plus_weighted_sum():
    net, loss, data, _ = _tiny_setup("cdl", samples_per_batch=2, mc_points=8, weight=2.5)
    den = Denoiser.from_eps(net)
    out = loss(den, data[:32], generator=torch.Generator().manual_seed(5))
    base = loss.base(den, data[:32], generator=torch.Generator().manual_seed(5))
    # the base loss drew first from the same generator state, so it is reproduced exactly
    total = out.per_sample.mean().item()
    assert total == pytest.approx(base.per_sample.mean().item() + 2.5 * float(out.parts["cdl"]), rel=1e-5)


def test_losses_are_differentiable_and_finite():
    for name in ["ddpm", "itd", "cdl"]:
        net, loss, data, g = _tiny_setup(name, **({"mc_points": 8} if name == "cdl" else {}))
        out = loss(Denoiser.from_eps(net), data[:32], generator=g)
        out.per_sample.mean().backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads)


def test_itd_loss_estimates_nll_of_exact_denoiser():
    ds = DATASETS["gmm1d"]()
    g = torch.Generator().manual_seed(9)
    x = ds.sample(20000, g)
    loss = LOSSES.build("itd", {}, data_var=torch.tensor([26.0]), shape=(1,))
    nll = loss(Denoiser.from_eps(ds.exact_eps), x, generator=g).per_sample
    se = nll.std().item() / math.sqrt(nll.numel())
    assert abs(nll.mean().item() - (-ds.log_density(x).mean().item())) < 4 * se + 0.01


def test_mmd_unbiased_properties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    same = mmd2_unbiased(x, y, 0.5)
    shifted = mmd2_unbiased(x, y + 1.0, 0.5)
    assert abs(same) < 0.01 and shifted > 0.05
    # closed form for two points each: check the kernel normalisation exp(-r^2/2bw)/sqrt(2 pi bw)
    a, b = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    k = lambda r2: math.exp(-r2 / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    expect = k(1) + k(4) - 2 * (k(0) + k(4) + k(1) + k(1)) / 4
    assert mmd2_unbiased(a, b, 1.0) == pytest.approx(expect)


def test_first_below_is_censored_when_never_reached():
    assert first_below([0.5, 0.2, 0.01, 0.001], 0.05) == 3
    assert first_below([0.5, 0.2], 0.05) is None


def test_cdl_classifier_proposal_can_be_moved():
    """mc_loc / mc_scale set the log-SNR law of the classifier's Monte-Carlo points."""
    _, default, data, _ = _tiny_setup("cdl", mc_points=16)
    _, moved, _, _ = _tiny_setup("cdl", mc_points=16, mc_loc=-0.5, mc_scale=3.2)
    assert (moved.proposal.loc, moved.proposal.scale) == (-0.5, 3.2)
    assert moved.proposal != default.proposal and moved.base.proposal == default.base.proposal
    seen = []
    den = Denoiser.from_eps(lambda z, a: (seen.append(a.clone()), torch.zeros_like(z))[1])
    moved(den, data[:8], generator=torch.Generator().manual_seed(0))
    a = seen[-1]
    assert a.max().item() <= -0.5 + 3 * 3.2 + 1e-4
