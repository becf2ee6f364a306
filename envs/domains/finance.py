"""Finance: short business arithmetic word problems with whole-dollar answers."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, choose, digits

_SIZES = ((2, 2), (3, 2), (3, 3))


# profit = revenue - cost
_PROFIT = re.compile(r"sold goods for \$(\d+) that cost \$(\d+)")


def _profit_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    na, nb = _SIZES[d - 1]
    a, b = digits(rng, na), digits(rng, nb)
    a, b = max(a, b), min(a, b)
    shop = choose(rng, ("A shop", "A bakery", "A bookstore", "A market stall"))
    return f"{shop} sold goods for ${a} that cost ${b}. What was the profit in dollars?", str(a - b)


def _profit_parse(q: str) -> Problem | None:
    m = _PROFIT.search(q)
    if not m or int(m[1]) < int(m[2]):
        return None
    return Problem("profit", f"P {m[1]} {m[2]}=", str(int(m[1]) - int(m[2])))


# total = sum of prices
_TOTAL = re.compile(r"items priced ((?:\$\d+(?:, | and )?){2,4})\.")


def _total_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    n, size = ((2, 2), (3, 2), (3, 3))[d - 1]
    xs = [digits(rng, size) for _ in range(n)]
    listed = ", ".join(f"${x}" for x in xs[:-1]) + f" and ${xs[-1]}"
    q = f"An order has items priced {listed}. What is the total in dollars?"
    return q, str(sum(xs))


def _total_parse(q: str) -> Problem | None:
    m = _TOTAL.search(q)
    if not m:
        return None
    xs = [int(x) for x in re.findall(r"\$(\d+)", m[1])]
    return Problem("total", "T " + " ".join(map(str, xs)) + "=", str(sum(xs)))


# balance = start + deposit - payment
_BALANCE = re.compile(r"starts at \$(\d+), receives a deposit of \$(\d+) and pays \$(\d+)")


def _balance_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    size = (2, 2, 3)[d - 1]
    a, b = digits(rng, size + (d == 2)), digits(rng, size)
    c = int(rng.integers(1, a + b + 1))
    q = f"An account starts at ${a}, receives a deposit of ${b} and pays ${c}. What is the balance?"
    return q, str(a + b - c)


def _balance_parse(q: str) -> Problem | None:
    m = _BALANCE.search(q)
    if not m:
        return None
    a, b, c = int(m[1]), int(m[2]), int(m[3])
    return Problem("balance", f"B {a} {b} {c}=", str(a + b - c)) if a + b >= c else None


# max price among several offers
_BEST = re.compile(r"offers of ((?:\$\d+(?:, | and )?){2,8})\.")


def _best_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    xs = [digits(rng, 2) for _ in range((3, 5, 7)[d - 1])]
    listed = ", ".join(f"${x}" for x in xs[:-1]) + f" and ${xs[-1]}"
    q = f"A seller received offers of {listed}. What is the highest offer in dollars?"
    return q, str(max(xs))


def _best_parse(q: str) -> Problem | None:
    m = _BEST.search(q)
    if not m:
        return None
    xs = [int(x) for x in re.findall(r"\$(\d+)", m[1])]
    return Problem("best_offer", "M " + " ".join(map(str, xs)) + "=", str(max(xs)))


SKILLS = (
    Skill("profit", "profit = revenue - cost", _profit_sample, _profit_parse),
    Skill("total", "total of an order's prices", _total_sample, _total_parse),
    Skill(
        "balance", "account balance after a deposit and a payment", _balance_sample, _balance_parse
    ),
    Skill("best_offer", "the highest of several offers", _best_sample, _best_parse),
)

DESCRIPTION = """\
Finance word problems in the spirit of FinanceReasoning: each question describes a small business
situation and asks for a whole number of dollars. The answer is an integer (no $ sign, no
decimals). Skills: profit (revenue minus cost), total (sum of prices), balance (start plus
deposit minus payment), best_offer (the largest of several offers). Difficulty 1-3 adds digits
and terms."""


def make(seed: int = 0) -> Domain:
    return Domain("finance", DESCRIPTION, SKILLS, seed=seed)
