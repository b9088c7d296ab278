import pytest
import torch

# One intra-op thread: the tensors here are small, and results stay identical across machines.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_global_rng():
    # Components never use the global RNG for draws; seed it anyway so a regression that does
    # shows up as a deterministic failure rather than a flaky one.
    torch.manual_seed(1234)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
