import os

import pytest
import torch

# The command line's default executor (auto) starts worker processes, which do not see what a test
# registers or patches in-process: the tests run inline unless they ask (tests/run/test_local_supervision.py
# tests the default itself).
os.environ["CDLBENCH_EXECUTOR"] = "inline"

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
