"""Code: predict what a short Python program prints (LiveCodeBench test-output prediction)."""

from __future__ import annotations

import re

import numpy as np

from dataeng_gym.envs.domains.base import Domain, Problem, Skill, choose, digits

_ASK = ("What does this program print?", "Predict the output of this Python program.")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _program(rng: np.random.Generator, body: str) -> str:
    return f"{choose(rng, _ASK)}\n{body}"


# reverse: print(s[::-1])
_REVERSE = re.compile(r's = "([a-z]{1,12})"\s*print\(s\[::-1\]\)')


def _reverse_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    word = "".join(rng.choice(list(_LETTERS), size=2 * d + 1))
    return _program(rng, f's = "{word}"\nprint(s[::-1])'), word[::-1]


def _reverse_parse(q: str) -> Problem | None:
    m = _REVERSE.search(q)
    return Problem("reverse", f"R {m[1]}=", m[1][::-1]) if m else None


# sort: print(sorted([...]))
_SORT = re.compile(r"print\(sorted\(\[([\d, ]{1,40})\]\)\)")


def _sort_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    xs = [int(x) for x in rng.integers(0, 10, size=(3, 4, 6)[d - 1])]
    return _program(rng, f"print(sorted({xs}))"), str(sorted(xs))


def _sort_parse(q: str) -> Problem | None:
    m = _SORT.search(q)
    if not m:
        return None
    xs = [int(x) for x in m[1].replace(" ", "").split(",") if x]
    return Problem("sort", "S " + "".join(map(str, xs)) + "=", str(sorted(xs))) if xs else None


def _sort_to_target(answer: str) -> str:
    return "".join(ch for ch in answer if ch.isdigit())


def _sort_from_target(output: str) -> str:
    return str([int(ch) for ch in output if ch.isdigit()])


# count: print("...".count("x"))
_COUNT = re.compile(r'print\("([a-z]{1,20})"\.count\("([a-z])"\)\)')


def _count_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    text = "".join(rng.choice(list("abcd"), size=(5, 8, 12)[d - 1]))
    ch = choose(rng, "abcd")
    return _program(rng, f'print("{text}".count("{ch}"))'), str(text.count(ch))


def _count_parse(q: str) -> Problem | None:
    m = _COUNT.search(q)
    return Problem("count", f"C {m[1]} {m[2]}=", str(m[1].count(m[2]))) if m else None


# add: a = ..; b = ..; print(a + b)
_ADD = re.compile(r"a = (\d{1,6})\s*b = (\d{1,6})\s*print\(a \+ b\)")


def _add_sample(rng: np.random.Generator, d: int) -> tuple[str, str]:
    na, nb = ((2, 2), (3, 2), (3, 3))[d - 1]
    a, b = digits(rng, na), digits(rng, nb)
    return _program(rng, f"a = {a}\nb = {b}\nprint(a + b)"), str(a + b)


def _add_parse(q: str) -> Problem | None:
    m = _ADD.search(q)
    return Problem("add", f"+ {m[1]} {m[2]}=", str(int(m[1]) + int(m[2]))) if m else None


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
        "sort",
        "sort a list of digits",
        _sort_sample,
        _sort_parse,
        answer_pattern=r"\[\d(, \d)*\]",
        numeric=False,
        to_target=_sort_to_target,
        from_target=_sort_from_target,
    ),
    Skill("count", "count a character in a string", _count_sample, _count_parse),
    Skill("add", "add two integer variables", _add_sample, _add_parse),
)

DESCRIPTION = """\
Code output prediction, in the spirit of LiveCodeBench's test-output prediction: each question
shows a short Python program and asks what it prints. The answer is exactly the printed text
(a string, a list such as [1, 2, 3], or an integer). Skills: reverse (string slicing), sort
(sorted lists of digits), count (str.count), add (integer arithmetic on variables). Difficulty
1-3 grows the strings, lists and numbers."""


def make(seed: int = 0) -> Domain:
    return Domain("code", DESCRIPTION, SKILLS, seed=seed)
