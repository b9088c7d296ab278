"""Parallel samplers on the shared engine (picard, taa, newton; warm starts) against an independent
reference loop and the exact Gaussian-mixture oracle (docs/method.md sections 4.4-4.5)."""
from __future__ import annotations

import pytest
import torch

import cdlbench.registry; cdlbench.registry.load_components()  # noqa: F401,E702
from cdlbench import DATASETS, SAMPLERS, Denoiser
from cdlbench.samplers.ddpm_grid import ddpm_grid
from cdlbench.samplers.newton import affine_scan, damped_scan
from cdlbench.samplers.parallel_engine import build_problem
from cdlbench.samplers.taa import anderson_coefficients
from cdlbench.samplers.warm_start import anchor_steps, exact_prefix


from .conftest import inputs as _inputs  # noqa: E402  (the shared oracle fixtures live in conftest.py)


# ------------------------------------------------------------------ 1. reference ParaDiGMS loop
def reference_paradigms(eps_fn, x_T, noise, steps, tolerance, window):
    """ParaDiGMS (Shih et al. 2023, Algorithm 1) for the DDPM ancestral drift with the posterior
    variance, written from the algorithm's description; only the schedule numbers are shared.
    Returns (passes, evaluations per sample batch, final state)."""
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    n, d = x_T.shape[0], x_T[0].numel()
    std = grid.posterior_var.sqrt()
    scaled_noise = torch.stack([std[j] * noise[j] for j in range(steps)])      # [T, N, 1]
    next_var = torch.cat([grid.posterior_var[1:], grid.posterior_var.new_zeros(1)])   # var_{j+1}, 0 at the end
    buffer = x_T.unsqueeze(0).repeat(steps + 1, 1, 1)                           # every slot starts at x_T
    begin, end = 0, min(window, steps)
    passes = evals = 0
    while begin < steps:
        xs = buffer[begin:end]
        eps = eps_fn(xs.reshape(-1, d), grid.logsnr[begin:end].repeat_interleave(n)).reshape(xs.shape)
        beta, abar = grid.beta[begin:end, None, None], grid.abar[begin:end, None, None]
        mean = (xs - beta / torch.sqrt(1.0 - abar) * eps) / torch.sqrt(1.0 - beta)
        new = buffer[begin] + torch.cumsum(mean - xs, 0) + torch.cumsum(scaled_noise[begin:end], 0)
        sq = (new - buffer[begin + 1:end + 1]).pow(2).sum(-1)                   # [W, N]
        ratio = (sq / (d * next_var[begin:end, None])).amax(dim=1)              # worst sample per slot
        ratio = torch.cat([ratio, torch.tensor([1e9])])                         # pad: index W if none fails
        ind = int(torch.nonzero(ratio > tolerance ** 2)[0, 0])
        buffer[begin + 1:end + 1] = new
        passes, evals = passes + 1, evals + (end - begin)
        new_begin = begin + min(1 + ind, window)
        new_end = min(new_begin + window, steps)
        buffer[end + 1:new_end + 1] = buffer[end]                               # new slots: the last state
        begin, end = new_begin, new_end
    return passes, evals, buffer[steps]


REFERENCE_CASES = [(0.1, 1000), (0.1, 32), (1e-3, 1000), (1e-3, 32)]


@pytest.mark.parametrize("tolerance,window", REFERENCE_CASES)
def test_picard_equals_reference_paradigms_loop(gmm, exact, tolerance, window):
    """In float64: the reference sums delta and noise separately, picard sums them together, and in
    float32 that rounding moves a full-window error across tol^2 now and then (a few evaluations
    more or less in some seeds; the pass counts stayed equal in every seed tried)."""
    x_T, noise = (t.double() for t in _inputs(32, 1000, seed=5))
    passes, evals, final = reference_paradigms(gmm.exact_eps, x_T, noise, 1000, tolerance, window)
    out = SAMPLERS["picard"](exact, x_T, noise=noise, tolerance=tolerance, window=window)
    assert (out.iterations, out.nfe) == (passes, evals)
    assert out.converged
    assert (out.samples - final).abs().max().item() < 1e-5
    single = SAMPLERS["picard"](exact, x_T.float(), noise=noise.float(), tolerance=tolerance, window=window)
    assert single.iterations == passes


# ------------------------------------------------------------------ 2. fixed point = sequential sampler
CONFIGS = [
    ("picard", {}),
    ("picard", {"init": "frozen_x0", "warmup_steps": 3}),
    ("picard", {"init": "coarse", "coarse_steps": 7}),
    ("taa", {}),
    ("taa", {"history": 5, "init": "coarse"}),
    ("newton", {}),
    ("newton", {"jacobian": "diagonal", "init": "frozen_x0"}),
    ("newton", {"jacobian": "identity"}),
    ("newton", {"damping": 0.5}),
]


@pytest.mark.parametrize("drift", ["ddpm", "ddim"])
@pytest.mark.parametrize("name,params", CONFIGS)
def test_tiny_tolerance_equals_the_sequential_twin(exact, name, params, drift):
    x_T, noise = _inputs(24, 100, seed=1)
    kwargs = {"steps": 100, "drift": drift, "variance": "posterior", **params}
    par = SAMPLERS[name](exact, x_T, noise=noise, tolerance=1e-6, window=32, **kwargs)
    twin, twin_params = SAMPLERS.spec(name).fixed_point(kwargs)
    assert twin == ("ddim" if drift == "ddim" else "ddpm")
    seq = SAMPLERS[twin](exact, x_T, noise=noise, **twin_params)
    assert par.converged
    assert (par.samples - seq.samples).abs().max().item() < 1e-4


# ------------------------------------------------------------------ 3. special cases are Picard exactly
@pytest.mark.parametrize("name,params", [("newton", {"jacobian": "identity"}), ("taa", {"history": 1})])
@pytest.mark.parametrize("tolerance,window,init", [(0.1, None, "x_T"), (1e-3, 32, "frozen_x0")])
def test_special_cases_are_picard_pass_for_pass(exact, name, params, tolerance, window, init):
    x_T, noise = _inputs(48, 1000, seed=2)
    common = {"noise": noise, "tolerance": tolerance, "window": window, "trace": True, "init": init}
    ref = SAMPLERS["picard"](exact, x_T, **common)
    out = SAMPLERS[name](exact, x_T, **common, **params)
    assert (out.iterations, out.nfe, out.converged) == (ref.iterations, ref.nfe, ref.converged)
    assert out.residuals == ref.residuals
    assert len(out.trace) == len(ref.trace) == ref.iterations
    assert all(torch.equal(a, b) for a, b in zip(out.trace, ref.trace))
    assert torch.equal(out.samples, ref.samples)


# ------------------------------------------------------------------ 4. Newton converges much faster
@pytest.mark.parametrize("tolerance", [0.1, 1e-3])
def test_exact_newton_needs_far_fewer_rounds_than_picard(exact, tolerance):
    x_T, noise = _inputs(64, 1000, seed=3)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise)
    picard = SAMPLERS["picard"](exact, x_T, noise=noise, tolerance=tolerance)
    newton = SAMPLERS["newton"](exact, x_T, noise=noise, tolerance=tolerance, jacobian="exact")
    assert newton.converged and newton.iterations <= picard.iterations // 2, (newton.iterations, picard.iterations)
    assert newton.extra["jvp"] == newton.nfe * 1                 # d = 1 product per evaluated point
    assert newton.extra["scan_depth"] > 0
    assert (newton.samples - seq.samples).abs().median().item() < 0.05


# ------------------------------------------------------------------ 5. warm starts
def test_anchor_schedules_and_exact_prefix():
    assert anchor_steps("x_T", 100) == [] and exact_prefix([]) == 0
    assert anchor_steps("frozen_x0", 100, warmup_steps=4) == [0, 1, 2, 3]
    assert exact_prefix([0, 1, 2, 3]) == 4
    assert anchor_steps("coarse", 100, coarse_steps=4) == [0, 25, 50, 75]
    assert exact_prefix([0, 25, 50, 75]) == 1
    assert anchor_steps("coarse", 5, coarse_steps=10) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("init,key", [("frozen_x0", "warmup_steps"), ("coarse", "coarse_steps")])
def test_warm_up_rounds_are_counted_and_traced(exact, init, key):
    x_T, noise = _inputs(16, 100, seed=4)
    k = 5
    only = SAMPLERS["picard"](exact, x_T, noise=noise, steps=100, init=init, trace=True, max_iters=k, **{key: k})
    assert (only.iterations, only.nfe, only.converged) == (k, k, False)
    assert len(only.trace) == k
    grid = ddpm_grid(100)
    x0_at_x_T = (x_T - (1 - grid.abar[0]).sqrt() * exact.eps(x_T, grid.logsnr[0])) / grid.abar[0].sqrt()
    assert torch.allclose(only.trace[0], x0_at_x_T)             # round 1's guess of X[T]: x0_hat at x_T
    full = SAMPLERS["picard"](exact, x_T, noise=noise, steps=100, init=init, trace=True, **{key: k})
    assert full.converged and len(full.trace) == full.iterations > k
    assert full.nfe >= k + (full.iterations - k)


@pytest.mark.parametrize("init,key", [("frozen_x0", "warmup_steps"), ("coarse", "coarse_steps")])
def test_warm_start_over_every_step_is_the_sequential_sampler(exact, init, key):
    x_T, noise = _inputs(16, 50, seed=6)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise, steps=50)
    out = SAMPLERS["picard"](exact, x_T, noise=noise, steps=50, init=init, **{key: 50})
    assert (out.iterations, out.nfe, out.converged) == (50, 50, True)
    assert (out.samples - seq.samples).abs().max().item() < 1e-5


def test_coarse_start_is_coarse_ddim_on_the_ode_drift(exact):
    """drift ddim: after its K rounds the coarse warm start's X[T] is K-step DDIM on the coarse nodes."""
    x_T, _ = _inputs(16, 100, seed=7)
    k = 4
    out = SAMPLERS["picard"](exact, x_T, steps=100, drift="ddim", init="coarse", coarse_steps=k, max_iters=k)
    grid = ddpm_grid(100)
    nodes = [i * 100 // k for i in range(k)]
    x = x_T
    for i, j in enumerate(nodes):
        eps = exact.eps(x, grid.logsnr[j])
        x0 = (x - (1 - grid.abar[j]).sqrt() * eps) / grid.abar[j].sqrt()
        abar_next = grid.abar[nodes[i + 1]] if i + 1 < k else torch.tensor(1.0)
        x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
    assert (out.samples - x).abs().max().item() < 1e-4


# ------------------------------------------------------------------ 6. labels, chunking, registration
@pytest.mark.parametrize("name,params", [("taa", {"history": 3}), ("newton", {"jacobian": "exact"})])
def test_conditional_chunked_parallel_samplers_equal_sequential(name, params):
    data = DATASETS["8gaussians"]()
    exact8 = Denoiser.from_eps(data.exact_eps, num_classes=8)
    n, steps = 40, 100
    g = torch.Generator().manual_seed(3)
    x_T, noise = torch.randn(n, 2, generator=g), torch.randn(steps, n, 2, generator=g)
    labels = torch.randint(0, 8, (n,), generator=g)
    seq = SAMPLERS["ddpm"](exact8, x_T, noise=noise, steps=steps, class_labels=labels)
    # 777 points per call cut windows of 40 samples mid-window (newton: 259 rows, 3 points each)
    par = SAMPLERS[name](exact8, x_T, noise=noise, steps=steps, tolerance=1e-6, window=40, chunk_size=777,
                         class_labels=labels, **params)
    assert par.converged and (par.samples - seq.samples).abs().max().item() < 1e-4
    if name == "newton":
        assert par.extra["jvp"] == 2 * par.nfe


def test_registrations_keep_picard_keys_and_declare_figures():
    from cdlbench.suite import load_suite

    neutral = {"init": "x_T", "warmup_steps": 1, "coarse_steps": 10}
    for name in ("picard", "taa", "newton"):
        entry = SAMPLERS.entry(name)
        assert entry.neutral == neutral and entry.spec.parallel
        defaults = {p.name: p.default for p in entry.parameters()}
        assert all(defaults[k] == v for k, v in neutral.items())
    assert SAMPLERS.spec("newton").extra_figures == (("jvp", "products"), ("scan_depth", "levels"))
    picard = [c for c in load_suite("suites/parallel.yaml").samplers if c.name == "picard"][0]
    assert not set(neutral) & set(picard.keyed_params)
    assert SAMPLERS.spec("picard").nfe({"steps": 100, "window": 32, "init": "frozen_x0", "warmup_steps": 3}) == \
        (3 + 100 * 32, True)


def test_newton_refuses_an_inference_mode_network():
    """Denoiser.accelerated(inference_mode=True) cuts autodiff: a network then fails with a clear
    message (an analytic function would silently give zero Jacobians; see newton.py)."""
    from cdlbench import MODELS

    torch.manual_seed(0)
    net = Denoiser.wrap(MODELS.build("mlp", {"width": 16, "blocks": 1}, shape=(2,)).eval())
    x_T, noise = _inputs(4, 20, seed=8, dim=2)
    with pytest.raises(RuntimeError, match="inference"):
        SAMPLERS["newton"](net.accelerated(inference_mode=True), x_T, noise=noise, steps=20)
    assert SAMPLERS["newton"](net, x_T, noise=noise, steps=20, max_iters=2).extra["jvp"] > 0


# ------------------------------------------------------------------ 7. pure pieces
def test_affine_scan_and_damped_scan_solve_their_problems():
    g = torch.Generator().manual_seed(9)
    W, n, d = 11, 3, 2
    A = 0.6 * torch.randn(W, n, d, d, generator=g, dtype=torch.float64)
    c = torch.randn(W, n, d, generator=g, dtype=torch.float64)
    D, ref = torch.zeros(n, d, dtype=torch.float64), []
    for s in range(W):
        D = (A[s] @ D.unsqueeze(-1)).squeeze(-1) + c[s]
        ref.append(D)
    ref = torch.stack(ref)
    got, levels = affine_scan(A, c)
    assert torch.allclose(got, ref) and levels == 4                          # ceil(log2 11)
    diag = A.diagonal(dim1=-2, dim2=-1)
    D, ref_diag = c[0], [c[0]]
    for s in range(1, W):
        D = diag[s] * D + c[s]
        ref_diag.append(D)
    assert torch.allclose(affine_scan(diag, c)[0], torch.stack(ref_diag))
    assert torch.allclose(damped_scan(A, c, 1e-12)[0], ref, atol=1e-8)      # no damping: Newton
    # (4.5i) against its normal equations, one sample: D_1 = c_0 exactly, then least squares
    lam = 0.7
    a, cc = A[:, 0], c[:, 0]
    rows, rhs = [], []
    for s in range(1, W):
        r = torch.zeros(d, W * d, dtype=torch.float64)
        r[:, s * d:(s + 1) * d] = torch.eye(d, dtype=torch.float64)
        r[:, (s - 1) * d:s * d] = -a[s]
        rows.append(r)
        rhs.append(cc[s])
    for s in range(1, W):
        r = torch.zeros(d, W * d, dtype=torch.float64)
        r[:, s * d:(s + 1) * d] = lam ** 0.5 * torch.eye(d, dtype=torch.float64)
        rows.append(r)
        rhs.append(torch.zeros(d, dtype=torch.float64))
    M, y = torch.cat(rows), torch.cat(rhs)
    free = torch.linalg.lstsq(M[:, d:], (y - M[:, :d] @ cc[0]).unsqueeze(-1)).solution.squeeze(-1)
    want = torch.cat([cc[0], free]).reshape(W, d)
    assert torch.allclose(damped_scan(A[:, :1], c[:, :1], lam)[0][:, 0], want, atol=1e-8)


def test_anderson_coefficients_use_upstream_slots_only():
    g = torch.Generator().manual_seed(10)
    C, W, n, D = 2, 6, 3, 2
    dR, r = torch.randn(C, W, n, D, generator=g), torch.randn(W, n, D, generator=g)
    valid = torch.tensor([2, 2, 2, 2, 1, 0])
    gamma = anderson_coefficients(dR, r, valid, 1e-3)
    dR2, r2 = dR.clone(), r.clone()
    dR2[:, 3:] += 5.0
    r2[3:] -= 2.0
    gamma2 = anderson_coefficients(dR2, r2, valid, 1e-3)
    assert torch.allclose(gamma[:3], gamma2[:3])                            # slot s sees slots <= s only
    assert torch.all(gamma[5] == 0) and torch.all(gamma[4, :, 1] == 0)      # unusable columns: 0
    # slot 0 with a tiny ridge: the 1-slot least-squares solution
    lsq = torch.linalg.lstsq(dR[:, 0].permute(1, 2, 0), r[0].unsqueeze(-1)).solution.squeeze(-1)   # [n, C]
    one = anderson_coefficients(dR[:, :1], r[:1], torch.tensor([2]), 1e-9)[0]
    assert D >= C and torch.allclose(one, lsq, atol=1e-3)


@pytest.mark.parametrize("drift", ["ddpm", "ddim"])
def test_step_maps_are_linear_in_x_and_eps(drift):
    x_T, noise = _inputs(5, 50, seed=11, dim=2)
    problem = build_problem(None, x_T, drift=drift, steps=50, variance="posterior", noise=noise, generator=None,
                            chunk_size=1 << 10, class_labels=None)
    alpha, gamma = problem.step_coefficients()
    xs, eps = torch.randn(50, 5, 2), torch.randn(50, 5, 2)
    want = problem.step(xs, eps, slice(0, 50))
    assert torch.allclose(alpha.view(50, 1, 1) * xs + gamma.view(50, 1, 1) * eps, want, atol=1e-5)


@pytest.mark.parametrize("name,params", [("taa", {"history": 3}), ("newton", {"jacobian": "exact"}),
                                         ("newton", {"jacobian": "diagonal", "damping": 0.1})])
def test_image_shaped_samples(name, params):
    """[N, C, H, W] states: a smooth analytic denoiser (the exact one of N(0, v I) data, per pixel)."""
    v = torch.linspace(0.2, 2.0, 16).reshape(1, 1, 4, 4)

    def eps(z, a):
        s = torch.sigmoid(a).view(-1, 1, 1, 1)
        return torch.sqrt(1 - s) * z / (s * v + 1 - s) * torch.tanh(z).pow(2).add(1.0).sqrt()

    den = Denoiser.from_eps(eps)
    g = torch.Generator().manual_seed(12)
    x_T, noise = torch.randn(6, 1, 4, 4, generator=g), torch.randn(50, 6, 1, 4, 4, generator=g)
    seq = SAMPLERS["ddpm"](den, x_T, noise=noise, steps=50)
    par = SAMPLERS[name](den, x_T, noise=noise, steps=50, tolerance=1e-6, window=16, **params)
    assert par.converged and par.samples.shape == x_T.shape
    assert (par.samples - seq.samples).abs().max().item() < 1e-4
    fast = SAMPLERS[name](den, x_T, noise=noise, steps=50, tolerance=0.1, **params)
    assert fast.converged and fast.iterations < 50
