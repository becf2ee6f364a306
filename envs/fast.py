"""The deterministic fast twin, for tests: a micro student, small budgets, evaluation subsets."""

from __future__ import annotations

from typing import Any

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import DataEngEnv


def make_fast(config: EnvConfig = FAST, **overrides: Any) -> DataEngEnv:
    """``DataEngEnv`` on the ``FAST`` configuration (keyword overrides as for the full env)."""
    return DataEngEnv(config, **overrides)
