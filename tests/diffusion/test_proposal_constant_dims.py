"""The default ITD/CDL proposal is set by the dimensions that vary, not by the variance floor of
constant ones (docs/method.md section 2, default proposal), and exactly the trainings whose
proposal that changes get a new training config."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdlbench.diffusion.itd import VARIANCE_FLOOR, LogisticProposal, default_proposal

ROOT = Path(__file__).resolve().parents[2]


def _range(p: LogisticProposal) -> tuple[float, float]:
    return p.loc - p.clip * p.scale, p.loc + p.clip * p.scale


@pytest.mark.parametrize("constant", [0.0, VARIANCE_FLOOR, 1e-12])
def test_constant_dimensions_do_not_move_the_default_proposal(constant):
    g = torch.Generator().manual_seed(0)
    varying = torch.rand(10, generator=g, dtype=torch.float64) * 3 + 0.01
    with_constant = torch.cat([varying[:4], torch.full((3,), constant, dtype=torch.float64), varying[4:]])
    assert default_proposal(with_constant, 13) == default_proposal(varying, 10)
    # the Gaussian reference still sees every dimension: only the proposal ignores them
    assert default_proposal(with_constant.clamp_min(VARIANCE_FLOOR), 13) == default_proposal(varying, 10)


def test_two_varying_dimensions_use_the_fixed_scale_of_low_dimensional_data():
    """d > 2 counts the dimensions that vary: two varying and three constant ones scale like 2-D data."""
    var = torch.tensor([2.0, 0.5, 0.0, 0.0, 0.0])
    assert default_proposal(var, 5).scale == 3.0
    assert default_proposal(var, 5).loc == pytest.approx(-0.0, abs=1e-12)      # -(log 2 + log 0.5)/2


def test_digits_cdl_proposal_spans_the_varying_pixels_range():
    """Digits' training split: 3 constant pixels; without them the range is [-6.63, 11.55]
    (with them at the 1e-8 floor it was [-10.10, 16.51]). Tolerance 0.01: the values are
    deterministic functions of the bundled file, computed in float64 from float32 variances."""
    from cdlbench.registry import LOSSES
    from cdlbench.run.data import prepare
    from cdlbench.suite import load_suite

    dataset = load_suite(ROOT / "suites" / "digits.yaml").cells()[0].dataset
    prep = prepare(dataset, 0, torch.device("cpu"))
    assert int((prep.data_var <= VARIANCE_FLOOR).sum()) == 3
    loss = LOSSES.build("cdl", {"base": "itd", "mc_points": 32}, data_var=prep.data_var, shape=prep.shape)
    for proposal in (loss.proposal, loss.zeta_law, loss.base.proposal):
        lo, hi = _range(proposal)
        assert lo == pytest.approx(-6.63, abs=0.01) and hi == pytest.approx(11.55, abs=0.01)


def _proposals(obj, seen=None) -> list:
    """Every LogisticProposal held by a loss object (its own and its nested base loss's)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    out = []
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, LogisticProposal):
            out.append(value)
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("cdlbench.losses"):
            out += _proposals(value, seen)
    return out


@pytest.mark.parametrize("spec", [
    {"name": "itd"}, {"name": "itd", "loc": 1.0, "scale": 2.0}, {"name": "itd", "loc": 1.0},
    {"name": "ddpm"}, {"name": "edm"}, {"name": "cdl"},
    {"name": "cdl", "base": {"name": "itd", "loc": 4.0, "scale": 4.0}, "zeta_loc": 10.5, "zeta_scale": 1.5},
    {"name": "cdl", "base": {"name": "itd", "loc": 4.0, "scale": 4.0}, "zeta_loc": 10.5, "zeta_scale": 1.5,
     "mc_loc": 1.0, "mc_scale": 2.0},
    {"name": "cdl", "base": "ddpm", "zeta_loc": 10.5, "zeta_scale": 1.5, "mc_loc": 1.0, "mc_scale": 2.0},
    {"name": "cdl", "base": "itd", "zeta_loc": 10.5, "zeta_scale": 1.5, "mc_loc": 1.0, "mc_scale": 2.0},
], ids=str)
def test_uses_default_proposal_names_exactly_the_losses_whose_proposal_follows_the_data(spec):
    """plan.uses_default_proposal (a table of parameters) agrees with the built losses: a loss
    uses the default proposal iff one of its proposals moves when the data variance does."""
    from cdlbench.registry import LOSSES
    from cdlbench.run.plan import uses_default_proposal
    from cdlbench.suite.schema import parse_component

    comp = parse_component(dict(spec), LOSSES, "<test>", "loss")
    built = [LOSSES.build(comp.name, comp.params, data_var=torch.tensor([1.0, 2.0, 3.0, 4.0]) ** p, shape=(4,))
             for p in (1, 2)]   # log-variances: mean and spread both move
    moves = [a != b for a, b in zip(_proposals(built[0]), _proposals(built[1]))]
    assert uses_default_proposal(comp.name, comp.params) == any(moves)


def test_only_trainings_whose_proposal_changes_get_a_new_config():
    """Digits' CDL trainings record the 3 excluded pixels; its DDPM trainings, a fine-tune's DDPM
    pretraining and every training of a suite on data without constant dimensions keep their
    config (and so their cached checkpoints), and no training key moves (the golden keys test)."""
    from cdlbench.run.plan import TrainJob, plan
    from cdlbench.suite import load_suite

    for name in ("digits.yaml", "digits-finetune.yaml"):
        trains = [j for j in plan(load_suite(ROOT / "suites" / name), cache_dir="unused") if isinstance(j, TrainJob)]
        marks = {(j.loss.name, j.train.get("steps")): j.config.get("proposal_excludes_constant_dims") for j in trains}
        assert {k: v for k, v in marks.items() if k[0] == "cdl"} and all(
            v == 3 for k, v in marks.items() if k[0] == "cdl"), marks
        assert all(v is None for k, v in marks.items() if k[0] != "cdl"), marks
    for name in ("dino-length.yaml", "parallel.yaml", "gaussian1d-proposal.yaml"):
        trains = [j for j in plan(load_suite(ROOT / "suites" / name), cache_dir="unused") if isinstance(j, TrainJob)]
        assert not any("proposal_excludes_constant_dims" in j.config for j in trains), name
