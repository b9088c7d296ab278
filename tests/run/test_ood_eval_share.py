"""Diagnostic of the paper's mechanism: the share of a sampler's denoiser
evaluations at log-SNRs outside the loss's training range, counted in batched form."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cdlbench import LOSSES, SAMPLERS
from cdlbench.denoiser import Denoiser, NoiseLevelCounter
from cdlbench.run.distributed import World
from cdlbench.run.sampling import CellSampler


class RecordingNet:
    """An eps network (x -> 0.9 x) that keeps the log-SNR of every row it is called on."""

    def __init__(self):
        self.levels = []

    def __call__(self, z, a):
        self.levels.append(a.detach().double().clone())
        return 0.9 * z


def _outside(levels, lo, hi):
    a = torch.cat(levels)
    return ((a < lo) | (a > hi)).double().mean().item()


def test_counter_counts_rows_in_both_views_once():
    counter = NoiseLevelCounter(-2.0, 3.0)
    den = Denoiser.from_eps(lambda z, a: z)
    den.levels = counter
    den.eps(torch.zeros(4, 2), torch.tensor([-5.0, 0.0, 2.9, 4.0]))
    den.x0(torch.zeros(3, 2), torch.tensor([1.0, math.exp(2.0), math.exp(-0.5)]))   # a = 0, -4, 1: via eps, once
    assert counter.total == 7 and counter.share() == pytest.approx(3 / 7)
    edm = Denoiser.from_x0(lambda x, s: x)
    edm.levels = NoiseLevelCounter(-2.0, 3.0)
    edm.x0(torch.zeros(2, 2), torch.tensor([math.exp(-2.0), 1.0]))                  # a = 4 (outside), 0
    assert edm.levels.total == 2 and edm.levels.share() == 0.5
    assert edm.accelerated(inference_mode=False).levels is edm.levels
    assert math.isnan(NoiseLevelCounter(0, 1).share())


@pytest.mark.parametrize("name,params", [("ddpm", {}), ("itd", {}), ("cdl", {"base": "ddpm", "mc_points": 16}),
                                         ("cdl", {"base": "itd", "mc_points": 16}), ("edm", {})])
def test_training_range_holds_what_the_loss_trains_on(name, params):
    loss = LOSSES.build(name, params, data_var=torch.full((2,), 0.5), shape=(2,))
    lo, hi = loss.training_logsnr_range()
    net = RecordingNet()
    x0 = torch.randn((256, 2), generator=torch.Generator().manual_seed(0))
    for step in range(20):
        loss(Denoiser.from_eps(net), x0, generator=torch.Generator().manual_seed(step))
    a = torch.cat(net.levels)
    if name == "edm":               # log-normal sigma: the central +-3 sd hold 99.7% of the draws
        assert _outside(net.levels, lo - 1e-6, hi + 1e-6) < 0.01
    else:                           # every evaluation inside, and the range is no wider than needed
        assert lo - 1e-4 <= a.min().item() and a.max().item() <= hi + 1e-4
        assert a.min().item() < lo + 0.5 * (hi - lo) / 4 and a.max().item() > hi - (hi - lo) / 4


def _sampler(name, params, n=64, training_range=(-10.1, 9.2)):
    job = SimpleNamespace(sampler=SimpleNamespace(name=name, params={**{p.name: p.default for p in
                          SAMPLERS.entry(name).parameters()}, **params}), seed=0, n_samples=n, sample_batch=64)
    net = RecordingNet()
    cell = CellSampler(job, Denoiser.from_eps(net), (2,), torch.device("cpu"), World(), None, training_range)
    return cell, net


@pytest.mark.parametrize("name,params", [("heun", {"steps": 12}), ("ddpm", {"steps": 50}),
                                         ("picard", {"steps": 30, "tolerance": 0.1})])
def test_cell_share_is_that_of_the_networks_own_inputs(name, params):
    lo, hi = -4.0, 6.0
    cell, net = _sampler(name, params, training_range=(lo, hi))
    cell.sample(False, False)
    warm_up = net.levels.pop(0)                     # the warm-up call at a = 0 is not the sampler's
    assert bool((warm_up == 0).all())
    expected = _outside(net.levels, lo - NoiseLevelCounter.RANGE_SLACK, hi + NoiseLevelCounter.RANGE_SLACK)
    assert cell.ood_share() == pytest.approx(expected, abs=1e-12)
    assert cell.levels.total == sum(a.numel() for a in net.levels)
    assert cell.denoiser.levels is None             # detached: metrics' evaluations do not count
    if name == "heun":                              # EDM grid reaches sigma_min = 0.002, a = 12.4 > 6
        assert 0 < cell.ood_share() < 1


def test_no_range_no_record():
    cell, _ = _sampler("ddpm", {"steps": 5}, training_range=None)
    cell.sample(False, False)
    assert cell.ood_share() is None


def test_a_run_records_the_share_and_multi_bandwidth_mmd(tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    import fault_components
    from cdlbench.cli import cli

    suite = {**fault_components.TINY_SUITE, "seeds": [0], "losses": [{"name": "ddpm"}],
             "samplers": [{"name": "ddpm", "steps": 20}, {"name": "heun", "steps": 8}],
             "metrics": [{"name": "mmd", "bandwidths": [0.01, 0.1], "permutations": 19, "n_samples": 100},
                         {"name": "energy", "n_samples": 100}]}
    path, out = tmp_path / "suite.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    res = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    share = {r["sampler"]: r["value"] for r in rows if r["metric"] == "ood_eval_share"}
    assert share["ddpm[steps=20]"] == 0.0            # the DDPM grid is the DDPM loss's own
    assert 0 < share["heun[steps=8]"] < 1            # the EDM grid ends at a = 12.4, beyond the grid's 9.2
    mmd = {(r["sampler"], r["metric"], r["p_metric_bandwidth"]) for r in rows if r["metric"].startswith("mmd")}
    assert len(mmd) == 2 * 2 * 2                     # samplers x (value, p-value) x bandwidths
    assert CliRunner().invoke(cli, ["verify", str(out)]).exit_code == 0
