"""Contract checks every registered sampler and metric must pass, written once against their specs
(cdlbench/specs.py). tests/samplers/test_contracts.py and tests/metrics/test_contracts.py run them
on every registered component, so a component added later gets them without editing a test;
tests/test_new_sampler_one_place.py calls them on a sampler that a test registers itself.

The oracle is the 8-Gaussian mixture, whose exact (class-conditional) denoiser is known in
closed form (cdlbench/datasets/toys.py), so the checks do not depend on any training."""
from __future__ import annotations

import torch

from cdlbench import DATASETS, METRICS, SAMPLERS, Denoiser
from cdlbench.specs import declared

N, CLASSES = 48, 8


def oracle():
    data = DATASETS["8gaussians"]()
    return data, Denoiser.from_eps(data.exact_eps), Denoiser.from_eps(data.exact_eps, num_classes=CLASSES)


def small_params(name: str) -> dict:
    """The sampler's defaults, with its step count cut to keep the check fast."""
    params = {p.name: p.default for p in SAMPLERS.entry(name).parameters()}
    if "steps" in params:
        spec = SAMPLERS.entry(name).spec
        params["steps"] = 40 if declared(spec.grid, params) == "ddpm" else 12
    if "window" in params:
        params["window"] = None
    return params


def inputs(params: dict, seed: int, n: int = N):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 2, generator=g)
    noise = torch.randn(params.get("steps", 1), n, 2, generator=g)
    return x_T, noise


def call(name: str, denoiser, x_T, noise, params: dict, labels=None, seed: int = 0):
    spec = SAMPLERS.entry(name).spec
    kwargs = dict(params)
    if spec.noise == "per_step":
        kwargs["noise"] = noise
    if labels is not None:
        kwargs["class_labels"] = labels
    return SAMPLERS[name](denoiser, x_T, generator=torch.Generator().manual_seed(seed), **kwargs)


def check_nfe(name: str) -> None:
    """The sampler's result counts what its spec declares (exactly, or at most for a bound)."""
    spec = SAMPLERS.entry(name).spec
    _, den, _ = oracle()
    params = small_params(name)
    x_T, noise = inputs(params, 0)
    out = call(name, den, x_T, noise, params)
    assert spec.nfe is not None, f"sampler {name!r} declares no NFE"
    count, bound = spec.nfe(params)
    if bound:
        assert 0 < out.nfe <= count, (name, out.nfe, count)
    else:
        assert out.nfe == count, (name, out.nfe, count)
    assert out.samples.shape == x_T.shape and bool(torch.isfinite(out.samples).all())


def check_uses_given_noise(name: str) -> None:
    """Same noise -> same samples; different noise -> different samples (stochastic samplers)."""
    spec = SAMPLERS.entry(name).spec
    _, den, _ = oracle()
    params = small_params(name)
    stochastic = {**params, **({"S_churn": 40.0} if "S_churn" in params else {}),
                  **({"eta": 1.0} if "eta" in params else {})}
    x_T, noise = inputs(stochastic, 1)
    a = call(name, den, x_T, noise, stochastic, seed=1)
    b = call(name, den, x_T, noise, stochastic, seed=2)        # another generator: the noise given wins
    assert torch.equal(a.samples, b.samples), f"{name}: same x_T and noise gave different samples"
    if spec.noise == "per_step" and declared(spec.stochastic, stochastic):
        _, other = inputs(stochastic, 2)
        c = call(name, den, x_T, other, stochastic, seed=1)
        assert (a.samples - c.samples).abs().max() > 1e-3, f"{name}: the given noise was ignored"


def check_class_labels(name: str) -> None:
    """A conditional sampler draws every sample from its requested component."""
    spec = SAMPLERS.entry(name).spec
    if not spec.conditional:
        return
    data, _, cond = oracle()
    params = small_params(name)
    x_T, noise = inputs(params, 3, n=8 * CLASSES)
    labels = torch.arange(x_T.shape[0]) % CLASSES
    out = call(name, cond, x_T, noise, params, labels=labels)
    assert (data.classify(out.samples) == labels).float().mean() > 0.95, name


def check_fixed_point(name: str) -> None:
    """A parallel sampler at its exact tolerance equals the sequential sampler it declares as its
    fixed point, fed the same noise."""
    spec = SAMPLERS.entry(name).spec
    if spec.fixed_point is None:
        return
    _, den, _ = oracle()
    params = {**small_params(name), **spec.exact_tolerance}
    twin, twin_params = spec.fixed_point(params)
    x_T, noise = inputs(params, 4)
    par = call(name, den, x_T, noise, params)
    seq = call(twin, den, x_T, noise, {**small_params(twin), **twin_params})
    assert par.converged, name
    assert (par.samples - seq.samples).abs().max() < 1e-4, (name, twin)


SAMPLER_CHECKS = (check_nfe, check_uses_given_noise, check_class_labels, check_fixed_point)


# ---------------------------------------------------------------- metrics
def metric_case(name: str):
    """(good kwargs, bad kwargs) for a metric on the oracle: samples from the data law vs samples
    displaced from it; context arguments as the metric's spec declares them."""
    spec = METRICS.entry(name).spec
    if "exact_score" in set(declared(spec.needs, {}) or ()):     # the 1-D mixture (its score grid is 1-D)
        data = DATASETS["gmm1d"]()
        den = Denoiser.from_eps(data.exact_eps)
    else:
        data, den, _ = oracle()
    g = torch.Generator().manual_seed(5)
    ref, good = data.sample(400, g), data.sample(400, g)
    bad = good * 1.6 + 0.7
    labels = torch.arange(400) % CLASSES
    ctx_good = {"denoiser": den, "dataset": data, "labels": data.classify(good), "replay": None, "result": None,
                "generator": torch.Generator().manual_seed(7)}
    ctx_bad = {**ctx_good, "labels": labels, "denoiser": Denoiser.from_eps(lambda z, a: 0.5 * data.exact_eps(z, a))}
    return (good, ref, ctx_good), (bad, ref, ctx_bad)


def check_metric_direction(name: str) -> None:
    """On the known case the better inputs score better in the declared direction; the unit and
    label are declared."""
    spec = METRICS.entry(name).spec
    needs = set(declared(spec.needs, {}) or ())
    if needs & {"images"}:
        return                  # image metrics: tests/test_fid.py (their own environment)
    assert isinstance(spec.unit, str) and (spec.label or spec.parts), name
    metric = METRICS.build(name, {}, device=torch.device("cpu"), cache_dir=None, reference_key="oracle")
    (good, ref, cg), (bad, _, cb) = metric_case(name)
    vg = metric(good, ref, **{k: cg[k] for k in spec.context})
    vb = metric(bad, ref, **{k: cb[k] for k in spec.context})
    pairs = [(vg[k], vb[k]) for k in vg if k in ("id", "ood")] if isinstance(vg, dict) else [(vg, vb)]
    for a, b in pairs:
        assert (a > b) if spec.higher_is_better else (a < b), (name, a, b)
