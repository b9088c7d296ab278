"""Every registered sampler against the contract of its spec (tests/contracts.py), on the exact
8-Gaussian oracle: declared NFE, uses the noise it is given, class labels, and its declared
fixed point. Parametrised over the registry: a sampler added later is checked without an edit here."""
import pytest

import contracts
from cdlbench import SAMPLERS


@pytest.mark.parametrize("check", contracts.SAMPLER_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_contract(name, check):
    check(name)
