"""Science: unit conversions, chemical formulas, forces and temperatures (SciBench in miniature)."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, choose, digits

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
_UNIT = re.compile(r"Convert (\d+) (km|m|cm|kg|g|L|kJ|MHz) to (m|cm|mm|g|mg|mL|J|kHz)\b")


def _units_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    (a, b), f = list(_UNITS.items())[int(rng.integers(len(_UNITS)))]
    x = digits(rng, d + 1)
    return f"Convert {x} {a} to {b}. Give a whole number.", str(x * f)


def _units_parse(q: str) -> Problem | None:
    m = _UNIT.search(q)
    if not m or (m[2], m[3]) not in _UNITS:
        return None
    return Problem("units", f"U {m[1]} {m[2]} {m[3]}=", str(int(m[1]) * _UNITS[m[2], m[3]]))


_ELEMENTS = ("C", "H", "O", "N", "S", "P", "Cl", "Na", "K", "Ca")
_FORMULA = re.compile(r"molecule of ((?:[A-Z][a-z]?\d*){1,6})\b")


def _atoms_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    picks = rng.choice(len(_ELEMENTS), size=d + 1, replace=False)
    counts = rng.integers(1, 10, size=d + 1)
    formula = "".join(_ELEMENTS[i] + (str(c) if c > 1 else "") for i, c in zip(picks, counts))
    return f"How many atoms are in one molecule of {formula}?", str(int(counts.sum()))


def _atoms_parse(q: str) -> Problem | None:
    m = _FORMULA.search(q)
    if not m:
        return None
    parts = re.findall(r"([A-Z][a-z]?)(\d*)", m[1])
    if any(el not in _ELEMENTS for el, _ in parts):
        return None
    return Problem("atoms", f"A {m[1]}=", str(sum(int(c or 1) for _, c in parts)))


_FORCE = re.compile(r"(\d+) N to the (?:right|east) and (\d+) N to the (?:left|west)")


def _force_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    na, nb = ((2, 1), (2, 2), (3, 2))[d - 1]
    a, b = digits(rng, na), digits(rng, nb)
    right, left = choose(rng, ("right", "east")), ""
    left = {"right": "left", "east": "west"}[right]
    obj = choose(rng, ("cart", "box", "sled"))
    q = (
        f"Two forces act on a {obj}: {a} N to the {right} and {b} N to the {left}. "
        "What is the magnitude of the net force in newtons?"
    )
    return q, str(abs(a - b))


def _force_parse(q: str) -> Problem | None:
    m = _FORCE.search(q)
    if not m:
        return None
    return Problem("net_force", f"F {m[1]} {m[2]}=", str(abs(int(m[1]) - int(m[2]))))


_HEAT = re.compile(r"at (\d+) degrees Celsius is heated by (\d+) degrees")


def _kelvin_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    na, nb = ((2, 1), (2, 2), (3, 2))[d - 1]
    t, dt = digits(rng, na), digits(rng, nb)
    sample = choose(rng, ("water", "a gas", "a metal block"))
    q = f"A sample of {sample} at {t} degrees Celsius is heated by {dt} degrees. "
    return q + "What is its final temperature in kelvin (use 273)?", str(t + dt + 273)


def _kelvin_parse(q: str) -> Problem | None:
    m = _HEAT.search(q)
    if not m:
        return None
    return Problem("kelvin", f"K {m[1]} {m[2]}=", str(int(m[1]) + int(m[2]) + 273))


SKILLS = (
    Skill("units", "convert between metric units", _units_sample, _units_parse),
    Skill("atoms", "count the atoms in a molecular formula", _atoms_sample, _atoms_parse),
    Skill("net_force", "net force of two opposing forces", _force_sample, _force_parse),
    Skill("kelvin", "final temperature in kelvin after heating", _kelvin_sample, _kelvin_parse),
)

DESCRIPTION = """\
Science questions in the spirit of SciBench, small enough for a tiny student: each asks for one
whole number. Skills: units (metric unit conversion), atoms (atoms in one molecule of a formula
such as C2H6O), net_force (two opposing forces in newtons), kelvin (a temperature after heating,
in kelvin, with 0 C = 273 K). Difficulty 1-3 adds digits and elements."""


def make(seed: int = 0) -> Domain:
    return Domain("science", DESCRIPTION, SKILLS, seed=seed)
