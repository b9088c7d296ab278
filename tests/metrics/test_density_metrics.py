"""Exact-density metrics: `data_nll` (cross-entropy under the exact data
density) and `kl` (KL(p_model || p_data) = cross-entropy - kNN entropy); datasets declare their
density and a suite asking for one on a dataset without it exits 2 before any work."""
from __future__ import annotations

import math

import pytest
import torch
import yaml
from click.testing import CliRunner
from scipy import stats

import fault_components
from cdlbench import DATASETS, METRICS
from cdlbench.cli import cli
from cdlbench.datasets.mixture import GaussianMixture
from cdlbench.metrics.kl import kl_model_data, kth_neighbour_distance, knn_entropy


def _build(name, **params):
    return METRICS.build(name, params, device=torch.device("cpu"), cache_dir=None, reference_key="x")


def test_datasets_declare_their_density():
    with_density = {e.name for e in DATASETS.entries() if e.spec.exact_density}
    assert {"gmm1d", "8gaussians"} <= with_density
    assert not {"moons", "checkerboard", "dino", "digits"} & with_density


def test_data_nll_is_the_mean_negative_log_pdf():
    ds = DATASETS["gmm1d"]()
    x = ds.sample(500, torch.Generator().manual_seed(0))
    truth = -stats.norm.logpdf(x.double().numpy()[:, :, None], [-5.0, 5.0], 1.0)
    truth = -(math.log(0.5) + torch.logsumexp(torch.from_numpy(-truth)[:, 0], dim=1)).mean().item()
    assert _build("data_nll")(x, x, dataset=ds) == pytest.approx(truth, rel=1e-12)
    assert _build("data_nll", n_samples=10)(x, x, dataset=ds) != pytest.approx(truth, rel=1e-6)


def test_kl_of_gaussians_matches_the_closed_form():
    # p_model = N(mu, s^2), p_data = N(0, 1): KL = -log s + (s^2 + mu^2) / 2 - 1/2
    data = GaussianMixture([[0.0]], 1.0)
    g = torch.Generator().manual_seed(1)
    for mu, s in ((0.0, 1.0), (0.5, 0.8), (1.0, 1.5)):
        x = torch.randn((4000, 1), generator=g, dtype=torch.float64) * s + mu
        truth = -math.log(s) + (s * s + mu * mu) / 2 - 0.5
        # the cross-entropy term's standard error (from the samples), 4 times, plus 0.04 for the
        # kNN entropy (sd ~0.01 at N = 4000, k = 5 over 20 seeds; its 1-D bias is below that)
        se = data.log_density(x).std().item() / math.sqrt(x.shape[0])
        assert kl_model_data(x, data, 5) == pytest.approx(truth, abs=4 * se + 0.04), (mu, s)


def test_kl_of_samples_from_the_data_law_is_near_zero_in_2d():
    ds = DATASETS["8gaussians"]()
    x = ds.sample(2000, torch.Generator().manual_seed(2))
    kl = _build("kl")(x, x, dataset=ds)
    # the kNN entropy smooths the narrow components (std 0.2): a positive bias of ~0.03 nats at N = 2000
    assert -0.03 < kl < 0.1
    assert _build("kl")(x * 1.6 + 0.7, x, dataset=ds) > 1.0


def test_knn_entropy_of_a_gaussian_and_blocked_neighbours():
    x = torch.randn((3000, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert knn_entropy(x, 5) == pytest.approx(1 + math.log(2 * math.pi), abs=0.05)   # sd ~0.02
    assert torch.equal(kth_neighbour_distance(x[:500], 3), kth_neighbour_distance(x[:500], 3, block=11))
    assert math.isnan(knn_entropy(torch.zeros((10, 2)), 2))                           # atoms: no density


def test_density_metrics_refuse_a_dataset_without_a_density():
    with pytest.raises(ValueError, match="exact density"):
        _build("kl")(torch.zeros((5, 2)), None, dataset=DATASETS["moons"]())


@pytest.mark.parametrize("metric", ["data_nll", "kl"])
def test_suite_with_a_density_metric_on_data_without_one_exits_2(tmp_path, metric):
    suite = {**fault_components.TINY_SUITE, "seeds": [0], "metrics": [{"name": "mmd"}, {"name": metric}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and "metrics[1].name" in result.output
    assert "exact density" in result.output and "gmm1d" in result.output and "8gaussians" in result.output
    assert not (tmp_path / "out").exists()
