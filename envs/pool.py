"""The working dataset and the curation operations on it.

Only the teacher adds items (``DataPool.add`` takes teacher samples, whose digests the env
records in a ledger); every other operation removes, marks, weights or reorders. Each operation
returns a small dict of what it did, which the env reports in ``info``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dataeng_gym.envs.decontam import NgramIndex
from dataeng_gym.envs.domains import DIFFICULTIES, Domain
from dataeng_gym.envs.domains.base import normalize_text
from dataeng_gym.envs.teacher import Sample

ORDERS = ("random", "easy_to_hard", "interleave", "hard_to_easy")
"""Training-order strategies: shuffled, curriculum, round-robin over skills, anti-curriculum."""

FILTER_THRESHOLDS = (0.0, 0.3, 0.5, 0.7)
"""Quality thresholds a FILTER can apply (its ``param`` picks one)."""

MIX_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
"""Mixing weights a MIX can give a skill: its items are dropped, halved, kept or repeated."""


@dataclass
class DataPool:
    """Teacher samples plus the curation state: mixing weights and training order."""

    domain: Domain
    items: list[Sample] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    order: str = "random"

    def __post_init__(self) -> None:
        self.weights = {s: self.weights.get(s, 1.0) for s in self.domain.skill_names}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, samples: list[Sample]) -> dict[str, int]:
        self.items.extend(samples)
        return {"added": len(samples)}

    def verify(self, limit: int, rng: np.random.Generator, error_rate: float) -> dict[str, int]:
        """Check up to ``limit`` unverified items with the domain's rule-based solver.

        The verifier re-solves the question and compares answers with the domain scorer; with
        probability ``error_rate`` it returns the wrong verdict (verifiers are not perfect).
        """
        checked = passed = 0
        for i, s in enumerate(self.items):
            if checked == limit:
                break
            if s.verified is not None:
                continue
            truth = self.domain.solve(s.question)
            ok = truth is not None and self.domain.score(s.item, truth) == 1.0
            if rng.random() < error_rate:
                ok = not ok
            self.items[i] = dataclasses.replace(s, verified=ok)
            checked += 1
            passed += ok
        return {"verified": checked, "passed": passed, "failed": checked - passed}

    def unverified(self) -> int:
        return sum(s.verified is None for s in self.items)

    def filter(self, threshold: float) -> dict[str, int]:
        """Drop malformed, off-skill, verified-wrong and low-quality items."""
        removed: Counter[str] = Counter()
        kept = []
        for s in self.items:
            reason = self.reject_reason(s, threshold)
            if reason:
                removed[reason] += 1
            else:
                kept.append(s)
        self.items = kept
        return {"removed": sum(removed.values()), **{f"removed_{k}": v for k, v in removed.items()}}

    def reject_reason(self, s: Sample, threshold: float = 0.0) -> str | None:
        problem = self.domain.parse(s.question)
        if problem is None or not self.domain.well_formed(s.skill, s.answer):
            return "format"
        if problem.skill != s.skill:
            return "off_skill"
        if s.verified is False:
            return "verified_wrong"
        if s.quality < threshold:
            return "quality"
        return None

    def dedup(self) -> dict[str, int]:
        """Drop exact duplicates (same normalised text) and near ones (same parsed problem)."""
        texts: set[str] = set()
        keys: set[str] = set()
        kept = []
        exact = near = 0
        for s in self.items:
            text = normalize_text(s.question)
            key = self.domain.key(s.question)
            if text in texts:
                exact += 1
            elif key in keys:
                near += 1
            else:
                kept.append(s)
            texts.add(text)
            keys.add(key)
        self.items = kept
        return {"removed": exact + near, "removed_exact": exact, "removed_near": near}

    def duplicates(self) -> int:
        """How many items repeat an earlier item's problem (what DEDUP would remove)."""
        return len(self.items) - self._scan()[1]

    def _scan(self) -> tuple[int, int]:
        """Malformed or off-skill items, and distinct problems, parsing each question once."""
        malformed, keys = 0, set()
        for s in self.items:
            problem, key = self.domain.identify(s.question)
            keys.add(key)
            malformed += (
                problem is None
                or problem.skill != s.skill
                or not self.domain.well_formed(s.skill, s.answer)
            )
        return malformed, len(keys)

    def decontaminate(self, index: NgramIndex) -> dict[str, int]:
        kept = [s for s in self.items if not index.contaminated(s.question)]
        removed = len(self.items) - len(kept)
        self.items = kept
        return {"removed": removed}

    def mix(self, skill: str, weight: float) -> dict[str, float]:
        self.weights[skill] = weight
        return {skill: weight}

    def training_items(self, rng: np.random.Generator, limit: int) -> list[Sample]:
        """The items a TRAIN sees: mixed by skill weight, ordered, at most ``limit`` of them.

        A weight of 0.5 keeps every other item of the skill, 2.0 repeats each item twice.
        """
        mixed: list[Sample] = []
        seen: Counter[str] = Counter()
        for s in self.items:
            w = self.weights[s.skill]
            seen[s.skill] += 1
            copies = int(seen[s.skill] * w) - int((seen[s.skill] - 1) * w)
            mixed.extend([s] * copies)
        return order_items(mixed, self.order, rng)[:limit]

    def stats(self) -> dict[str, float]:
        """Pool statistics an agent can see (all computable without hidden labels)."""
        n = len(self.items)
        verified = [s for s in self.items if s.verified is not None]
        malformed, distinct = self._scan()
        return {
            "size": n,
            "verified_frac": len(verified) / n if n else 0.0,
            "verified_wrong_frac": (
                sum(not s.verified for s in verified) / len(verified) if verified else 0.0
            ),
            "duplicate_frac": (n - distinct) / n if n else 0.0,
            "malformed_frac": malformed / n if n else 0.0,
            "mean_quality": float(np.mean([s.quality for s in self.items])) if n else 0.0,
        }

    def counts(self) -> np.ndarray:
        """Item counts per (skill, difficulty), in the domain's skill order."""
        index = {s: i for i, s in enumerate(self.domain.skill_names)}
        out = np.zeros((len(index), len(DIFFICULTIES)), dtype=np.int64)
        for s in self.items:
            out[index[s.skill], s.difficulty - 1] += 1
        return out


def order_items(items: list[Sample], strategy: str, rng: np.random.Generator) -> list[Sample]:
    """Order items for training by one of ``ORDERS``; ties keep a seeded random order."""
    if strategy not in ORDERS:
        raise ValueError(f"unknown order {strategy!r}; choose one of {ORDERS}")
    perm = [items[i] for i in rng.permutation(len(items))]
    if strategy == "easy_to_hard":
        return sorted(perm, key=lambda s: s.difficulty)
    if strategy == "hard_to_easy":
        return sorted(perm, key=lambda s: -s.difficulty)
    if strategy == "interleave":
        seen: Counter[str] = Counter()
        ranked = []
        for s in perm:
            ranked.append((seen[s.skill], s.skill, s))
            seen[s.skill] += 1
        return [s for *_, s in sorted(ranked, key=lambda r: r[:2])]
    return perm
