"""Every registered metric for its declared unit and direction on a case with a known answer
(tests/contracts.py); parametrised over the registry."""
import pytest

import contracts
from cdlbench import METRICS


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name):
    contracts.check_metric_direction(name)
