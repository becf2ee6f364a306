"""Code: predict what a short Python program prints (LiveCodeBench test-output prediction)."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, choose

_ASK = ("What does this program print?", "Predict the output of this Python program.")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _program(rng: np.random.Generator, body: str) -> str:
    return f"{choose(rng, _ASK)}\n{body}"


# reverse: print(s[::-1])
_REVERSE = re.compile(r's = "([a-z]{1,12})"\s*print\(s\[::-1\]\)')


def _reverse_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    word = "".join(rng.choice(list(_LETTERS), size=d + 2))
    return _program(rng, f's = "{word}"\nprint(s[::-1])'), word[::-1]


def _reverse_parse(q: str) -> Problem | None:
    m = _REVERSE.search(q)
    return Problem("reverse", f"R {m[1]}=", m[1][::-1]) if m else None


# upper: print(s.upper())
_UPPER = re.compile(r's = "([a-z]{1,12})"\s*print\(s\.upper\(\)\)')


def _upper_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    word = "".join(rng.choice(list(_LETTERS), size=d + 2))
    return _program(rng, f's = "{word}"\nprint(s.upper())'), word.upper()


def _upper_parse(q: str) -> Problem | None:
    m = _UPPER.search(q)
    return Problem("upper", f"U {m[1]}=", m[1].upper()) if m else None


# replace: print(s.replace("a", "b"))
_REPLACE = re.compile(r's = "([a-z]{1,12})"\s*print\(s\.replace\("([a-z])", "([a-z])"\)\)')


def _replace_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    word = "".join(rng.choice(list("abcdef"), size=d + 3))
    old, new = rng.choice(list("abcdef"), size=2, replace=False)
    body = f's = "{word}"\nprint(s.replace("{old}", "{new}"))'
    return _program(rng, body), word.replace(old, new)


def _replace_parse(q: str) -> Problem | None:
    m = _REPLACE.search(q)
    return Problem("replace", f"P {m[1]} {m[2]}{m[3]}=", m[1].replace(m[2], m[3])) if m else None


# slice: print(s[i:j])
_SLICE = re.compile(r's = "([a-z]{1,12})"\s*print\(s\[(\d):(\d)\]\)')


def _slice_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    word = "".join(rng.choice(list(_LETTERS), size=d + 3))
    i = int(rng.integers(0, len(word) - 1))
    j = int(rng.integers(i + 1, len(word) + 1))
    return _program(rng, f's = "{word}"\nprint(s[{i}:{j}])'), word[i:j]


def _slice_parse(q: str) -> Problem | None:
    m = _SLICE.search(q)
    if not m or int(m[2]) >= int(m[3]):
        return None
    return Problem("slice", f"S {m[1]} {m[2]}{m[3]}=", m[1][int(m[2]) : int(m[3])])


SKILLS = (
    Skill(
        "reverse",
        "reverse a string with slicing",
        _reverse_sample,
        _reverse_parse,
        answer_pattern=r"[a-z]+",
        numeric=False,
    ),
    Skill(
        "upper",
        "upper-case a string",
        _upper_sample,
        _upper_parse,
        answer_pattern=r"[A-Z]+",
        numeric=False,
    ),
    Skill(
        "replace",
        "replace one character by another",
        _replace_sample,
        _replace_parse,
        answer_pattern=r"[a-z]+",
        numeric=False,
    ),
    Skill(
        "slice",
        "slice a string s[i:j]",
        _slice_sample,
        _slice_parse,
        answer_pattern=r"[a-z]+",
        numeric=False,
    ),
)

DESCRIPTION = """\
Code output prediction, in the spirit of LiveCodeBench's test-output prediction: each question
shows a short Python program working on a string and asks what it prints. The answer is exactly
the printed text. Skills: reverse (s[::-1]), upper (s.upper()), replace (s.replace(a, b)),
slice (s[i:j]). Difficulty 1-3 makes the strings longer."""


def make(seed: int = 0) -> Domain:
    # string manipulations are harder for the tiny student than digit copying: its weak skills
    # need more exposure in the base for one episode's data to lift them
    return Domain("code", DESCRIPTION, SKILLS, seed=seed, base_mix=(0.47, 0.47, 0.03, 0.03))
