"""A count-level twin of DataEng-v1 with a fitted surrogate student, for RL at scale.

The real env keeps every teacher sample and retrains a student at each TRAIN; both cost
milliseconds to seconds per step. This twin keeps only *counts* of the pool, per (skill,
difficulty, hidden noise kind, verification state, quality bin), and applies each curation
operation to the counts with the real env's rules and the procedural teacher's noise model.
A TRAIN turns the counts of what the student would see (after mixing, ordering, truncation and
the gate) into a prediction of the fitted :class:`~dataeng_gym.envs.surrogate.Surrogate`.
Observation and action spaces are those of DataEng-v1, so a policy trained here acts there.

Known simplifications (each shifts the simulated reward from the real one, and the
simulated-vs-real gap measures the sum): VERIFY checks unverified items in proportion rather
than oldest first; DEDUP removes exactly the teacher's near duplicates (no accidental repeats
of small problem spaces); a MIX weight of 0.5 halves counts exactly.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from dataeng_gym import rewards
from dataeng_gym.envs.calibrate import config_key
from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import (
    ARGUMENTS,
    Op,
    index_error,
    structured_observation,
    structured_spaces,
)
from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.pool import FILTER_THRESHOLDS, MIX_WEIGHTS, ORDERS
from dataeng_gym.envs.surrogate import KINDS, Surrogate, load_surrogate

_EDGES = (*FILTER_THRESHOLDS[1:], 1.0)
"""Upper edges of the quality bins: a FILTER with param p drops bins below p."""

_K = {k: i for i, k in enumerate(KINDS)}
UNVERIFIED, PASSED, FAILED = 0, 1, 2
_VERIFY_TRUE = np.array([k not in ("wrong_answer", "format_error") for k in KINDS])
"""Which kinds the rule-based verifier accepts (before its error rate)."""
_MALFORMED = np.array([k in ("format_error", "off_skill") for k in KINDS])


def _beta_cdf(x: float, a: int, b: int) -> float:
    """CDF of Beta(a, b) for integer a, b (a binomial tail sum)."""
    from math import comb

    n = a + b - 1
    return sum(comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))


def _bins(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Probability and mean quality of each quality bin under Beta(a, b)."""
    cdf = np.array([0.0] + [_beta_cdf(e, a, b) for e in _EDGES])
    probs = np.diff(cdf)
    grid = np.linspace(0, 1, 20001)[1:-1]
    dens = grid ** (a - 1) * (1 - grid) ** (b - 1)
    lows = np.array([0.0, *_EDGES[:-1]])
    means = np.array(
        [
            float(
                (grid * dens)[(grid >= lo) & (grid < hi)].sum()
                / dens[(grid >= lo) & (grid < hi)].sum()
            )
            for lo, hi in zip(lows, _EDGES)
        ]
    )
    return probs, means


_CLEAN_BINS, _CLEAN_MEANS = _bins(6, 2)
_NOISY_BINS, _NOISY_MEANS = _bins(2, 3)
_BIN_PROBS = np.stack([_CLEAN_BINS if k == "clean" else _NOISY_BINS for k in KINDS])
_BIN_MEANS = np.stack([_CLEAN_MEANS if k == "clean" else _NOISY_MEANS for k in KINDS])


class SimulatedDataEngEnv(gym.Env[dict[str, np.ndarray], dict[str, int]]):
    """DataEng-v1's spaces and rules over pool counts, with a surrogate student.

    ## Description

    As :class:`~dataeng_gym.envs.data_env.DataEngEnv`, but the pool is a count tensor and TRAIN
    is a prediction of a surrogate fitted to real TRAINs (``dataeng-gym calibrate``). Thousands
    of steps per second, for training policies; evaluate them on the real env.

    ## Action Space, Observation Space, Rewards, Episode End

    Identical to DataEng-v1. The final ``info`` carries the same keys; private scores are the
    base student's private accuracy per skill moved by the predicted public change.

    ## Arguments

    ``config`` (:class:`EnvConfig`, with ``simulator_path`` set) or a ``surrogate`` object, and
    any config fields as keyword overrides. ``sim_noise`` scatters each TRAIN's public scores
    (domain randomization for the real student's noisy scores; seeded by ``reset``).

    ## Version History

    * v0: initial version.
    * v1: follows DataEng-v1 (its surrogate is fitted to TRAINs with base-mix replay).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: EnvConfig | None = None,
        surrogate: Surrogate | None = None,
        **overrides: Any,
    ) -> None:
        self.config = (config or EnvConfig()).replace(**overrides)
        self._surrogates: dict[str, Surrogate] = {}
        if surrogate is not None:
            self._surrogates[surrogate.domain] = surrogate
        self.observation_space, self.action_space = structured_spaces(self.config)
        self.model: Surrogate | None = None

    def _surrogate(self, domain: str) -> Surrogate:
        if domain not in self._surrogates:
            if self.config.simulator_path is None:
                raise ValueError(
                    "SimulatedDataEngEnv needs EnvConfig.simulator_path (a surrogate.json from "
                    "`dataeng-gym calibrate`) or a surrogate object"
                )
            surrogate = load_surrogate(self.config.simulator_path, domain)
            key = config_key(self.config.replace(domain=domain))
            if surrogate.config_key != key:
                warnings.warn(
                    f"the surrogate for {domain} in {self.config.simulator_path} was fitted on "
                    f"real TRAINs of another config (key {surrogate.config_key}, this env's is "
                    f"{key}), so its gains describe another student; refit it with "
                    "`dataeng-gym calibrate` on this config",
                    stacklevel=3,
                )
            self._surrogates[domain] = surrogate
        return self._surrogates[domain]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.model = self._surrogate((options or {}).get("domain", self.config.domain))
        s = len(self.model.skills)
        # [skill, difficulty, kind, verification, quality bin]
        self.pool = np.zeros((s, len(DIFFICULTIES), len(KINDS), 3, len(_EDGES)), np.int64)
        self.weights = np.ones(s)
        self.order = "random"
        self.base_acc = np.asarray(self.model.base_public)
        self.acc = self.base_acc.copy()
        self.base_public = self.model.score(self.base_acc, "public")
        self.last_public = self.best_public = self.base_public
        self.best_acc: np.ndarray | None = None
        """The noise-free prediction of the pool with the best (noisy) public score."""
        self.teacher_left = self.config.teacher_budget
        self.train_left = self.config.train_budget
        self.steps = self.invalid_actions = self.contaminated_removed = 0
        self.done = False
        self.history: list[dict[str, Any]] = []
        return self._observation(), self._info(None, {}, {})

    # ------------------------------------------------------------------ dynamics

    def step(
        self, action: dict[str, int]
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.model is None or self.done:
            raise gym.error.ResetNeeded("call reset() before step() (and after the episode ends)")
        self.steps += 1
        terms = dict.fromkeys(
            ("gain", "teacher_cost", "train_cost", "invalid", "contamination"), 0.0
        )
        op, error = self._decode(action)
        record = None if error is not None or op is None else self._record(op, action)
        result: dict[str, Any] = {}
        if error is None:
            error, result = self._apply(op, action, terms)
        if error is not None:
            self.invalid_actions += 1
            terms["invalid"] = rewards.invalid_action_penalty(True, self.config.invalid_penalty)
        terminated = (
            self.done
            or self.steps >= self.config.max_steps
            or (error is None and op == Op.TRAIN and self.train_left == 0)
        )
        reward = float(sum(terms.values()))
        self.history.append({"step": self.steps, "action": record, "invalid_action": error})
        info = self._info(error, terms, result)
        if terminated:
            self.done = True
            info.update(self._final())
        return self._observation(), reward, terminated, False, info

    def _record(self, op: Op, a: dict[str, Any]) -> dict[str, Any]:
        """The action as the real env logs it: the op and only the arguments it reads."""
        assert self.model is not None
        values = {
            "skill": self.model.skills[int(a["skill"])] if op in (Op.GENERATE, Op.MIX) else "",
            "difficulty": DIFFICULTIES[int(a["difficulty"])],
            "amount": self.config.amounts[int(a["amount"])],
            "threshold": FILTER_THRESHOLDS[int(a["param"])],
            "weight": MIX_WEIGHTS[int(a["param"])],
            "order": ORDERS[int(a["param"])],
        }
        record: dict[str, Any] = {"op": op.name.lower()}
        for name in ARGUMENTS.get(op, ()):
            if values.get(name, "") != "":
                record[name] = values[name]
        return record

    def _decode(self, action: dict[str, Any]) -> tuple[Op | None, str | None]:
        assert self.model is not None
        try:
            op = Op(int(action["op"]))
            skill, diff, amount, param = (
                int(action[k]) for k in ("skill", "difficulty", "amount", "param")
            )
        except (KeyError, TypeError, ValueError) as exc:
            return None, f"malformed action {action!r} ({exc})"
        indices = (skill, diff, amount, param)
        return op, index_error(
            op, indices, self.model.domain, self.model.skills, self.config.amounts
        )

    def _apply(
        self, op: Op, a: dict[str, Any], terms: dict[str, float]
    ) -> tuple[str | None, dict[str, Any]]:
        cfg, pool, rng = self.config, self.pool, self.np_random
        if op == Op.GENERATE:
            amount = cfg.amounts[int(a["amount"])]
            if amount > self.teacher_left:
                return f"GENERATE of {amount} needs {amount} teacher samples", {}
            d = DIFFICULTIES[int(a["difficulty"])]
            rates = cfg.noise.rates(d)
            kind_p = np.array([1 - sum(rates.values()), *rates.values()])
            cell_p = (kind_p[:, None] * _BIN_PROBS).ravel()
            drawn = rng.multinomial(amount, cell_p / cell_p.sum()).reshape(len(KINDS), -1)
            pool[int(a["skill"]), d - 1, :, UNVERIFIED, :] += drawn
            self.teacher_left -= amount
            terms["teacher_cost"] = rewards.teacher_cost(amount, cfg.teacher_cost)
            return None, {"added": amount}
        if op == Op.VERIFY:
            unverified = pool[:, :, :, UNVERIFIED, :]
            n = min(cfg.amounts[int(a["amount"])], int(unverified.sum()))
            if n == 0:
                return "VERIFY: no unverified items in the pool", {}
            if n > self.teacher_left:
                return f"VERIFY of {n} items needs {n} teacher samples", {}
            picked = rng.multivariate_hypergeometric(unverified.ravel(), n).reshape(
                unverified.shape
            )
            p_pass = np.where(_VERIFY_TRUE, 1 - cfg.verify_error_rate, cfg.verify_error_rate)
            passed = rng.binomial(picked, p_pass[None, None, :, None])
            pool[:, :, :, UNVERIFIED, :] -= picked
            pool[:, :, :, PASSED, :] += passed
            pool[:, :, :, FAILED, :] += picked - passed
            self.teacher_left -= n
            terms["teacher_cost"] = rewards.teacher_cost(n, cfg.teacher_cost)
            return None, {"verified": n, "passed": int(passed.sum())}
        if op in (Op.FILTER, Op.DEDUP, Op.DECONTAMINATE, Op.ORDER) and not pool.sum():
            return f"{op.name}: the pool is empty", {}
        if op == Op.FILTER:
            before = int(pool.sum())
            pool[:, :, _MALFORMED] = 0
            pool[:, :, :, FAILED] = 0
            pool[..., : int(a["param"])] = 0
            return None, {"removed": before - int(pool.sum())}
        if op == Op.DEDUP:
            removed = int(pool[:, :, _K["near_duplicate"]].sum())
            pool[:, :, _K["near_duplicate"]] = 0
            return None, {"removed": removed}
        if op == Op.DECONTAMINATE:
            removed = int(pool[:, :, _K["contamination"]].sum())
            pool[:, :, _K["contamination"]] = 0
            self.contaminated_removed += removed
            return None, {"removed": removed}
        if op == Op.MIX:
            self.weights[int(a["skill"])] = MIX_WEIGHTS[int(a["param"])]
            return None, {}
        if op == Op.ORDER:
            self.order = ORDERS[int(a["param"])]
            return None, {"order": self.order}
        if op == Op.TRAIN:
            return self._train(terms)
        self.done = True  # SUBMIT
        return None, {}

    def training_counts(self) -> tuple[np.ndarray, np.ndarray, int]:
        """What a TRAIN would see: counts [skill, difficulty, kind], mean positions, contaminated.

        Mixing scales each skill, truncation to ``max_train_items`` follows the order (a
        curriculum keeps its first difficulties, ``interleave`` cuts the largest skills, random
        cuts evenly), and the gate drops contaminated items.
        """
        counts = self.pool.sum(axis=(3, 4)).astype(float) * self.weights[:, None, None]
        total, limit = counts.sum(), self.config.max_train_items
        cells = counts.sum(axis=2)  # [skill, difficulty]
        if self.order in ("easy_to_hard", "hard_to_easy"):
            seq = range(3) if self.order == "easy_to_hard" else range(2, -1, -1)
            keep = np.zeros(3)
            room = float(limit)
            starts = np.zeros(3)
            for d in seq:
                starts[d] = limit - room if room > 0 else limit
                keep[d] = min(1.0, room / max(cells[:, d].sum(), 1e-9)) if room > 0 else 0.0
                room -= cells[:, d].sum()
            counts *= keep[None, :, None]
            kept = counts.sum(axis=2)
            n = max(kept.sum(), 1.0)
            centre = (starts[None, :] + kept.sum(axis=0)[None, :] / 2) / n
            per_skill = kept.sum(axis=1)
            position = np.where(
                per_skill > 0, (kept * centre).sum(axis=1) / np.maximum(per_skill, 1e-9), 0.5
            )
        elif self.order == "interleave":
            per_skill = cells.sum(axis=1)
            cap = _water_level(per_skill, limit)
            counts *= (np.minimum(per_skill, cap) / np.maximum(per_skill, 1e-9))[:, None, None]
            per_skill = counts.sum(axis=(1, 2))
            n = max(per_skill.sum(), 1.0)
            position = np.array([np.minimum(per_skill, m / 2).sum() / n for m in per_skill])
        else:
            if total > limit:
                counts *= limit / total
            position = np.full(counts.shape[0], 0.5)
        contaminated = counts[:, :, _K["contamination"]].sum()
        counts[:, :, _K["contamination"]] = 0
        return counts, position, int(round(contaminated))

    def _train(self, terms: dict[str, float]) -> tuple[str | None, dict[str, Any]]:
        assert self.model is not None
        if self.train_left == 0:
            return "TRAIN: no TRAIN runs left in the budget", {}
        counts, position, contaminated = self.training_counts()
        n = int(round(counts.sum()))
        if n < self.config.min_train_items:
            return (
                f"TRAIN: insufficient valid samples: {n} usable items, at least "
                f"{self.config.min_train_items} needed"
            ), {}
        self.contaminated_removed += contaminated
        terms["contamination"] = rewards.contamination_penalty(
            contaminated, self.config.contamination_penalty
        )
        self.train_left -= 1
        terms["train_cost"] = rewards.train_cost(1, self.config.train_cost)
        predicted = self.model.predict(counts, position)
        self.acc = predicted
        if self.config.sim_noise:
            noise = self.np_random.normal(0.0, self.config.sim_noise, predicted.shape)
            self.acc = np.clip(predicted + noise, 0.0, 1.0)
        self.last_public = self.model.score(self.acc, "public")
        terms["gain"] = rewards.best_gain(self.best_public, self.last_public)
        if self.last_public > self.best_public:
            self.best_public, self.best_acc = self.last_public, predicted.copy()
        return None, {"examples": n, "public": self.last_public}

    def _final(self) -> dict[str, Any]:
        assert self.model is not None
        base_private = self.model.score(np.asarray(self.model.base_private), "private")
        final_private = (
            base_private
            if self.best_acc is None
            else self.model.score(self.model.private(self.best_acc), "private")
        )
        cfg = self.config
        return {
            "base_public": self.base_public,
            "final_public": self.best_public,
            "base_private": base_private,
            "final_private": final_private,
            "gain_abs": final_private - base_private,
            "gain_rel": rewards.relative_gain(base_private, final_private),
            "public_private_gap": self.best_public - final_private,
            "teacher_samples": cfg.teacher_budget - self.teacher_left,
            "train_runs": cfg.train_budget - self.train_left,
            "student_seconds": 0.0,
            "invalid_actions": self.invalid_actions,
            "contaminated_removed": self.contaminated_removed,
        }

    # ------------------------------------------------------------------ observation and info

    def pool_stats(self) -> dict[str, float]:
        """The real env's pool statistics, computed from counts."""
        p = self.pool
        n = int(p.sum())
        if not n:
            return dict.fromkeys(
                (
                    "verified_frac",
                    "verified_wrong_frac",
                    "duplicate_frac",
                    "malformed_frac",
                    "mean_quality",
                ),
                0.0,
            ) | {"size": 0}
        verified = int(p[:, :, :, 1:].sum())
        by_kind = p.sum(axis=(0, 1, 3))  # [kind, bin]
        return {
            "size": n,
            "verified_frac": verified / n,
            "verified_wrong_frac": int(p[:, :, :, FAILED].sum()) / verified if verified else 0.0,
            "duplicate_frac": int(by_kind[_K["near_duplicate"]].sum()) / n,
            "malformed_frac": int(by_kind[_MALFORMED].sum()) / n,
            "mean_quality": float((by_kind * _BIN_MEANS).sum() / n),
        }

    def _observation(self) -> dict[str, np.ndarray]:
        assert self.model is not None
        return structured_observation(
            self.config,
            acc=self.acc,
            base_acc=self.base_acc,
            counts=self.pool.sum(axis=(2, 3, 4)),
            stats=self.pool_stats(),
            weights=self.weights,
            order=self.order,
            used=(self.teacher_left, self.train_left, self.steps),
            scores=(self.best_public, self.last_public, self.base_public),
        )

    def _info(self, error: str | None, terms: dict[str, float], result: dict[str, Any]) -> dict:
        assert self.model is not None
        return {
            "domain": self.model.domain,
            "step": self.steps,
            "invalid_action": error,
            "reward_terms": terms,
            "result": result,
            "pool": {"size": int(self.pool.sum())},
            "teacher_left": self.teacher_left,
            "train_left": self.train_left,
            "public": self.last_public,
            "best_public": self.best_public,
        }


def make_data_env(
    config: EnvConfig | None = None,
    render_mode: str | None = None,
    teacher: Any = None,
    **overrides: Any,
) -> gym.Env:
    """DataEng-v1's entry point: the real env, or this twin when ``student_kind`` is simulated."""
    from dataeng_gym.envs.data_env import DataEngEnv

    cfg = (config or EnvConfig()).replace(**overrides)
    if cfg.student_kind == "simulated":
        return SimulatedDataEngEnv(cfg)
    return DataEngEnv(cfg, render_mode=render_mode, teacher=teacher)


def _water_level(sizes: np.ndarray, limit: float) -> float:
    """The cap c with sum(min(sizes, c)) == limit (or the largest size if all fit)."""
    if sizes.sum() <= limit:
        return float(sizes.max(initial=0.0))
    lo, hi = 0.0, float(sizes.max())
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(sizes, mid).sum() < limit else (lo, mid)
    return hi
