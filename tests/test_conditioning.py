"""Class conditioning end to end, against closed forms: a Gaussian mixture whose class is its
component has an exact class-conditional denoiser (that component's alone), so conditional
samplers, the conditional ITD likelihood and the conditional CDL classifier have known answers.
Mislaid labels (a wrong row layout in Picard, ITD or CDL) would move every one of them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdlbench import DATASETS, LOSSES, SAMPLERS, Denoiser
from cdlbench.suite import SuiteError, parse_suite
from cdlbench.diffusion import default_proposal, log_likelihood
from cdlbench.losses.cdl import classifier_logit
from cdlbench.run.coordinator import Runner
from cdlbench.run.sampling import balanced_labels

N_CLASSES = 8


@pytest.fixture(scope="module")
def gauss8():
    return DATASETS["8gaussians"]()


@pytest.fixture(scope="module")
def exact(gauss8):
    return Denoiser.from_eps(gauss8.exact_eps, num_classes=N_CLASSES)


def _component_log_density(data, x, c, zeta=None):
    """log N(x; mu_c, v I), or of the component noised at log-SNR zeta (VP): N(sqrt(s) mu, s v + s(-zeta))."""
    mu, v = data.means[c].double(), data.variances[c].double()
    if zeta is not None:
        s = torch.sigmoid(torch.as_tensor(zeta, dtype=torch.float64))
        mu, v = s.sqrt().unsqueeze(-1) * mu, s * v + (1 - s)
    d = x.shape[1]
    return -0.5 * ((x.double() - mu) ** 2).sum(1) / v - 0.5 * d * torch.log(2 * math.pi * v)


def test_balanced_labels_follow_the_global_sample_index():
    whole = balanced_labels(0, 20, 3, torch.device("cpu"))
    parts = torch.cat([balanced_labels(a, b, 3, torch.device("cpu")) for a, b in ((0, 7), (7, 13), (13, 20))])
    assert torch.equal(whole, parts) and whole[:6].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("name,params", [("ddpm", {"steps": 250}), ("ddim", {"steps": 50}), ("heun", {"steps": 18}),
                                         ("euler", {"steps": 60}), ("picard", {"steps": 100, "tolerance": 0.01,
                                                                                 "chunk_size": 777})])
def test_conditional_samplers_draw_the_requested_component(gauss8, exact, name, params):
    n = 800
    labels = balanced_labels(0, n, N_CLASSES, torch.device("cpu"))
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[name](exact, x_T, generator=torch.Generator().manual_seed(1), class_labels=labels, **params)
    x = out.samples
    assert (gauss8.classify(x) == labels).float().mean().item() > 0.99
    for c in range(N_CLASSES):                       # mean of class c is mu_c (std of a mean of 100: 0.02)
        assert (x[labels == c].mean(0).double() - gauss8.means[c]).norm().item() < 0.08
    # negative control: the unconditional oracle puts samples anywhere on the circle
    free = SAMPLERS[name](Denoiser.from_eps(gauss8.exact_eps), x_T, generator=torch.Generator().manual_seed(1), **params)
    assert (gauss8.classify(free.samples) == labels).float().mean().item() < 0.3


def test_conditional_picard_tiny_tolerance_equals_sequential(exact):
    n, steps = 96, 200
    g = torch.Generator().manual_seed(3)
    x_T, noise = torch.randn(n, 2, generator=g), torch.randn(steps, n, 2, generator=g)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    seq = SAMPLERS["ddpm"](exact, x_T, noise=noise, steps=steps, class_labels=labels)
    # chunks of 1000 points cut windows of 96 samples mid-window: labels must be cut alike
    par = SAMPLERS["picard"](exact, x_T, noise=noise, steps=steps, tolerance=1e-6, window=40, chunk_size=1000,
                             class_labels=labels)
    assert par.converged
    assert (par.samples - seq.samples).abs().max().item() < 1e-4


def test_conditional_itd_likelihood_matches_the_component_density(gauss8, exact):
    g = torch.Generator().manual_seed(4)
    x, labels = gauss8.sample_labelled(12, g)
    data_var = torch.tensor([2.04, 2.04])
    # chunks of 50,000 points cut the 12 x 20,000 points mid-sample: labels must be cut alike
    est = log_likelihood(exact, x, data_var=data_var, n_points=20000, generator=g, chunk_size=50000, labels=labels)
    true = _component_log_density(gauss8, x, labels)
    assert (est.double() - true).abs().mean().item() < 0.1, (est, true)      # Monte-Carlo error ~0.05
    wrong = log_likelihood(exact, x, data_var=data_var, n_points=2000, generator=g, labels=(labels + 4) % N_CLASSES)
    assert (wrong.double() - true).mean().item() < -20        # the opposite component: far less likely


def test_conditional_cdl_classifier_logit_matches_closed_form(gauss8, exact):
    g = torch.Generator().manual_seed(5)
    y, labels = gauss8.sample_labelled(6, g)
    zeta = torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    proposal = default_proposal(torch.tensor([2.04, 2.04]), 2)
    b = 6000
    a = proposal.sample((6, b), g)
    eps = torch.randn(6, b, 2, generator=g)
    logit = classifier_logit(exact, y, zeta, a, eps, proposal, labels)
    true = _component_log_density(gauss8, y, labels) - _component_log_density(gauss8, y, labels, zeta)
    assert (logit.double() - true).abs().max().item() < 0.2, (logit, true)


@pytest.mark.parametrize("loss_name", ["ddpm", "edm", "itd"])
def test_losses_give_each_row_its_own_label(gauss8, loss_name):
    """One point per sample: the labelled loss equals the loss of a denoiser that knows each row's class."""
    g = torch.Generator().manual_seed(6)
    x, labels = gauss8.sample_labelled(64, g)
    loss = LOSSES.build(loss_name, {}, data_var=torch.tensor([2.04, 2.04]), shape=(2,))
    labelled = loss(Denoiser.from_eps(gauss8.exact_eps, num_classes=N_CLASSES), x,
                    generator=torch.Generator().manual_seed(7), labels=labels)
    bound = loss(Denoiser.from_eps(lambda z, a: gauss8.exact_eps(z, a, labels)), x,
                 generator=torch.Generator().manual_seed(7))
    assert torch.allclose(labelled.per_sample, bound.per_sample, rtol=1e-5, atol=1e-6)
    free = loss(Denoiser.from_eps(gauss8.exact_eps), x, generator=torch.Generator().manual_seed(7))
    assert labelled.per_sample.mean() < free.per_sample.mean()     # knowing the class lowers the error


def test_cdl_loss_with_labels_runs_and_differs_from_unlabelled(gauss8):
    g = torch.Generator().manual_seed(8)
    x, labels = gauss8.sample_labelled(32, g)
    loss = LOSSES.build("cdl", {"mc_points": 512}, data_var=torch.tensor([2.04, 2.04]), shape=(2,))
    cond = loss(Denoiser.from_eps(gauss8.exact_eps, num_classes=N_CLASSES), x,
                generator=torch.Generator().manual_seed(9), labels=labels)
    assert torch.isfinite(cond.per_sample).all() and 0 <= cond.parts["classifier_acc"] <= 1


def test_denoiser_and_networks_refuse_mismatched_labels():
    from cdlbench import MODELS

    net = MODELS.build("mlp", {"width": 16, "conditional": True}, shape=(2,), num_classes=3)
    d = Denoiser.wrap(net)
    z, a = torch.randn(4, 2), torch.zeros(4)
    assert d.num_classes == 3 and d.eps(z, a, torch.tensor([0, 1, 2, 0])).shape == (4, 2)
    with pytest.raises(ValueError, match="one per row"):
        d.eps(z, a, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs class labels"):
        d.eps(z, a)
    plain = Denoiser.wrap(MODELS.build("mlp", {"width": 16}, shape=(2,), num_classes=3))
    assert plain.num_classes == 0
    with pytest.raises(ValueError, match="unconditional"):
        plain.eps(z, a, torch.tensor([0, 1, 2, 0]))
    edm = Denoiser.wrap(MODELS.build("mlp", {"width": 16, "conditional": True, "precond": "edm"}, shape=(2,),
                                     num_classes=3))
    assert edm.num_classes == 3 and edm.x0(z, 1.0, torch.tensor([0, 1, 2, 0])).shape == (4, 2)
    labels = torch.tensor([2, 1, 0, 2])
    fast = d.accelerated(inference_mode=True)                  # the runner's sampling-only view
    assert fast.num_classes == 3 and torch.equal(fast.eps(z, a, labels), d.eps(z, a, labels).detach())
    assert not torch.equal(fast.eps(z, a, labels), fast.eps(z, a, labels.flip(0)))


COND_SUITE = {
    "name": "cond", "seeds": [0], "device": "cpu",
    "dataset": {"name": "8gaussians", "n_train": 20000},
    "model": {"name": "mlp", "width": 64, "conditional": True},
    "train": {"steps": 800, "batch_size": 256, "lr": 2.0e-3, "log_every": 100},
    "losses": [{"name": "ddpm"}],
    "samplers": [{"name": "ddpm", "steps": 100}, {"name": "picard", "steps": 100, "tolerance": 0.05}],
    "metrics": [{"name": "class_accuracy"}, {"name": "mmd", "n_samples": 400}],
}


def test_conditional_suite_trains_and_samples_the_requested_classes(tmp_path):
    suite = parse_suite(COND_SUITE, file="cond.yaml")
    summary = Runner(suite, tmp_path / "run", progress=False, log=lambda *a, **k: None).execute()
    assert not summary.failed and len(summary.done) == 2
    import json
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    acc = {r["sampler"]: r["value"] for r in rows if r["metric"] == "class_accuracy"}
    assert len(acc) == 2 and min(acc.values()) > 0.95, acc           # chance is 1/8
    for f in (tmp_path / "run" / "samples").glob("*.npz"):
        with np.load(f) as blob:
            x = torch.from_numpy(blob["samples"])
            saved = torch.from_numpy(blob["class_labels"])
        labels = balanced_labels(0, x.shape[0], N_CLASSES, torch.device("cpu"))
        assert torch.equal(saved, labels)
        assert (DATASETS["8gaussians"]().classify(x) == labels).float().mean() > 0.95


@pytest.mark.parametrize("change,field,message", [
    ({"model": {"name": "mlp"}}, "metrics[0].name", "is unconditional"),
    ({"dataset": {"name": "dino"}, "metrics": [{"name": "mmd"}]}, "model.conditional", "has no labels"),
    ({"dataset": {"name": "moons"}, "model": {"name": "mlp"}, "metrics": [{"name": "class_accuracy"}]},
     "metrics[0].name", "needs a dataset with a classifier"),
    ({"metrics": [{"name": "score_error"}]}, "metrics[0].name", "class-conditional"),
])
def test_conditional_suites_are_validated(change, field, message):
    raw = {**COND_SUITE, **change}
    with pytest.raises(SuiteError) as err:
        parse_suite(raw, file="cond.yaml")
    assert field in str(err.value) and message in str(err.value)
