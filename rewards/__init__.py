"""Reward terms as pure functions; the env reports each in ``info["reward_terms"]``."""

if __name__ != "dataeng_gym.rewards":
    raise ImportError(
        f"'rewards' was imported as {__name__!r}; install the project (pip install -e .) and "
        "import it as 'dataeng_gym.rewards', so that only one copy of it is ever loaded"
    )

from dataeng_gym.rewards.terms import (
    best_gain,
    contamination_penalty,
    invalid_action_penalty,
    relative_gain,
    teacher_cost,
    train_cost,
)

__all__ = [
    "best_gain",
    "contamination_penalty",
    "invalid_action_penalty",
    "relative_gain",
    "teacher_cost",
    "train_cost",
]
