"""Reward terms as small pure functions.

The env adds them up and reports each in ``info["reward_terms"]``; scores are accuracies in
[0, 1], so the gain terms of an episode sum to (best public - base public).
"""

from __future__ import annotations


def best_gain(best_so_far: float, score: float) -> float:
    """Improvement of the best public score so far.

    Rewarding the running best (not the latest score) makes an episode's gains sum to
    best - base, the quantity the paper's greedy best-public selection delivers.

    >>> best_gain(0.40, 0.55)
    0.15000000000000002
    >>> best_gain(0.40, 0.30)
    0.0
    """
    return max(0.0, score - best_so_far)


def relative_gain(base: float, final: float) -> float:
    """The paper's metric: relative improvement over the base student, in percent.

    >>> relative_gain(0.20, 0.30)
    50.0
    >>> relative_gain(0.0, 0.1)
    0.0
    """
    if base <= 0:
        return 0.0
    return round(100.0 * (final - base) / base, 10)


def teacher_cost(samples: int, per_sample: float) -> float:
    """Cost of teacher calls (generation and verification).

    >>> teacher_cost(500, 2e-5)
    -0.01
    """
    return -samples * per_sample


def train_cost(runs: int, per_run: float) -> float:
    """Cost of student training runs.

    >>> train_cost(1, 0.002)
    -0.002
    """
    return -runs * per_run


def invalid_action_penalty(invalid: bool, penalty: float) -> float:
    """A small penalty for an action that was invalid or unaffordable.

    >>> invalid_action_penalty(True, 0.01)
    -0.01
    """
    return -penalty if invalid else 0.0


def contamination_penalty(items: int, per_item: float) -> float:
    """Penalty for evaluation items that reached the training gate (and were removed there).

    >>> contamination_penalty(3, 0.001)
    -0.003
    """
    return -items * per_item
