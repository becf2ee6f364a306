"""Science: unit conversions, scientific notation and chemical formulas (SciBench in miniature)."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, digits

_UNITS = {
    ("km", "m"): 1000,
    ("m", "cm"): 100,
    ("cm", "mm"): 10,
    ("kg", "g"): 1000,
    ("g", "mg"): 1000,
    ("L", "mL"): 1000,
    ("kJ", "J"): 1000,
    ("MHz", "kHz"): 1000,
}
_PAIRS = list(_UNITS)
_UP = re.compile(r"Convert (\d+) (km|m|cm|kg|g|L|kJ|MHz) to (m|cm|mm|g|mg|mL|J|kHz)\b")
_DOWN = re.compile(r"Express (\d+) (m|cm|mm|g|mg|mL|J|kHz) in (km|m|cm|kg|g|L|kJ|MHz)\b")


def _up_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    a, b = _PAIRS[int(rng.integers(len(_PAIRS)))]
    x = digits(rng, d + 1)
    return f"Convert {x} {a} to {b}. Give a whole number.", str(x * _UNITS[a, b])


def _up_parse(q: str) -> Problem | None:
    m = _UP.search(q)
    if not m or (m[2], m[3]) not in _UNITS:
        return None
    return Problem("units_up", f"U {m[1]} {m[2]} {m[3]}=", str(int(m[1]) * _UNITS[m[2], m[3]]))


def _down_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    a, b = _PAIRS[int(rng.integers(len(_PAIRS)))]
    x = digits(rng, d + 1)
    return f"Express {x * _UNITS[a, b]} {b} in {a}.", str(x)


def _down_parse(q: str) -> Problem | None:
    m = _DOWN.search(q)
    if not m or (m[3], m[2]) not in _UNITS or int(m[1]) % _UNITS[m[3], m[2]]:
        return None
    return Problem("units_down", f"D {m[1]} {m[2]} {m[3]}=", str(int(m[1]) // _UNITS[m[3], m[2]]))


_ELEMENTS = ("C", "H", "O", "N", "S", "P", "Cl", "Na", "K", "Ca", "Mg", "Fe", "Br", "Si")
_FORMULA = re.compile(r"appear in ((?:[A-Z][a-z]?\d*){1,6})\?")


def _elements_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    picks = rng.choice(len(_ELEMENTS), size=d + 1, replace=False)
    counts = rng.integers(1, 10, size=d + 1)
    formula = "".join(_ELEMENTS[i] + (str(c) if c > 1 else "") for i, c in zip(picks, counts))
    q = f"Which elements appear in {formula}? Write their symbols in order, without counts."
    return q, "".join(_ELEMENTS[i] for i in picks)


def _elements_parse(q: str) -> Problem | None:
    m = _FORMULA.search(q)
    if not m:
        return None
    symbols = re.findall(r"[A-Z][a-z]?", m[1])
    if any(el not in _ELEMENTS for el in symbols) or len(set(symbols)) != len(symbols):
        return None
    return Problem("elements", f"L {m[1]}=", "".join(symbols))


_SCI = re.compile(r"Write (\d)\.(\d{1,3}) x 10\^(\d) as a whole number")


def _scientific_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    mantissa = f"{digits(rng, 1)}.{int(rng.integers(1, 10**d)):0{d}d}"
    exponent = int(rng.integers(d, 10))
    return f"Write {mantissa} x 10^{exponent} as a whole number.", _expand(mantissa, exponent)


def _expand(mantissa: str, exponent: int) -> str:
    whole, frac = mantissa.split(".")
    return str(int(whole + frac + "0" * (exponent - len(frac))))


def _scientific_parse(q: str) -> Problem | None:
    m = _SCI.search(q)
    if not m or int(m[3]) < len(m[2]):
        return None
    return Problem("scientific", f"E {m[1]}.{m[2]} {m[3]}=", _expand(f"{m[1]}.{m[2]}", int(m[3])))


SKILLS = (
    Skill("units_up", "convert to a smaller metric unit", _up_sample, _up_parse),
    Skill("units_down", "convert to a larger metric unit", _down_sample, _down_parse),
    Skill(
        "elements",
        "list the element symbols of a formula",
        _elements_sample,
        _elements_parse,
        answer_pattern=r"([A-Z][a-z]?)+",
        numeric=False,
    ),
    Skill("scientific", "expand scientific notation", _scientific_sample, _scientific_parse),
)

DESCRIPTION = """\
Science questions in the spirit of SciBench, sized for a tiny student. Answers are whole numbers,
except for elements, whose answer is the element symbols in order (C2H6O -> CHO). Skills:
units_up (34 km -> 34000 m), units_down (34000 m -> 34 km), elements (the symbols of a
molecular formula), scientific (4.07 x 10^5 -> 407000). Difficulty 1-3 adds digits."""


def make(seed: int = 0) -> Domain:
    return Domain("science", DESCRIPTION, SKILLS, seed=seed)
