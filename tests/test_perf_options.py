"""The pieces issue 6 added for speed keep behaviour identical: the looped CDL reference equals
the batched CDL, `Denoiser.accelerated` computes the same function, and the Picard update's
residual is the largest finite error."""
from __future__ import annotations

import torch

import cdlbench.registry; cdlbench.registry.load_components()  # noqa: F401
from cdlbench import LOSSES, MODELS, SAMPLERS, Denoiser
from benchmarks.cdl_looped import looped_like
from cdlbench.samplers.picard import picard_step


def _net(width=32, blocks=1):
    torch.manual_seed(0)
    return MODELS.build("mlp", {"width": width, "blocks": blocks}, shape=(2,))


def test_looped_cdl_reference_equals_batched_cdl():
    den = Denoiser.from_eps(_net())
    loss = LOSSES.build("cdl", {"base": "itd", "samples_per_batch": 3, "mc_points": 16},
                        data_var=torch.tensor([0.5, 2.0]), shape=(2,))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    fast = loss(den, x, generator=torch.Generator().manual_seed(2))
    slow = looped_like(loss)(den, x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(slow.per_sample, fast.per_sample, rtol=1e-4, atol=1e-5)
    assert abs(slow.parts["cdl"] - fast.parts["cdl"]) < 1e-5 * max(1.0, abs(fast.parts["cdl"]))
    assert slow.parts["classifier_acc"] == fast.parts["classifier_acc"]


def test_accelerated_inference_mode_same_function_and_ordinary_outputs():
    den = Denoiser.from_eps(_net().eval())
    fast = den.accelerated(inference_mode=True)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = den.eps(z, torch.linspace(-5, 5, 64))
    got = fast.eps(z, torch.linspace(-5, 5, 64))
    assert torch.equal(got, expected)
    assert not got.is_inference()            # later in-place updates by samplers stay legal
    got.mul_(2.0)
    noise = torch.randn(50, 64, 2, generator=torch.Generator().manual_seed(4))
    a = SAMPLERS["ddpm"](den, z, noise=noise, steps=50).samples
    b = SAMPLERS["ddpm"](fast, z, noise=noise, steps=50).samples
    assert torch.equal(a, b)
    torch.testing.assert_close(fast.x0(z, 2.0), den.x0(z, 2.0).detach())


def test_picard_step_residual_is_largest_finite_error():
    T, n = 4, 3
    X = torch.zeros(T + 1, n, 1)
    step_noise = torch.arange(T * n, dtype=torch.float32).reshape(T, n, 1) / 10
    tol_var = torch.tensor([0.5, 0.25, 0.125, 0.0])       # last step: error never counts as converged
    expected_new = torch.cumsum(step_noise, 0)
    sq = expected_new.pow(2).squeeze(-1)                  # X was all zeros
    finite = sq[:-1] / tol_var[:-1, None]
    advance, residual = picard_step(X.clone(), 0, T, lambda xs, b, e: torch.zeros_like(xs), step_noise, tol_var, 0.1)
    assert abs(residual - float(finite.max())) < 1e-6 * float(finite.max())
    assert advance == 1                                    # step 0 already fails (err > tol^2)
    _, zero = picard_step(torch.zeros(2, 1, 1), 0, 1, lambda xs, b, e: torch.zeros_like(xs),
                          torch.ones(1, 1, 1), torch.zeros(1), 0.1)
    assert zero == 0.0                                     # no finite error at all
