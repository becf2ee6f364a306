"""Finance: the bookkeeping conversions of financial statements, with exact answers."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, choose, digits

# cents: $12.34 -> 1234
_CENTS = re.compile(r"How many cents is \$(\d{1,6})\.(\d\d)\?")


def _cents_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    dollars, cents = digits(rng, d), int(rng.integers(0, 100))
    return f"How many cents is ${dollars}.{cents:02d}?", str(dollars * 100 + cents)


def _cents_parse(q: str) -> Problem | None:
    m = _CENTS.search(q)
    return Problem("cents", f"C {m[1]}.{m[2]}=", str(int(m[1] + m[2]))) if m else None


# separators: 1234567 -> 1,234,567
_SEP = re.compile(r"Write (\d{4,9}) (?:dollars|euros) with thousands separators")


def _separators_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    x = digits(rng, d + 3)
    currency = choose(rng, ("dollars", "euros"))
    return f"Write {x} {currency} with thousands separators.", f"{x:,}"


def _separators_parse(q: str) -> Problem | None:
    m = _SEP.search(q)
    return Problem("separators", f"T {m[1]}=", f"{int(m[1]):,}") if m else None


# round_down: $4567 to the nearest hundred below -> 4500
_ROUND = re.compile(r"Round \$(\d{2,9}) down to the nearest (ten|hundred|thousand) dollars")
_PLACES = {"ten": 10, "hundred": 100, "thousand": 1000}


def _round_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    place = ("ten", "hundred", "thousand")[d - 1]
    x = digits(rng, d + 2)
    unit = _PLACES[place]
    return f"Round ${x} down to the nearest {place} dollars.", str(x // unit * unit)


def _round_parse(q: str) -> Problem | None:
    m = _ROUND.search(q)
    if not m:
        return None
    unit = _PLACES[m[2]]
    return Problem("round_down", f"R {m[1]} {unit}=", str(int(m[1]) // unit * unit))


# mask: account 12345678 -> ****5678
_MASK = re.compile(r"account number (\d{5,12}) for a statement")


def _mask_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    number = "".join(str(x) for x in rng.integers(0, 10, size=d + 5))
    q = (
        f"Mask the account number {number} for a statement: "
        "replace every digit but the last four with *."
    )
    return q, "*" * (len(number) - 4) + number[-4:]


def _mask_parse(q: str) -> Problem | None:
    m = _MASK.search(q)
    return Problem("mask", f"M {m[1]}=", "*" * (len(m[1]) - 4) + m[1][-4:]) if m else None


SKILLS = (
    Skill("cents", "a dollar amount in cents", _cents_sample, _cents_parse),
    Skill(
        "separators",
        "write an amount with thousands separators",
        _separators_sample,
        _separators_parse,
        answer_pattern=r"\d{1,3}(,\d{3})+",
        numeric=False,
    ),
    Skill("round_down", "round an amount down to a place", _round_sample, _round_parse),
    Skill(
        "mask",
        "mask an account number but its last four digits",
        _mask_sample,
        _mask_parse,
        answer_pattern=r"\*+\d{4}",
        numeric=False,
    ),
)

DESCRIPTION = """\
Finance statement questions in the spirit of FinanceReasoning, sized for a tiny student: the
exact conversions a bookkeeper makes. Skills: cents ($12.34 -> 1234), separators (1234567 ->
1,234,567), round_down ($4567 down to the nearest hundred -> 4500), mask (account 12345678 ->
****5678). Answers are exact strings; numeric answers may be written in any equivalent format.
Difficulty 1-3 adds digits."""


def make(seed: int = 0) -> Domain:
    return Domain("finance", DESCRIPTION, SKILLS, seed=seed)
