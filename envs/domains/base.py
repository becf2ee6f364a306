"""What every domain is made of: items, skills, a solver, a scorer and a student format.

A domain is a target the student should get better at. Each skill is a small generator of
(question, answer) pairs plus a parser that recovers the problem from the question text, so that
the same domain can verify, render and score items that came from any teacher (procedural or LLM).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

DIFFICULTIES = (1, 2, 3)
"""Every skill has these three difficulty levels (1 = easy)."""

PUBLIC_PER_CELL = 34
"""Public items per (skill, difficulty); private has three times as many (the paper's 1:3 split)."""

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Item:
    """One question with its reference answer, labelled with the skill and difficulty it tests."""

    question: str
    answer: str
    skill: str
    difficulty: int


@dataclass(frozen=True)
class Problem:
    """A parsed problem: the compact student prompt and the correct answer.

    Attributes:
        skill: The skill whose parser recognised the question.
        prompt: The student-format prompt, e.g. ``"R abcde="``; also the problem's identity key.
        answer: The correct answer in the domain's canonical answer format.
    """

    skill: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Skill:
    """A sub-skill of a domain.

    Attributes:
        name: Short identifier used in actions, e.g. ``"reverse"``.
        description: One line an agent can read.
        sample: ``(rng, difficulty) -> (question, answer)``; a pure function of its inputs.
        parse: ``question -> Problem | None``; recovers the problem from the question text.
        answer_pattern: Regular expression a well-formed answer matches in full.
        numeric: Whether answers are integers, scored by value (so "1,200" equals "1200").
        to_target: Well-formed answer -> student target.
        from_target: Student output -> answer.
    """

    name: str
    description: str
    sample: Callable[[np.random.Generator, int], tuple[str, str]]
    parse: Callable[[str], Problem | None]
    answer_pattern: str = r"\d+"
    numeric: bool = True
    to_target: Callable[[str], str] = str.strip
    from_target: Callable[[str], str] = str.strip


def canonical_int(text: str) -> str | None:
    r"""Return the last number in ``text`` as a canonical integer string, if it is an integer.

    Accepts the equivalent formats people and models write: ``"1,200"``, ``"1200.0"``,
    ``"$1200"``, ``"\\boxed{1200}"``, ``"The answer is 1200 K."``.

    >>> canonical_int("The answer is \\boxed{1,200.0} dollars")
    '1200'
    >>> canonical_int("no number") is None
    True
    """
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if not value.is_integer():
        return None
    return str(int(value))


@dataclass
class Domain:
    """A target domain: skills, splits, a rule-based scorer and the student format.

    Attributes:
        name: Registry name.
        description: A short text an agent can read: the domain, its answer format, its skills.
        skills: The domain's skills, in a fixed order (the order of the env's skill index).
        seed: Seed of the evaluation splits; the splits are a pure function of (name, seed).
        base_mix: Share of each skill (in a seeded order) in the base student's training mix.
            Calibrated per domain so that the base scores 10-70% on ``public`` and targeted
            data can lift its weak skills within one episode.
        public: Feedback split: the agent sees per-skill accuracy and failed items on it.
        private: Hidden split, scored once at the end of an episode.
        seed_questions: Example questions without answers (the paper's "with seed" setting).
    """

    name: str
    description: str
    skills: tuple[Skill, ...]
    seed: int = 0
    base_mix: tuple[float, ...] = (0.495, 0.495, 0.005, 0.005)
    public: list[Item] = field(init=False)
    private: list[Item] = field(init=False)
    seed_questions: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.skills]
        if len(set(names)) != len(names) or len(names) < 4:
            raise ValueError(f"a domain needs at least 4 distinct skills, got {names}")
        self._answer_re = {s.name: re.compile(s.answer_pattern) for s in self.skills}
        self._eval_keys: frozenset[str] = frozenset()
        self.public, self.private = self._make_splits()
        rng = np.random.default_rng([self.seed, 7, 7])
        self.seed_questions = [
            self.sample(skill.name, d, rng).question for skill in self.skills for d in DIFFICULTIES
        ]

    # ------------------------------------------------------------------ generation

    @property
    def skill_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.skills)

    def skill(self, name: str) -> Skill:
        for s in self.skills:
            if s.name == name:
                return s
        raise KeyError(
            f"unknown skill {name!r} in domain {self.name!r}; skills: {self.skill_names}"
        )

    def sample(self, skill: str, difficulty: int, rng: np.random.Generator) -> Item:
        """Draw one item from a skill's generator, never one that is in an evaluation split.

        Rejection keeps everything a teacher can produce disjoint from ``public`` and ``private``.
        """
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty}")
        gen = self.skill(skill).sample
        for _ in range(1000):
            question, answer = gen(rng, difficulty)
            if self.key(question) not in self._eval_keys:
                return Item(question, answer, skill, difficulty)
        raise RuntimeError(f"{self.name}/{skill}/{difficulty}: generator space exhausted")

    def _make_splits(self) -> tuple[list[Item], list[Item]]:
        rng = np.random.default_rng([self.seed, 1])
        public: list[Item] = []
        private: list[Item] = []
        seen: set[str] = set()
        for skill in self.skills:
            for d in DIFFICULTIES:
                cell: list[Item] = []
                while len(cell) < 4 * PUBLIC_PER_CELL:
                    item = self.sample(skill.name, d, rng)
                    key = self.key(item.question)
                    if key not in seen:
                        seen.add(key)
                        cell.append(item)
                public += cell[:PUBLIC_PER_CELL]
                private += cell[PUBLIC_PER_CELL:]
        self._eval_keys = frozenset(seen)
        return public, private

    # ------------------------------------------------------------------ parsing and scoring

    def parse(self, question: str) -> Problem | None:
        """Recover the problem a question asks, whatever skill it belongs to."""
        for skill in self.skills:
            problem = skill.parse(question)
            if problem is not None:
                return problem
        return None

    def identify(self, question: str) -> tuple[Problem | None, str]:
        """The parsed problem and its identity key (the student prompt, else normalised text)."""
        problem = self.parse(question)
        return problem, problem.prompt if problem else normalize_text(question)

    def key(self, question: str) -> str:
        """Identity of the problem a question asks: its student prompt, else its normalised text."""
        return self.identify(question)[1]

    def solve(self, question: str) -> str | None:
        """The correct answer, computed by the rule-based solver; ``None`` if unparseable."""
        problem = self.parse(question)
        return problem.answer if problem else None

    def well_formed(self, skill: str, answer: str) -> bool:
        """Whether an answer is in the skill's strict submission format."""
        return self._answer_re[skill].fullmatch(answer.strip()) is not None

    def normalize(self, answer: str, skill: str) -> str | None:
        """Map an answer written in any equivalent format to the canonical format."""
        if self.skill(skill).numeric:
            return canonical_int(answer)
        return answer.strip()

    def score(self, item: Item, answer: str) -> float:
        """Rule-based scorer: 1.0 when ``answer`` is equivalent to the reference, else 0.0."""
        given = self.normalize(answer, item.skill)
        expected = self.normalize(item.answer, item.skill)
        return float(given is not None and given == expected)

    # ------------------------------------------------------------------ student format

    def to_student(self, question: str, answer: str) -> tuple[str, str] | None:
        """Render an item for the student: ``(prompt, target)``, or ``None`` if unparseable.

        The target is the answer as the teacher wrote it; a malformed answer is kept as raw
        text, so format errors that reach training teach the student to write junk, as they
        would a real model.
        """
        problem = self.parse(question)
        if problem is None:
            return None
        text = answer.strip()
        skill = self.skill(problem.skill)
        if not self.well_formed(skill.name, text):
            return problem.prompt, text[:16]
        return problem.prompt, skill.to_target(text)

    def from_student(self, skill: str, output: str) -> str:
        """Turn a student's raw output back into an answer in the skill's format."""
        return self.skill(skill).from_target(output.strip())

    def student_eval(self, items: Sequence[Item]) -> list[str]:
        """Student prompts of evaluation items (always parseable: the domain made them)."""
        prompts = []
        for item in items:
            problem = self.parse(item.question)
            if problem is None:
                raise RuntimeError(f"{self.name}: cannot parse its own item {item.question!r}")
            prompts.append(problem.prompt)
        return prompts

    @cached_property
    def fingerprint(self) -> str:
        """A hash of what the domain generates, so caches notice any change to a generator."""
        blob = "\x1e".join([self.name, *self.skill_names, *self.seed_questions])
        blob += "\x1e".join(f"{i.question}\x1f{i.answer}" for i in self.public)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    @cached_property
    def eval_texts(self) -> list[str]:
        """Question texts of both splits, for decontamination."""
        return [item.question for item in self.public + self.private]


def normalize_text(text: str) -> str:
    """Lower-case with runs of whitespace collapsed: the identity of an exact duplicate."""
    return " ".join(text.lower().split())


def digits(rng: np.random.Generator, n: int) -> int:
    """A random integer with exactly ``n`` digits."""
    return int(rng.integers(10 ** (n - 1), 10**n))


def choose(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]
