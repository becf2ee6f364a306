r"""Built-in offline domains, by name.

``make_domain(name, seed)`` builds one; the splits are a pure function of (name, seed).

Scorers are the domains' own. The issue asks for reasoning-gym's scorer where it has one; none
of these skills is a reasoning-gym task, and the nearest one (``spell_backward`` for code's
``reverse``) scores case-insensitively, so ``"CBA"`` would count as the reversal of ``"abc"``;
the code domain's ``upper`` skill makes case the whole point. Each scorer here parses the answer
into the skill's canonical form and compares exactly, accepting equivalent formats (``"1,200"``,
``"$1200"``, ``"\boxed{1200}"``) and nothing else.
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
