"""The fast sequential solvers (DPM-Solver++, UniPC, iPNDM; docs/samplers-fast.md) on the exact
8-Gaussian mixture denoiser (closed-form score, so no training is involved), in float64:
- their first-order members are DDIM;
- peer agreement with diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler on the same
  grid, x_T and denoiser (the max |difference| is what docs/samplers-fast.md reports);
- convergence order against a fine-step solution of the probability-flow ODE;
- their schedules and suite validation."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from cdlbench import DATASETS, SAMPLERS, Denoiser
from cdlbench.diffusion.schedules import ddpm_logsnr, karras_sigmas
from cdlbench.samplers.ddpm_grid import ddpm_grid
from cdlbench.samplers.dpm_solver_pp import dpm_solver_pp_update, step_order
from cdlbench.samplers.schedules_fast import SCHEDULES, schedule_logsnr, solver_times
from cdlbench.suite import SuiteError, parse_suite

N = 256


@pytest.fixture(scope="module")
def mixture():
    data = DATASETS["8gaussians"]()
    return data, Denoiser.from_eps(data.exact_eps)


def start(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ schedules
def test_schedules_are_declared_grids():
    ends = ddpm_logsnr()
    for schedule in SCHEDULES:
        for steps in (1, 5, 20):
            a = schedule_logsnr(schedule, steps)
            assert a.shape == (steps + 1,) and a.dtype == torch.float64 and a[-1] == math.inf
            assert bool((a[1:] > a[:-1]).all()), (schedule, a)              # noise decreases step by step
    torch.testing.assert_close(schedule_logsnr("ddpm", 10)[:-1], ddpm_grid(10).logsnr, rtol=0, atol=0)
    lu = schedule_logsnr("logsnr-uniform", 7)[:-1]
    assert lu[0] == ends[-1] and abs(lu[-1] - ends[0]) < 1e-12
    torch.testing.assert_close(lu[1:] - lu[:-1], torch.full((6,), float(ends[0] - ends[-1]) / 6, dtype=torch.float64))
    sig = karras_sigmas(9, math.exp(-0.5 * float(ends[0])), math.exp(-0.5 * float(ends[-1])), 7.0)
    torch.testing.assert_close(torch.exp(-0.5 * schedule_logsnr("karras", 9)), sig, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="schedule must be one of ddpm, logsnr-uniform, karras"):
        schedule_logsnr("cosine", 10)


SUITE = {"name": "fast", "seeds": [0], "device": "cpu", "dataset": {"name": "8gaussians", "n_train": 500},
         "model": {"name": "mlp", "width": 16, "blocks": 1}, "train": {"steps": 30, "batch_size": 32},
         "losses": {"name": "ddpm"}, "metrics": {"name": "mmd", "bandwidth": 0.5, "n_samples": 64}}


@pytest.mark.parametrize("name", ["dpm_solver_pp", "unipc", "ipndm"])
def test_suite_validation(name):
    for schedule in SCHEDULES:
        parse_suite({**SUITE, "samplers": {"name": name, "steps": 10, "schedule": schedule}})
    with pytest.raises(SuiteError, match=r"samplers.schedule.*one of ddpm, logsnr-uniform, karras"):
        parse_suite({**SUITE, "samplers": {"name": name, "schedule": "cosine"}})
    with pytest.raises(SuiteError, match=r"samplers.order.*must be one of"):
        parse_suite({**SUITE, "samplers": {"name": name, "order": 7}})
    with pytest.raises(SuiteError, match="steps.*1000-step DDPM grid"):        # the strided DDPM grid
        parse_suite({**SUITE, "samplers": {"name": name, "steps": 2000, "schedule": "ddpm"}})
    parse_suite({**SUITE, "samplers": {"name": name, "steps": 2000, "schedule": "karras"}})   # a continuous one


# ------------------------------------------------------------------ first order = DDIM
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_first_order_members_are_ddim(mixture, steps):
    """DPM-Solver++(1), UniP-1 and iPNDM-1 are DDIM (eta = 0) written in other variables."""
    _, den = mixture
    x_T = start(1)
    ddim = SAMPLERS["ddim"](den, x_T, steps=steps).samples
    for name, params in (("dpm_solver_pp", {"order": 1}), ("unipc", {"order": 1, "corrector": False}),
                         ("ipndm", {"order": 1})):
        out = SAMPLERS[name](den, x_T, steps=steps, **params)
        assert out.nfe == steps and out.iterations == steps
        assert (out.samples - ddim).abs().max().item() < 1e-12, name     # float64 round-off (measured 1e-14)


def test_unip2_bh2_is_dpm_solver_pp_2m(mixture):
    """With B(h) = 1 - e^-h and a_1 = 1/2, UniP-2 is Algorithm 2 of DPM-Solver++ term for term."""
    _, den = mixture
    x_T = start(7)
    for schedule in SCHEDULES:
        for steps in (3, 10, 20):
            a = SAMPLERS["unipc"](den, x_T, steps=steps, order=2, corrector=False, schedule=schedule).samples
            b = SAMPLERS["dpm_solver_pp"](den, x_T, steps=steps, order=2, schedule=schedule).samples
            assert (a - b).abs().max().item() < 1e-12, (schedule, steps)


def test_ipndm_weights_are_adams_bashforth():
    from cdlbench.samplers.ipndm import WEIGHTS
    table = {1: ([1], 1), 2: ([3, -1], 2), 3: ([23, -16, 5], 12), 4: ([55, -59, 37, -9], 24)}   # the classical table
    for q, (num, den) in table.items():
        assert WEIGHTS[q] == pytest.approx([n / den for n in num], abs=1e-15)


# ------------------------------------------------------------------ peers: diffusers
@pytest.fixture(scope="module")
def peers():
    """diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler, in a version that has the
    settings these tests use (final_sigmas_type, use_lu_lambdas, custom timesteps; 0.42 measured)."""
    diffusers = pytest.importorskip("diffusers")
    dpm, unipc = diffusers.DPMSolverMultistepScheduler, diffusers.UniPCMultistepScheduler
    needed = {"final_sigmas_type", "use_lu_lambdas"} - set(inspect.signature(dpm.__init__).parameters)
    needed |= {"final_sigmas_type"} - set(inspect.signature(unipc.__init__).parameters)
    if needed or "timesteps" not in inspect.signature(dpm.set_timesteps).parameters:
        pytest.skip(f"diffusers {diffusers.__version__} lacks {sorted(needed) or 'set_timesteps(timesteps=)'}")
    return dpm, unipc


def _scheduler(cls, steps: int, schedule: str, **config):
    """A diffusers multistep scheduler on the DDPM linear betas with `schedule`'s grid built by
    diffusers itself where it can (UniPC has no log-SNR-uniform option: the grid is replaced anyway);
    returns it with its own sigmas (before _run_peer replaces them)."""
    kw = {"use_karras_sigmas": schedule == "karras"}
    if schedule == "logsnr-uniform" and "use_lu_lambdas" in inspect.signature(cls.__init__).parameters:
        kw["use_lu_lambdas"] = True
    sch = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
              final_sigmas_type="zero", **kw, **config)
    if schedule == "ddpm" and "timesteps" in inspect.signature(cls.set_timesteps).parameters:
        sch.set_timesteps(timesteps=ddpm_grid(steps).timesteps.tolist())
    else:
        sch.set_timesteps(steps)
    return sch, sch.sigmas.double().clone()


def _run_peer(sch, den_data, x_T: torch.Tensor, schedule: str, steps: int, inputs: list | None = None):
    """Run a diffusers scheduler on cdlbench's own float64 grid (sigma_VE = exp(-a/2)) with the exact
    denoiser evaluated at that grid's log-SNR. Returns its final sample."""
    a = schedule_logsnr(schedule, steps)
    sch.sigmas = torch.exp(-0.5 * a)
    sch.timesteps = torch.arange(steps - 1, -1, -1)                   # labels only: steps are indexed in order
    x = x_T.clone()
    for j, t in enumerate(sch.timesteps):
        if inputs is not None:
            inputs.append(x.clone())
        eps = den_data.exact_eps(x, torch.full((x.shape[0],), float(a[j]), dtype=x.dtype))
        x = sch.step(eps, t, x).prev_sample
    return x


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_dpm_solver_pp_2m_agrees_with_diffusers(mixture, peers, schedule):
    data, den = mixture
    x_T = start(2)
    for steps in (5, 10, 20):                      # 20: above diffusers' lower_order_final threshold (15)
        sch, own_sigmas = _scheduler(peers[0], steps, schedule,
                                     algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
        mine = torch.exp(-0.5 * schedule_logsnr(schedule, steps))
        # diffusers builds the same grid from float32 betas: its cumulative product drifts by up to
        # 8.3e-5 relative at high noise (measured), which is why the trajectories below share our grid
        assert ((own_sigmas[:-1] - mine[:-1]).abs() / mine[:-1]).max() < 2e-4 and own_sigmas[-1] == 0
        peer = _run_peer(sch, data, x_T, schedule, steps)
        ours = SAMPLERS["dpm_solver_pp"](den, x_T, steps=steps, order=2, schedule=schedule).samples
        # diffusers' step casts the sample to float32 (6e-8 relative per step, on |x| up to ~5):
        # measured max 8.6e-6 over 5, 10, 20 steps and the three schedules; ours stays float64
        assert (peer - ours).abs().max().item() < 5e-5, (schedule, steps)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_dpm_solver_pp_3m_differs_from_diffusers_only_by_its_d2_factor(mixture, peers, schedule):
    """Step by step on diffusers' own trajectory: every diffusers 3M step equals ours except that its
    second difference D2 lacks the factor 2 of the Taylor expansion (docs/samplers-fast.md); the
    first- and second-order steps agree outright."""
    data, _ = mixture
    steps = 20
    sch, _ = _scheduler(peers[0], steps, schedule,
                        algorithm_type="dpmsolver++", solver_order=3, lower_order_final=True)
    inputs = []
    _run_peer(sch, data, start(3), schedule, steps, inputs)
    times = solver_times(schedule, steps)
    m = [(x - times.sigma[i] * data.exact_eps(x, torch.full((N,), times.logsnr[i], dtype=x.dtype))) / times.alpha[i]
         for i, x in enumerate(inputs)]
    third_order_gap = 0.0
    for i in range(steps - 1):
        p = step_order(3, i, steps, True)
        ours = dpm_solver_pp_update(times, i, inputs[i], m[i::-1][:3], p)
        if p == 3:
            h, r0, r1 = times.h(i), times.h(i - 1) / times.h(i), times.h(i - 2) / times.h(i)
            d2_half = ((m[i] - m[i - 1]) / r0 - (m[i - 1] - m[i - 2]) / r1) / (r0 + r1)
            e3 = (0.5 * h * h - h - math.expm1(-h)) / (h * h)
            gap = times.alpha[i + 1] * e3 * d2_half
            third_order_gap = max(third_order_gap, gap.abs().max().item())
            ours = ours - gap
        # float32 sample inside diffusers' step: |x| up to ~5 times 6e-8 (measured max 2.8e-7)
        assert (inputs[i + 1] - ours).abs().max().item() < 1e-6, (schedule, i, p)
    assert third_order_gap > 1e-4                  # the factor matters at 20 steps (the test can fail)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_unipc_bh2_agrees_with_diffusers(mixture, peers, schedule, order):
    data, den = mixture
    x_T = start(4)
    for steps in (5, 10, 20):
        sch, _ = _scheduler(peers[1], steps, schedule,
                            solver_order=order, solver_type="bh2", predict_x0=True, lower_order_final=True)
        peer = _run_peer(sch, data, x_T, schedule, steps)
        ours = SAMPLERS["unipc"](den, x_T, steps=steps, order=order, variant="bh2", schedule=schedule).samples
        # both in float64 (diffusers' UniPC keeps the sample's dtype): measured max 9.2e-14
        assert (peer - ours).abs().max().item() < 1e-11, (schedule, order, steps)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_bh1_agrees_with_diffusers_before_its_last_step(mixture, peers, order):
    """diffusers' bh1 multiplies B(h) = -h = -inf by an empty sum on the last step to sigma = 0 and
    returns NaN; its last step is the data prediction at the last state it was given, which is what
    ours returns."""
    data, den = mixture
    x_T, steps = start(5), 10
    sch, _ = _scheduler(peers[1], steps, "karras", solver_order=order,
                        solver_type="bh1", predict_x0=True, lower_order_final=True)
    inputs = []
    _run_peer(sch, data, x_T, "karras", steps, inputs)
    times = solver_times("karras", steps)
    last = inputs[-1]
    eps = data.exact_eps(last, torch.full((N,), times.logsnr[-2], dtype=last.dtype))
    peer = (last - times.sigma[-2] * eps) / times.alpha[-2]
    ours = SAMPLERS["unipc"](den, x_T, steps=steps, order=order, variant="bh1", schedule="karras").samples
    assert torch.isfinite(ours).all()
    assert (peer - ours).abs().max().item() < 1e-11          # float64 both: measured max 5.1e-13


# ------------------------------------------------------------------ convergence order
STEPS = (40, 80, 160)


@pytest.fixture(scope="module")
def exact_solution(mixture):
    """The probability-flow ODE solution from x_T on the logsnr-uniform ends: UniPC-3 (fourth
    order) with 2000 steps, confirmed by DPM-Solver++(3M) with 3000 steps."""
    _, den = mixture
    x_T = start(6)
    ref = SAMPLERS["unipc"](den, x_T, steps=2000, order=3, schedule="logsnr-uniform").samples
    other = SAMPLERS["dpm_solver_pp"](den, x_T, steps=3000, order=3, schedule="logsnr-uniform").samples
    # 3M's own error at 3000 steps is about 2.4e-3 (40/3000)^3 = 5.7e-9 (measured 5.8e-9)
    assert (ref - other).pow(2).mean().sqrt().item() < 3e-8
    return x_T, ref


def _slopes(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize("name, params, order", [
    ("dpm_solver_pp", {"order": 1}, 1), ("dpm_solver_pp", {"order": 2}, 2), ("dpm_solver_pp", {"order": 3}, 3),
    ("unipc", {"order": 1}, 2), ("unipc", {"order": 2}, 3), ("unipc", {"order": 3}, 4),
    ("unipc", {"order": 2, "variant": "bh1"}, 3), ("unipc", {"order": 3, "corrector": False}, 3),
    ("ipndm", {"order": 4}, 2),        # equal-step weights on unequal steps: second order (module docstring)
])
def test_convergence_order(mixture, exact_solution, name, params, order):
    """RMS error against the exact ODE solution falls as NFE^-order (slopes per doubling 40 -> 80 ->
    160, measured: DPM-Solver++ 1.03 1.01 / 1.81 1.91 / 2.87 3.03; UniPC 1.79 1.89 / 2.59 2.88 /
    4.09 4.21, bh1 2.67 2.94, UniP-3 2.87 3.03; iPNDM-4 2.36 1.88)."""
    _, den = mixture
    x_T, ref = exact_solution
    errors = [(SAMPLERS[name](den, x_T, steps=s, schedule="logsnr-uniform", **params).samples - ref)
              .pow(2).mean().sqrt().item() for s in STEPS]
    slope = sum(_slopes(errors)) / 2
    assert order - 0.4 < slope < order + 0.7, (name, params, errors, _slopes(errors))


def test_diffusers_3m_is_second_order(mixture, peers, exact_solution):
    """The D2 factor measured: over NFE 80 -> 160 -> 320 diffusers' 3M converges at slopes 2.32,
    2.22 (1.95 at 640) where ours holds 3.03, 3.04."""
    data, den = mixture
    x_T, ref = exact_solution
    theirs, ours = [], []
    for s in (80, 160, 320):
        sch, _ = _scheduler(peers[0], s, "logsnr-uniform", algorithm_type="dpmsolver++",
                            solver_order=3, lower_order_final=True)
        theirs.append((_run_peer(sch, data, x_T, "logsnr-uniform", s) - ref).pow(2).mean().sqrt().item())
        ours.append((SAMPLERS["dpm_solver_pp"](den, x_T, steps=s, order=3, schedule="logsnr-uniform").samples
                     - ref).pow(2).mean().sqrt().item())
    slope_theirs, slope_ours = sum(_slopes(theirs)) / 2, sum(_slopes(ours)) / 2
    assert 1.6 < slope_theirs < 2.5 and slope_ours > 2.8, (theirs, ours)
    assert ours[-1] < 0.5 * theirs[-1]


def test_fast_solvers_beat_ddim_at_ten_evaluations(mixture, exact_solution):
    _, den = mixture
    x_T, ref = exact_solution
    err = {}
    for label, name, params in (("ddim", "dpm_solver_pp", {"order": 1}), ("2m", "dpm_solver_pp", {"order": 2}),
                                ("3m", "dpm_solver_pp", {"order": 3}), ("unipc", "unipc", {"order": 2}),
                                ("ipndm", "ipndm", {"order": 4})):
        out = SAMPLERS[name](den, x_T, steps=10, schedule="logsnr-uniform", **params)
        assert out.nfe == 10
        err[label] = (out.samples - ref).pow(2).mean().sqrt().item()
    assert all(err[k] < 0.75 * err["ddim"] for k in err if k != "ddim"), err
