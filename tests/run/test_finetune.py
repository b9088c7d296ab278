"""train.init_from as a pretraining (a TrainJob the fine-tunes depend on) and train.snapshots
(EvalJobs on the weights at earlier steps): the fine-tune and its control start from bit-identical
weights, the pretraining's settings enter both keys, and a snapshot is the shorter training."""
from __future__ import annotations

import json

import pytest
import torch

from cdlbench.registry import load_components
from cdlbench.run.checkpoints import load_checkpoint
from cdlbench.run.context import make_context
from cdlbench.run.coordinator import Runner
from cdlbench.run.plan import EvalJob, TrainJob, plan
from cdlbench.run.train_job import build_network, checkpoint_path, initial_weights, snapshot_config, snapshot_path
from cdlbench.run.data import prepare
from cdlbench.suite.schema import SuiteError, parse_suite

load_components()

BASE = {"name": "ft", "version": 1, "seeds": [0], "dataset": {"name": "8gaussians", "n_train": 1000},
        "model": {"name": "mlp", "width": 16, "blocks": 1},
        "losses": [{"name": "ddpm"}, {"name": "cdl", "base": "itd", "samples_per_batch": 2, "mc_points": 8}],
        "samplers": [{"name": "ddpm", "steps": 10}], "metrics": [{"name": "mmd", "bandwidth": 0.03, "n_samples": 100}]}


def suite(train: dict, **changes):
    return parse_suite(json.loads(json.dumps({**BASE, "train": train, **changes})), file="ft.yaml")


FINETUNE = {"steps": 30, "batch_size": 32, "lr": 1e-4, "ema": 0.9,
            "init_from": {"loss": "ddpm", "train": {"steps": 40, "batch_size": 32, "lr": 1e-3}}}


def train_jobs(s, cache):
    return [j for j in plan(s, cache_dir=cache) if isinstance(j, TrainJob)]


def test_pretraining_is_one_job_both_fine_tunes_depend_on(tmp_path):
    jobs = plan(suite(FINETUNE), cache_dir=tmp_path)
    trains = [j for j in jobs if isinstance(j, TrainJob)]
    pre = [j for j in trains if not j.depends_on]
    tunes = [j for j in trains if j.depends_on]
    assert len(pre) == 1 and len(tunes) == 2
    assert all(t.depends_on == (pre[0].id,) and t.init_key == pre[0].key for t in tunes)
    assert jobs.index(pre[0]) < min(jobs.index(t) for t in tunes)          # dependencies first
    # the pretraining's key is the same training from scratch (shared with e.g. dino-length)
    scratch = suite({"steps": 40, "batch_size": 32, "lr": 1e-3}, losses=[{"name": "ddpm"}])
    assert pre[0].key in {j.key for j in train_jobs(scratch, tmp_path)}


def test_pretraining_settings_change_both_fine_tune_keys(tmp_path):
    a = {j.label: j.key for j in train_jobs(suite(FINETUNE), tmp_path) if j.depends_on}
    other = json.loads(json.dumps(FINETUNE))
    other["init_from"]["train"]["steps"] = 41
    b = {j.label: j.key for j in train_jobs(suite(other), tmp_path) if j.depends_on}
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)
    resumed = json.loads(json.dumps(FINETUNE))
    resumed["init_from"]["resume_optimizer"] = True
    c = {j.label: j.key for j in train_jobs(suite(resumed), tmp_path) if j.depends_on}
    assert all(a[k] != c[k] for k in a)


def test_fine_tune_and_control_start_from_bit_identical_weights(tmp_path):
    s = suite(FINETUNE)
    summary = Runner(s, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None,
                     threads=1).execute()
    assert not summary.failed and len(summary.done) == 2
    ctx = make_context("cpu", 1)
    trains = train_jobs(s, tmp_path / "cache")
    pre = next(j for j in trains if not j.depends_on)
    saved = load_checkpoint(checkpoint_path(tmp_path / "cache", pre.key, ctx.device), pre.config)["state_dict"]
    starts = []
    for job in (j for j in trains if j.depends_on):
        net = build_network(job, prepare(job.dataset, job.seed, ctx.device), ctx.device)
        assert initial_weights(job, net, ctx.device) is None                  # Adam starts fresh
        starts.append(net.state_dict())
    for name, value in saved.items():
        assert torch.equal(starts[0][name], value) and torch.equal(starts[1][name], value)
    # and the fine-tunes moved away from it, differently
    tuned = [load_checkpoint(checkpoint_path(tmp_path / "cache", j.key, ctx.device), j.config)["state_dict"]
             for j in trains if j.depends_on]
    assert not torch.equal(tuned[0]["inp.weight"], saved["inp.weight"])
    assert not torch.equal(tuned[0]["inp.weight"], tuned[1]["inp.weight"])


def test_resume_optimizer_hands_over_adams_state(tmp_path):
    resumed = json.loads(json.dumps(FINETUNE))
    resumed["init_from"]["resume_optimizer"] = True
    s = suite(resumed, losses=[{"name": "ddpm"}])
    summary = Runner(s, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None,
                     threads=1).execute()
    assert not summary.failed
    ctx = make_context("cpu", 1)
    tune = next(j for j in train_jobs(s, tmp_path / "cache") if j.depends_on)
    net = build_network(tune, prepare(tune.dataset, tune.seed, ctx.device), ctx.device)
    state = initial_weights(tune, net, ctx.device)
    assert state is not None and all(int(v["step"]) == 40 for v in state["state"].values())


def test_snapshot_is_the_shorter_training_and_gets_its_own_records(tmp_path):
    """The EMA weights saved at step 20 of a 50-step training are, bit for bit, those of the same
    training stopped at 20 steps; each snapshot is its own cell with p_train_step."""
    long = {"steps": 50, "batch_size": 32, "lr": 1e-3, "ema": 0.9, "snapshots": [20, 50]}
    s = suite(long, losses=[{"name": "ddpm"}])
    summary = Runner(s, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None,
                     threads=1).execute()
    assert not summary.failed and len(summary.done) == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert sorted({(r["cell"].rsplit("/", 1)[1], r["p_train_step"]) for r in records}) == [("step=20", 20), ("step=50", 50)]
    assert all("p_train_snapshots" not in r for r in records)
    ctx = make_context("cpu", 1)
    job = train_jobs(s, tmp_path / "cache")[0]
    snap = load_checkpoint(snapshot_path(tmp_path / "cache", job.key, 20, ctx.device),
                           snapshot_config(job.config, 20))["state_dict"]
    final = load_checkpoint(checkpoint_path(tmp_path / "cache", job.key, ctx.device), job.config)["state_dict"]
    assert not torch.equal(snap["inp.weight"], final["inp.weight"])
    # the mechanics: with the same generator, the step-20 snapshot of a 50-step training is the
    # 20-step training (a suite's generator is seeded by the training key, which holds the steps)
    from cdlbench.registry import LOSSES
    from cdlbench.run.training import train

    prep = prepare(job.dataset, 0, ctx.device)
    outs = {}
    for steps in (50, 20):
        net = build_network(job, prep, ctx.device)
        cfg = {**long, "steps": steps, "log_every": 10}
        loss = LOSSES.build("ddpm", {})
        trained, _ = train(net, loss, prep.data, cfg, torch.Generator().manual_seed(7), progress=False,
                           on_snapshot=lambda step, state, log: outs.setdefault(step, {k: v.clone() for k, v in state.items()}))
        outs.setdefault(f"end{steps}", trained.state_dict())
    assert all(torch.equal(outs[20][k], outs["end20"][k]) for k in outs["end20"])
    # snapshots change no weight: the key without them is the same
    plain = {k: v for k, v in long.items() if k != "snapshots"}
    assert train_jobs(suite(plain, losses=[{"name": "ddpm"}]), tmp_path)[0].key == job.key
    evals = [j for j in plan(s, cache_dir=tmp_path) if isinstance(j, EvalJob)]
    assert [j.snapshot_step for j in evals] == [20, None]


@pytest.mark.parametrize("bad, field", [({"loss": "nope"}, "init_from.loss.name"),
                                        ({"loss": "ddpm", "extra": 1}, "init_from.extra"),
                                        ({"loss": "ddpm", "resume_optimizer": "yes"}, "init_from.resume_optimizer"),
                                        ({"train": {}}, "init_from.loss")])
def test_bad_init_from_names_the_field(bad, field):
    with pytest.raises(SuiteError) as err:
        suite({**FINETUNE, "init_from": bad})
    assert field in str(err.value)


def test_bad_snapshots_are_refused():
    for bad in ([], [20, 10], [0], [60]):
        with pytest.raises(SuiteError, match="snapshots"):
            suite({"steps": 50, "snapshots": bad})
