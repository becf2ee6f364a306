"""Word n-gram decontamination against the evaluation splits.

Standard LLM practice flags a training text that shares long word n-grams (8 by default) with
an evaluation text. Templated questions break the plain rule both ways: boilerplate n-grams
("what does this program print ? ...") occur in every item, and a question shorter than n words
has no n-gram at all. So:

- n-grams that occur in more than ``max_df`` of the evaluation texts are boilerplate and ignored;
- a text shorter than n words is one n-gram of its own length, and a query is searched for
  it with windows of that length too (else a short question with a prefix would slip through);
- a text is contaminated when it contains at least ``threshold`` (0.8) of the non-boilerplate
  n-grams of one evaluation text (a fraction-of-overlap rule, as in the Llama 2 and PaLM
  contamination analyses, taken per evaluation item): sharing one number and the template
  around it with some eval items is not enough, but a copy, a copy inside a longer text, or a
  copy with a prefix is caught.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_TOKEN = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    return _windows(words(text), n)


def _windows(toks: list[str], n: int) -> set[tuple[str, ...]]:
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


class NgramIndex:
    """The n-grams of a set of evaluation texts, for overlap queries."""

    def __init__(
        self, texts: Iterable[str], n: int = 8, *, max_df: float = 0.02, threshold: float = 0.8
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.n, self.threshold = n, threshold
        postings: dict[tuple[str, ...], list[int]] = {}
        # Distinct texts: a text listed twice would otherwise share all its n-grams with itself
        # and, in a set of under 1/max_df texts, count as boilerplate and never be caught.
        distinct = dict.fromkeys(texts)
        for i, text in enumerate(distinct):
            for g in ngrams(text, n):
                postings.setdefault(g, []).append(i)
        limit = max(1.0, max_df * len(distinct))
        self.boilerplate = {g for g, ids in postings.items() if len(ids) > limit}
        self.postings = {g: ids for g, ids in postings.items() if g not in self.boilerplate}
        # Lengths of the eval texts shorter than n words, which queries are also cut into.
        self.short_lengths = sorted({len(g) for g in self.postings if len(g) < n})
        self.sizes: Counter[int] = Counter()
        for ids in self.postings.values():
            self.sizes.update(ids)

    def overlap(self, text: str) -> float:
        """Largest fraction of one eval text's non-boilerplate n-grams that ``text`` contains."""
        toks = words(text)
        grams = _windows(toks, self.n)
        for length in self.short_lengths:
            if length < len(toks):
                grams |= _windows(toks, length)
        hits: Counter[int] = Counter()
        for g in grams - self.boilerplate:
            hits.update(self.postings.get(g, ()))
        return max((c / self.sizes[i] for i, c in hits.items()), default=0.0)

    def contaminated(self, text: str) -> bool:
        return self.overlap(text) >= self.threshold
