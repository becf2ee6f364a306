import doctest

import pytest

from dataeng_gym.envs.domains import base as domain_base
from dataeng_gym.rewards import terms


@pytest.mark.parametrize("module", [terms, domain_base])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_gains_telescope_to_best_minus_base():
    scores = [0.30, 0.25, 0.42, 0.41, 0.50]
    best, total = 0.30, 0.0
    for s in scores[1:]:
        total += terms.best_gain(best, s)
        best = max(best, s)
    assert total == pytest.approx(max(scores) - scores[0])
