"""CDL's `one_call: true` (issue: the paper's protocol, item 5): the base loss's denoiser evaluations
join the classifier's 2*K*B in one batched call. Same draws in the same order as the two-call
form, so the same loss and gradient up to float round-off, and exactly one denoiser call per step."""
import pytest
import torch

from cdlbench.denoiser import Denoiser
from cdlbench.losses.base import EpsQuery, batched_eps
from cdlbench.registry import LOSSES, MODELS, load_components

load_components()


def _net(conditional=False, precond="eps"):
    torch.manual_seed(0)
    kwargs = {"num_classes": 3} if conditional else {}
    return MODELS.build("mlp", {"width": 32, "blocks": 2, "conditional": conditional, "precond": precond},
                        shape=(2,), data_var=torch.ones(2), **kwargs)


def _loss_and_grads(net, one_call: bool, base, labels=None, seed=5):
    loss_fn = LOSSES.build("cdl", {"base": base, "samples_per_batch": 3, "mc_points": 16, "one_call": one_call},
                           data_var=torch.ones(2), shape=(2,))
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(seed)
    denoiser = Denoiser.wrap(net)
    net.zero_grad(set_to_none=True)
    out = loss_fn(denoiser, x0, generator=gen, labels=labels)
    loss = out.per_sample.mean()
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    return loss.detach(), out.parts, grads, denoiser.calls, gen.get_state()


@pytest.mark.parametrize("base", ["itd", "ddpm", "edm"])
@pytest.mark.parametrize("precond", ["eps", "edm"])
def test_one_call_gives_the_two_call_loss_and_gradient_up_to_round_off(base, precond):
    net = _net(precond=precond)
    loss2, parts2, grads2, calls2, state2 = _loss_and_grads(net, False, base)
    loss1, parts1, grads1, calls1, state1 = _loss_and_grads(net, True, base)
    assert (calls2, calls1) == (2, 1)
    assert torch.equal(state1, state2)                      # the same draws, in the same order
    assert loss1.item() == pytest.approx(loss2.item(), rel=1e-5, abs=1e-6)
    for key in parts2:
        assert parts1[key].item() == pytest.approx(parts2[key].item(), rel=1e-5, abs=1e-6), key
    for g1, g2 in zip(grads1, grads2):
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-6)
    assert loss1.item() != pytest.approx(0.0) and any(g.abs().sum() > 0 for g in grads1)


def test_one_call_with_class_labels():
    net = _net(conditional=True)
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))
    loss2, _, grads2, calls2, _ = _loss_and_grads(net, False, "itd", labels)
    loss1, _, grads1, calls1, _ = _loss_and_grads(net, True, "itd", labels)
    assert (calls2, calls1) == (2, 1)
    assert loss1.item() == pytest.approx(loss2.item(), rel=1e-5)
    # the labels reach the rows they belong to: another labelling gives another loss
    other, _, _, _, _ = _loss_and_grads(net, True, "itd", (labels + 1) % 3)
    assert other.item() != pytest.approx(loss1.item(), rel=1e-4)


@pytest.mark.parametrize("base", ["ddpm", "itd"])
def test_base_loss_call_is_its_query_and_finish(base):
    """The one-phase call of a base loss is bit-identical to query + finish with a separate call."""
    net = _net()
    loss_fn = LOSSES.build(base, {}, data_var=torch.ones(2), shape=(2,))
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    direct = loss_fn(Denoiser.wrap(net), x0, generator=torch.Generator().manual_seed(4)).per_sample
    query, finish = loss_fn.query(x0, generator=torch.Generator().manual_seed(4))
    two_phase = finish(Denoiser.wrap(net).eps(query.z, query.logsnr)).per_sample
    assert torch.equal(direct, two_phase)


def test_batched_eps_splits_by_query_and_refuses_mixed_labels():
    denoiser = Denoiser.from_eps(lambda z, a: z * a.unsqueeze(1))
    q1 = EpsQuery(torch.ones(2, 2), torch.tensor([1.0, 2.0]))
    q2 = EpsQuery(torch.ones(3, 2), torch.tensor([3.0, 4.0, 5.0]))
    out1, out2 = batched_eps(denoiser, [q1, q2])
    assert denoiser.calls == 1
    assert out1[:, 0].tolist() == [1.0, 2.0] and out2[:, 1].tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="labels"):
        batched_eps(denoiser, [q1, EpsQuery(torch.ones(1, 2), torch.ones(1), torch.zeros(1, dtype=torch.long))])


def test_one_call_is_neutral_off_so_committed_keys_stay():
    assert LOSSES.entry("cdl").neutral["one_call"] is False


def test_one_call_enters_the_key_only_when_on():
    from cdlbench.suite.schema import Component
    params = {"base": "itd", "weight": 1.0, "samples_per_batch": 2, "mc_points": 128}
    off = Component(LOSSES.kind, "cdl", {**params, "one_call": False}, ("base",), "cdl")
    on = Component(LOSSES.kind, "cdl", {**params, "one_call": True}, ("base", "one_call"), "cdl")
    assert "one_call" not in off.keyed_params and on.keyed_params["one_call"] is True
    assert off.key() != on.key()
