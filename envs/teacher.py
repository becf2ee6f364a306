r"""Teachers turn generation requests into samples; the procedural one adds realistic noise.

The noise model is what makes verifying, filtering and deduplicating worth their cost. Each
sample is clean or carries exactly one kind of noise, drawn with these probabilities at
difficulty ``d`` (1-3)::

    rate(kind, d) = NoiseConfig.<kind> * (1 + difficulty_slope * (d - 1))

- ``wrong_answer``: a well-formed answer with the wrong value (an off-by-a-little number, or two
  swapped characters of the same kind);
- ``format_error``: the right value in the wrong format (``"The answer is 42."``, a quoted
  string, ``\boxed{42}``); a lenient numeric scorer would accept it, the domain's format check
  does not, and as a training target it teaches the student to write junk;
- ``near_duplicate``: an earlier sample of the same request with a rephrased prefix;
- ``off_skill``: a sample of another skill, labelled with the requested one;
- ``contamination``: a copy of a public evaluation item (a teacher that memorised the benchmark).

A sample also carries a ``quality`` score, the teacher's own confidence: Beta(6, 2) for clean
samples and Beta(2, 3) for noisy ones, so a quality threshold filters noise, imperfectly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from dataeng_gym.envs.domains import DIFFICULTIES, Domain, Item

NOISE_KINDS = ("wrong_answer", "format_error", "near_duplicate", "off_skill", "contamination")


@dataclass(frozen=True)
class NoiseConfig:
    """Per-kind noise probabilities at difficulty 1, and how they grow with difficulty."""

    wrong_answer: float = 0.12
    """Probability of a well-formed but wrong answer."""
    format_error: float = 0.06
    """Probability of a correct value in a malformed answer."""
    near_duplicate: float = 0.08
    """Probability of a rephrased copy of an earlier sample of the same request."""
    off_skill: float = 0.05
    """Probability of a sample of another skill under the requested skill's label."""
    contamination: float = 0.01
    """Probability of a copy of a public evaluation item."""
    difficulty_slope: float = 0.5
    """Each difficulty level above 1 multiplies every rate by (1 + slope * (d - 1))."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"NoiseConfig.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if sum(self.rates(max(DIFFICULTIES)).values()) > 1:
            raise ValueError(
                "NoiseConfig rates at the hardest difficulty sum to more than 1; "
                "lower the rates or difficulty_slope"
            )

    def rates(self, difficulty: int) -> dict[str, float]:
        """Probability of each noise kind at ``difficulty``."""
        scale = 1 + self.difficulty_slope * (difficulty - 1)
        return {kind: getattr(self, kind) * scale for kind in NOISE_KINDS}


CLEAN = NoiseConfig(0, 0, 0, 0, 0, 0)
"""No noise at all: every sample is a correct, well-formed, on-skill, fresh item."""


@dataclass(frozen=True)
class GenerationRequest:
    """What the agent asks the teacher for."""

    request_id: int
    """Index of the request within the episode; samples are a pure function of (seed, id)."""
    skill: str
    difficulty: int
    count: int
    instructions: str = ""
    """Free text for the teacher (an LLM teacher reads it; the procedural one ignores it)."""
    episode_seed: int = 0
    """The episode's seed. An LLM teacher's reply cache keys on it, so that episodes of other
    seeds sample the teacher afresh instead of replaying one seed's replies."""


@dataclass(frozen=True)
class Sample:
    """A generated item with its provenance.

    ``noise`` is the hidden truth about the sample, kept for measurement and diagnostics; no
    pool operation, observation or policy reads it.
    """

    question: str
    answer: str
    skill: str
    difficulty: int
    request_id: int
    teacher: str
    quality: float
    noise: str = "clean"
    verified: bool | None = None
    """None until VERIFY checks it; then whether the verifier judged the answer correct."""

    @property
    def digest(self) -> str:
        """Provenance hash: the teacher ledger holds the digest of everything it produced."""
        raw = f"{self.teacher}\x1f{self.request_id}\x1f{self.question}\x1f{self.answer}"
        return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()

    @property
    def item(self) -> Item:
        return Item(self.question, self.answer, self.skill, self.difficulty)


class Teacher(Protocol):
    """Anything that turns a generation request into samples (procedural, LLM, vLLM)."""

    name: str

    def generate(self, domain: Domain, request: GenerationRequest) -> list[Sample]:
        """Return up to ``request.count`` samples; each costs one unit of teacher budget."""
        ...


_PREFIXES = ("Question: ", "Q: ", "Please solve: ", "Exercise. ")


class ProceduralTeacher:
    """Serves requests from the domain's generators through the noise model. Offline."""

    name = "procedural"

    def __init__(self, noise: NoiseConfig = NoiseConfig(), *, seed: int = 0) -> None:
        self.noise = noise
        self.seed = seed

    def generate(self, domain: Domain, request: GenerationRequest) -> list[Sample]:
        rng = np.random.default_rng([self.seed, request.request_id])
        rates = self.noise.rates(request.difficulty)
        kinds = ("clean", *NOISE_KINDS)
        probs = np.array([1 - sum(rates.values()), *rates.values()])
        out: list[Sample] = []
        for kind in rng.choice(kinds, size=request.count, p=probs):
            out.append(self._sample(domain, request, str(kind), rng, out))
        return out

    def _sample(
        self,
        domain: Domain,
        request: GenerationRequest,
        kind: str,
        rng: np.random.Generator,
        earlier: list[Sample],
    ) -> Sample:
        skill, d = request.skill, request.difficulty
        if kind == "near_duplicate" and not earlier:
            kind = "clean"
        if kind == "near_duplicate":
            src = earlier[int(rng.integers(len(earlier)))]
            question, answer = (
                _PREFIXES[int(rng.integers(len(_PREFIXES)))] + src.question,
                src.answer,
            )
        elif kind == "off_skill":
            others = [s for s in domain.skill_names if s != skill]
            item = domain.sample(others[int(rng.integers(len(others)))], d, rng)
            question, answer = item.question, item.answer
        elif kind == "contamination":
            item = domain.public[int(rng.integers(len(domain.public)))]
            question, answer = item.question, item.answer
        else:
            item = domain.sample(skill, d, rng)
            question, answer = item.question, item.answer
            if kind == "wrong_answer":
                answer = _wrong(answer, domain.skill(skill).numeric, rng)
            elif kind == "format_error":
                answer = _misformat(answer, rng)
        a, b = (6.0, 2.0) if kind == "clean" else (2.0, 3.0)
        return Sample(
            question=question,
            answer=answer,
            skill=skill,
            difficulty=d,
            request_id=request.request_id,
            teacher=self.name,
            quality=round(float(rng.beta(a, b)), 4),
            noise=kind,
        )


def _wrong(answer: str, numeric: bool, rng: np.random.Generator) -> str:
    """A well-formed answer with another value: a nearby number, or two characters swapped."""
    if numeric:
        value = int(answer)
        delta = int(rng.integers(1, max(2, value // 10) + 1))
        return str(value + delta if value < delta or rng.random() < 0.5 else value - delta)
    chars = list(answer)
    for same_class in (str.isdigit, str.isupper, str.islower):
        idx = [i for i, c in enumerate(chars) if same_class(c)]
        pairs = [(i, j) for i in idx for j in idx if chars[i] < chars[j]]
        if pairs:
            i, j = pairs[int(rng.integers(len(pairs)))]
            chars[i], chars[j] = chars[j], chars[i]
            return "".join(chars)
    i = [k for k, c in enumerate(chars) if c.isalnum()][-1]
    c = chars[i]
    base, size = ("0", 10) if c.isdigit() else ("a", 26) if c.islower() else ("A", 26)
    chars[i] = chr(ord(base) + (ord(c) - ord(base) + 1) % size)
    return "".join(chars)


def _misformat(answer: str, rng: np.random.Generator) -> str:
    """The same value in a format the domain's strict check rejects."""
    templates = ("The answer is {}.", "{} (final)", "Output: {}", '"{}"', "\\boxed{{{}}}")
    return templates[int(rng.integers(len(templates)))].format(answer)
