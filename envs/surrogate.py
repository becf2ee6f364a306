"""A surrogate of the tiny student, fitted to recorded real TRAIN results.

A TRAIN's outcome is summarised by the *training counts* of what the student saw: items per
(skill, difficulty, noise kind) after mixing, ordering, truncation and the TRAIN gate, plus
where in the training order each skill's items sit (late items meet a decayed learning rate).
From these the surrogate predicts each skill's public accuracy with one ridge regression per
skill over a handful of features. It is linear in its features on purpose: with 100-odd
recorded TRAINs a richer model would fit the noise, and ridge needs only numpy.

The fit weights the TRAINs of recorded policy episodes above those of random pools
(``policy_weight``): policies (and a PPO policy warm-started from one) act where those pools
are, and random pools are noisier (a random pool's skill can swing 30 points between two
TRAINs on nearly the same items). Global features (all good items, the noise share, the
optimizer steps the pool buys under the student's recipe) let it see what a growing, clean
pool adds from one TRAIN to the next, which per-skill counts alone under-predicted.

The same counts come from a real pool of samples (:func:`training_counts`, used to record
calibration data and to drive the surrogate inside :class:`~dataeng_gym.envs.data_env.DataEngEnv`)
and from the count-level simulator (:mod:`dataeng_gym.envs.simulated`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.student import fine_tune_steps
from dataeng_gym.envs.teacher import NOISE_KINDS, Sample
from dataeng_gym.errors import DataEngError

if TYPE_CHECKING:
    from dataeng_gym.envs.config import EnvConfig

KINDS = ("clean", *NOISE_KINDS)
"""Noise kinds along the last axis of training counts (the teacher's hidden truth)."""

FEATURES = (
    "log_good_d1",
    "log_good_d2",
    "log_good_d3",
    "log_wrong",
    "log_format",
    "log_off_skill",
    "share",
    "log_total",
    "format_frac_all",
    "wrong_frac_all",
    "dup_frac",
    "mean_position",
    "log_good_all",
    "noise_frac_all",
    "good_frac",
    "steps_frac",
)
"""Per-skill features of a TRAIN (``good``: correct-label kinds, clean, duplicate, contaminated;
``steps_frac``: the TRAIN's optimizer steps over the recipe's cap)."""

POLICY_WEIGHT = 4.0
"""How much a policy episode's TRAIN weighs in the fit against a random pool's. On held-out
records of three domains it raised the predicted first-to-last TRAIN gain of policy episodes
from 2.0 / 4.9 / 1.7 points to 4.8 / 7.0 / 3.3 (real: 7.9 / 9.3 / 4.2; code, science,
finance) for at most 0.3 points more error on random pools (docs/results.md)."""

RECIPE_KEYS = ("batch_size", "epochs", "max_train_steps", "replay_ratio")
"""What a TRAIN's number of optimizer steps depends on (see :func:`optimizer_steps`)."""

_GOOD = [KINDS.index(k) for k in ("clean", "near_duplicate", "contamination")]


class SurrogateError(DataEngError):
    """A surrogate file is missing, malformed, or does not cover the requested domain."""


def training_counts(
    samples: Sequence[Sample], skills: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[skill, difficulty, kind]`` and each skill's mean position (0-1) in ``samples``.

    ``samples`` are the items a TRAIN trains on, in training order.
    """
    index = {s: i for i, s in enumerate(skills)}
    counts = np.zeros((len(skills), len(DIFFICULTIES), len(KINDS)))
    pos_sum = np.zeros(len(skills))
    n = max(1, len(samples) - 1)
    for i, s in enumerate(samples):
        k = index[s.skill]
        counts[k, s.difficulty - 1, KINDS.index(s.noise)] += 1
        pos_sum[k] += i / n
    per_skill = counts.sum(axis=(1, 2))
    position = np.where(per_skill > 0, pos_sum / np.maximum(per_skill, 1), 0.5)
    return counts, position


def train_recipe(config: EnvConfig) -> dict[str, float]:
    """The recipe fields of an :class:`~dataeng_gym.envs.config.EnvConfig` (tiny student)."""
    student = config.student
    return {
        "batch_size": student.batch_size,
        "epochs": student.epochs,
        "max_train_steps": student.max_train_steps,
        "replay_ratio": config.replay_ratio,
    }


def optimizer_steps(items: float, recipe: Mapping[str, float]) -> float:
    """Optimizer steps of a TRAIN on ``items`` curated items, as the tiny student counts them.

    Base-mix replay is added, then ``epochs`` passes in batches, capped at ``max_train_steps``.
    """
    total = items + round(recipe["replay_ratio"] * items)
    batch, epochs, cap = (int(recipe[k]) for k in ("batch_size", "epochs", "max_train_steps"))
    return float(fine_tune_steps(total, batch, epochs, cap))


def features(counts: np.ndarray, position: np.ndarray, recipe: Mapping[str, float]) -> np.ndarray:
    """Feature matrix ``[skill, len(FEATURES)]`` of one TRAIN's training counts."""
    per_skill = counts.sum(axis=(1, 2))
    total = max(1.0, float(per_skill.sum()))
    good = counts[:, :, _GOOD].sum(axis=2)
    good_all = float(good.sum())
    steps = optimizer_steps(float(per_skill.sum()), recipe) / recipe["max_train_steps"]
    n = len(per_skill)
    kind_all = counts.sum(axis=(0, 1))
    dup = counts[:, :, KINDS.index("near_duplicate")].sum(axis=1)
    cols = [
        np.log1p(good[:, 0]),
        np.log1p(good[:, 1]),
        np.log1p(good[:, 2]),
        np.log1p(counts[:, :, KINDS.index("wrong_answer")].sum(axis=1)),
        np.log1p(counts[:, :, KINDS.index("format_error")].sum(axis=1)),
        np.log1p(counts[:, :, KINDS.index("off_skill")].sum(axis=1)),
        per_skill / total,
        np.full(n, np.log1p(total)),
        np.full(n, kind_all[KINDS.index("format_error")] / total),
        np.full(n, kind_all[KINDS.index("wrong_answer")] / total),
        dup / np.maximum(per_skill, 1),
        position,
        np.full(n, np.log1p(good_all)),
        np.full(n, 1.0 - good_all / total),
        good.sum(axis=1) / np.maximum(per_skill, 1),
        np.full(n, steps),
    ]
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class Surrogate:
    """Fitted per-skill ridge models of one domain, plus the base student's per-skill scores.

    Attributes:
        domain: Domain name.
        skills: The domain's skills, in order.
        base_public: Base student's public accuracy per skill.
        base_private: Base student's private accuracy per skill.
        public_counts: Items per skill in the evaluated public subset (weights the overall score).
        private_counts: Items per skill in the evaluated private subset.
        mean: Feature means per skill ``[skill][feature]`` (standardisation).
        scale: Feature standard deviations per skill.
        coef: Ridge coefficients per skill on standardised features.
        intercept: Ridge intercept per skill.
        alpha: Ridge penalty chosen by cross-validation.
        config_key: What the records were measured with (student, budgets, eval subsets).
        recipe: The student's training recipe (:data:`RECIPE_KEYS`), for ``steps_frac``.
        features: The feature names the coefficients belong to (:data:`FEATURES`).
    """

    domain: str
    skills: list[str]
    base_public: list[float]
    base_private: list[float]
    public_counts: list[int]
    private_counts: list[int]
    mean: list[list[float]]
    scale: list[list[float]]
    coef: list[list[float]]
    intercept: list[float]
    alpha: float
    config_key: str
    recipe: dict[str, float]
    features: list[str]

    def predict(self, counts: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Predicted public accuracy per skill, in [0, 1]."""
        x = (features(counts, position, self.recipe) - np.asarray(self.mean)) / np.asarray(
            self.scale
        )
        y = (x * np.asarray(self.coef)).sum(axis=1) + np.asarray(self.intercept)
        return np.clip(y, 0.0, 1.0)

    def private(self, public_per_skill: np.ndarray) -> np.ndarray:
        """Private accuracy per skill: the base private score moved by the public change."""
        delta = public_per_skill - np.asarray(self.base_public)
        return np.clip(np.asarray(self.base_private) + delta, 0.0, 1.0)

    def score(self, per_skill: np.ndarray, split: str) -> float:
        """Overall accuracy on ``split`` ("public" or "private"): per-skill scores weighted."""
        w = np.asarray(self.public_counts if split == "public" else self.private_counts, float)
        return float((per_skill * w).sum() / w.sum())


def save_surrogate(path: str | Path, surrogate: Surrogate) -> None:
    """Add (or replace) one domain's surrogate in the JSON file at ``path``, atomically.

    Other domains' entries are kept as stored: one from an older version stays, and fails to
    load with a message to refit, instead of being silently misread.
    """
    from dataeng_gym.io import write_json

    p = Path(path)
    existing: dict[str, Any] = json.loads(p.read_text()) if p.exists() else {}
    write_json(p, {**existing, surrogate.domain: asdict(surrogate)})


def load_surrogate(path: str | Path, domain: str) -> Surrogate:
    """The fitted surrogate of ``domain`` from a file written by ``dataeng-gym calibrate``."""
    p = Path(path)
    if not p.is_file():
        raise SurrogateError(
            f"no surrogate file at {str(p)!r}; run `dataeng-gym calibrate --domain {domain} "
            "--out DIR` and pass DIR/surrogate.json as EnvConfig.simulator_path"
        )
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise SurrogateError(f"surrogate file {str(p)!r} is not valid JSON: {exc}") from exc
    if domain not in data:
        raise SurrogateError(
            f"surrogate file {str(p)!r} has domains {sorted(data)}, not {domain!r}; "
            f"calibrate it with `dataeng-gym calibrate --domain {domain}`"
        )
    entry = data[domain]
    if entry.get("features") != list(FEATURES):
        raise SurrogateError(
            f"surrogate of {domain!r} in {str(p)!r} was fitted on features "
            f"{entry.get('features', 'of an older version')}, this version computes "
            f"{list(FEATURES)}; refit it with `dataeng-gym calibrate --domain {domain} --out DIR` "
            "(records.jsonl there are reused)"
        )
    return Surrogate(**entry)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted ridge on standardised x: coefficients and intercept (not penalised)."""
    w = w / w.sum()
    xm, ym = w @ x, float(w @ y)
    xc = x - xm
    a = (xc * w[:, None]).T @ xc * len(w) + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(a, (xc * w[:, None]).T @ (y - ym) * len(w))
    return coef, ym - float(xm @ coef)


def fit_surrogate(
    records: Sequence[dict[str, Any]],
    *,
    domain: str,
    skills: list[str],
    base: dict[str, Any],
    config_key: str,
    recipe: Mapping[str, float],
    policy_weight: float = POLICY_WEIGHT,
    alphas: Sequence[float] = (0.1, 1.0, 3.0, 10.0, 30.0, 100.0),
    folds: int = 5,
) -> Surrogate:
    """Fit per-skill weighted ridge models to calibration records; pick alpha by k-fold error.

    Each record holds ``counts`` ``[skill][difficulty][kind]``, ``position`` and ``per_skill``
    (the real public accuracy per skill after that TRAIN). Records of policy episodes (a
    ``source`` other than "random") weigh ``policy_weight`` times a random pool's, in the fit
    and in the error that picks alpha.
    """
    if len(records) < folds:
        raise SurrogateError(f"need at least {folds} calibration records, got {len(records)}")
    if not policy_weight > 0:
        raise SurrogateError(f"policy_weight must be > 0, got {policy_weight}")
    xs = np.stack(
        [features(np.asarray(r["counts"]), np.asarray(r["position"]), recipe) for r in records]
    )
    ys = np.asarray([r["per_skill"] for r in records])  # [record, skill]
    weights = np.array(
        [1.0 if r.get("source", "random") == "random" else policy_weight for r in records]
    )
    mean = xs.mean(axis=0)
    scale = xs.std(axis=0) + 1e-6
    z = (xs - mean) / scale
    fold = np.arange(len(records)) % folds
    best_alpha, best_err = alphas[0], np.inf
    for alpha in alphas:
        err = 0.0
        for f in range(folds):
            tr, te = fold != f, fold == f
            for k in range(len(skills)):
                w, b = _ridge(z[tr, k], ys[tr, k], alpha, weights[tr])
                miss = np.abs(np.clip(z[te, k] @ w + b, 0, 1) - ys[te, k])
                err += float(weights[te] @ miss)
        if err < best_err:
            best_alpha, best_err = alpha, err
    coef, intercept = [], []
    for k in range(len(skills)):
        w, b = _ridge(z[:, k], ys[:, k], best_alpha, weights)
        coef.append(w.tolist())
        intercept.append(b)
    return Surrogate(
        domain=domain,
        skills=list(skills),
        base_public=list(base["base_public"]),
        base_private=list(base["base_private"]),
        public_counts=list(base["public_counts"]),
        private_counts=list(base["private_counts"]),
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=coef,
        intercept=intercept,
        alpha=float(best_alpha),
        config_key=config_key,
        recipe={k: float(recipe[k]) for k in RECIPE_KEYS},
        features=list(FEATURES),
    )


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])
