"""score_error (Figure 1): exact denoiser -> 0; a known perturbation -> its analytic error; the
high-density region holds its coverage; the sequential path stays in it, Picard iterates do not;
and the runner passes the context and saves the grid and paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdlbench import DATASETS, SAMPLERS, Denoiser
from cdlbench.diffusion.schedules import ddpm_logsnr
from cdlbench.metrics.score_error import ScoreError, hdr_thresholds, noised_log_density


@pytest.fixture(scope="module")
def gmm():
    return DATASETS["gmm1d"]()


def inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=g), torch.randn(1000, n, 1, generator=g)


def replayer(name: str, x_T, noise):
    return lambda den, n: SAMPLERS[name](den, x_T[:n], noise=noise[:, :n])


def test_exact_denoiser_has_zero_score_error(gmm):
    x_T, noise = inputs(32)
    for sampler in ("picard", "ddpm"):
        m = ScoreError(z_points=61, t_stride=20, n_paths=16)
        out = m(x_T, x_T, denoiser=Denoiser.from_eps(gmm.exact_eps), dataset=gmm,
                replay=replayer(sampler, x_T, noise))
        for key in ("id", "ood", "path", "path_ood"):
            assert out[key] == pytest.approx(0.0, abs=1e-6), (sampler, key)


def test_constant_eps_offset_gives_analytic_error(gmm):
    """eps_model = eps_true + c  =>  |score error| = c / sqrt(s(-a)) at every z."""
    c = 0.05
    den = Denoiser.from_eps(lambda z, a: gmm.exact_eps(z, a) + c)
    m = ScoreError(z_points=41, t_stride=50)
    out = m(torch.zeros(4, 1), torch.zeros(4, 1), denoiser=den, dataset=gmm)
    t, err, inside = m.artifacts["t"], m.artifacts["grid"], m.artifacts["inside"]
    expect = c / torch.sigmoid(-ddpm_logsnr()[torch.from_numpy(t)]).sqrt().numpy()       # [nt]
    assert np.allclose(err, expect[:, None], rtol=1e-4)
    full = np.broadcast_to(expect[:, None], err.shape)
    assert out["id"] == pytest.approx(full[inside].mean(), rel=1e-4)
    assert out["ood"] == pytest.approx(full[~inside].mean(), rel=1e-4)
    assert 0 < inside.mean() < 1


def test_high_density_region_holds_its_coverage(gmm):
    a = ddpm_logsnr()[torch.tensor([0, 300, 999])]
    levels = hdr_thresholds(gmm, a, coverage=0.95, n=4000, seed=1)
    g = torch.Generator().manual_seed(7)
    for i in range(3):
        x = gmm.sample(4000, g).double()
        z = torch.sigmoid(a[i]).sqrt() * x + torch.sigmoid(-a[i]).sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        inside = noised_log_density(gmm, z, a[i].expand(4000)) >= levels[i]
        assert inside.double().mean().item() == pytest.approx(0.95, abs=0.015)


def test_sequential_path_stays_in_distribution_picard_iterates_do_not(gmm):
    x_T, noise = inputs(64)
    den = Denoiser.from_eps(gmm.exact_eps)
    frac = {}
    for sampler in ("ddpm", "picard"):
        m = ScoreError(z_points=31, t_stride=50, coverage=0.99, n_paths=64, plot_paths=4)
        frac[sampler] = m(x_T, x_T, denoiser=den, dataset=gmm, replay=replayer(sampler, x_T, noise))["path_ood_fraction"]
        paths = m.artifacts["paths"]
        assert paths.shape[1:] == (1000, 4)
        if sampler == "ddpm":
            assert paths.shape[0] == 1 and not np.isnan(paths).any()
        else:
            assert paths.shape[0] > 1 and not np.isnan(paths[0]).any()        # iteration 1 spans all steps
    assert frac["ddpm"] == pytest.approx(0.01, abs=0.01)
    assert frac["picard"] > 3 * frac["ddpm"]


def test_runner_records_parts_and_saves_grid_and_paths(tmp_path):
    from cdlbench.suite import parse_suite
    from cdlbench.report import load, render
    from cdlbench.run.coordinator import Runner

    suite = parse_suite({
        "name": "g1d", "seeds": [0], "device": "cpu", "dataset": {"name": "gmm1d", "n_train": 2000},
        "model": {"name": "mlp", "width": 16, "blocks": 1}, "train": {"steps": 20, "batch_size": 32},
        "losses": {"name": "ddpm"},
        "samplers": [{"name": "picard", "steps": 200, "tolerance": 0.5}, {"name": "ddpm", "steps": 200}],
        "metrics": [{"name": "mmd", "n_samples": 32},
                    {"name": "score_error", "z_points": 21, "t_stride": 100, "n_paths": 8, "plot_paths": 2}]})
    summary = Runner(suite, tmp_path / "run", progress=False, log=lambda *a: None).execute()
    assert not summary.failed, summary.failed
    df = load([tmp_path / "run"])
    parts = {"score_error_id", "score_error_ood", "score_error_path", "score_error_path_ood",
             "score_error_path_ood_fraction"}
    assert parts <= set(df["metric"])
    assert (df[df.metric.isin(parts)]["value"] >= 0).all()
    files = sorted((tmp_path / "run" / "samples").glob("*.npz"))
    assert len(files) == 2
    with np.load(files[0]) as z:
        assert {"cell", "samples", "data", "score_error.grid", "score_error.paths"} <= set(z.files)
        assert z["score_error.grid"].shape == (10, 21) and z["samples"].shape == (32, 1)
    text = render([tmp_path / "run"], "markdown", plots=tmp_path / "plots")
    assert "score error, OOD" in text
    assert (tmp_path / "plots" / "figure1_score_error_gmm1d_n_train=2000.png").stat().st_size > 5000
