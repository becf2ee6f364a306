"""Built-in offline domains, by name.

``make_domain(name, seed)`` builds one; the splits are a pure function of (name, seed).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from dataeng_gym.envs.domains import code, finance, science
from dataeng_gym.envs.domains.base import DIFFICULTIES, Domain, Item, Problem, Skill

DOMAINS: dict[str, Callable[[int], Domain]] = {
    "science": science.make,
    "code": code.make,
    "finance": finance.make,
}


@cache
def make_domain(name: str, seed: int = 0) -> Domain:
    """Build a domain by name (cached: domains are immutable once built)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; choose one of: {', '.join(DOMAINS)}")
    return DOMAINS[name](seed)


__all__ = ["DIFFICULTIES", "DOMAINS", "Domain", "Item", "Problem", "Skill", "make_domain"]
