"""Curation policies: the Policy protocol, random and heuristic baselines."""

if __name__ != "dataeng_gym.policies":
    raise ImportError(
        f"'policies' was imported as {__name__!r}; install the project (pip install -e .) and "
        "import it as 'dataeng_gym.policies', so that only one copy of it is ever loaded"
    )

from collections.abc import Callable
from typing import Any

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.policies.base import Policy
from dataeng_gym.policies.baselines import RandomPolicy, UniformPolicy, WeakestSkillPolicy
from dataeng_gym.policies.llm import LLMPolicy

POLICIES: dict[str, Callable[..., Policy]] = {
    "random": RandomPolicy,
    "uniform": UniformPolicy,
    "weakest-skill": WeakestSkillPolicy,
    "llm": LLMPolicy,  # acts in the text twin; needs backend=... (see policies/llm.py)
}


def make_policy(name: str, config: EnvConfig, seed: int | None = None, **kwargs: Any) -> Policy:
    """Build a policy by name for an env with ``config``; ``ppo:PATH``/``bc:PATH`` load one."""
    if name.startswith("ppo:"):
        from dataeng_gym.training.ppo import PPOPolicy

        return PPOPolicy(name.removeprefix("ppo:"), config, seed=seed)
    if name.startswith("bc:"):
        from dataeng_gym.training.bc import BCPolicy

        return BCPolicy(name.removeprefix("bc:"), config, seed=seed)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    return POLICIES[name](config, seed=seed, **kwargs)


__all__ = [
    "POLICIES",
    "LLMPolicy",
    "Policy",
    "RandomPolicy",
    "UniformPolicy",
    "WeakestSkillPolicy",
    "make_policy",
]
