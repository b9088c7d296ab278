"""The exact 1-D two-mode mixture denoiser shared by the sampler oracle tests."""
import pytest
import torch

from cdlbench import DATASETS, Denoiser


@pytest.fixture(scope="module")
def gmm():
    return DATASETS["gmm1d"]()


@pytest.fixture(scope="module")
def exact(gmm):
    return Denoiser.from_eps(gmm.exact_eps)


def inputs(n, steps, seed=0, dim=1):
    """x_T [n, dim] and per-step noise [steps, n, dim] from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(steps, n, dim, generator=g)
