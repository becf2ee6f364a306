"""Baseline policies for the structured env: random, uniform and weakest-skill.

``weakest-skill`` is the adaptive baseline of DataEnvGym's skill-list environment: it spends
each round's teacher budget on the skills with the lowest public accuracy, verifies, filters,
deduplicates, decontaminates and trains; the next round looks at the new accuracies.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import Op, structured_action
from dataeng_gym.envs.domains import DIFFICULTIES

Obs = dict[str, np.ndarray]


def action(
    op: Op, skill: int = 0, difficulty: int = 1, amount: int = 0, param: int = 0
) -> dict[str, int]:
    """A structured action; ``difficulty`` is 1-3, ``amount`` an index into ``config.amounts``."""
    return structured_action(op, skill, difficulty - 1, amount, param)


def _skills(obs: Obs) -> int:
    return int(obs["skill_mask"].sum())


class RandomPolicy:
    """Uniformly random operations and arguments (skills limited to the domain's)."""

    def __init__(self, config: EnvConfig, seed: int | None = None) -> None:
        self.amounts = len(config.amounts)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: Obs, info: dict[str, Any]) -> dict[str, int]:
        r = self.rng
        return action(
            Op(int(r.integers(len(Op)))),
            skill=int(r.integers(_skills(observation))),
            difficulty=int(r.integers(1, len(DIFFICULTIES) + 1)),
            amount=int(r.integers(self.amounts)),
            param=int(r.integers(4)),
        )


class UniformPolicy:
    """Spread generation evenly over every skill and difficulty, train once, submit."""

    def __init__(self, config: EnvConfig, seed: int | None = None, share: float = 0.6) -> None:
        self.config, self.share = config, share
        self.plan: deque[dict[str, int]] = deque()

    def reset(self, seed: int | None = None) -> None:
        self.plan.clear()

    def act(self, observation: Obs, info: dict[str, Any]) -> dict[str, int]:
        if (
            not self.plan
            and observation["budgets"][1] == 1.0
            and observation["pool_counts"].sum() == 0
        ):
            n = _skills(observation)
            cells = [(s, d) for s in range(n) for d in DIFFICULTIES]
            per_cell = self.share * self.config.teacher_budget / len(cells)
            amount = _closest(self.config.amounts, per_cell)
            self.plan.extend(action(Op.GENERATE, s, d, amount) for s, d in cells)
            self.plan.append(action(Op.TRAIN))
        return self.plan.popleft() if self.plan else action(Op.SUBMIT)


class WeakestSkillPolicy:
    """Each round: generate for the weakest skills, verify, filter, dedup, decontaminate, train.

    A round's teacher budget is what is left divided by the TRAIN runs left; half of it is spent
    on generation, split over skills in proportion to (1 - public accuracy) + ``floor`` (the
    weakest get most; the floor keeps some data of every skill, since a tiny student forgets
    what a TRAIN does not show it), and the rest verifies what was generated.
    """

    def __init__(
        self,
        config: EnvConfig,
        seed: int | None = None,
        max_generates: int = 4,
        threshold: int = 1,
        floor: float = 0.2,
    ) -> None:
        self.config, self.max_generates, self.threshold = config, max_generates, threshold
        self.floor = floor
        self.plan: deque[dict[str, int]] = deque()
        self.round = 0

    def reset(self, seed: int | None = None) -> None:
        self.plan.clear()
        self.round = 0

    def act(self, observation: Obs, info: dict[str, Any]) -> dict[str, int]:
        if not self.plan:
            self._plan_round(observation, info)
        return self.plan.popleft()

    def _plan_round(self, obs: Obs, info: dict[str, Any]) -> None:
        cfg = self.config
        teacher_left = int(round(obs["budgets"][0] * cfg.teacher_budget))
        train_left = max(1, int(round(obs["budgets"][1] * cfg.train_budget)))
        pool_size = float(obs["pool_counts"].sum()) * cfg.teacher_budget
        # half of this round's budget generates, the rest verifies; generate more when the pool
        # is short of what a TRAIN needs (about 40% of raw samples are dropped by cleaning)
        deficit = max(0.0, cfg.min_train_items - pool_size) / 0.6
        spend = min(teacher_left / 2, max(teacher_left / train_left / 2, deficit))
        n = _skills(obs)
        weakness = 1.0 - obs["skill_acc"][:n] + self.floor
        share = weakness / weakness.sum()
        generates = []
        for s in np.argsort(-share):
            amount = _closest(cfg.amounts, spend * share[s], floor=True)
            if amount is not None and len(generates) < self.max_generates:
                difficulty = DIFFICULTIES[(self.round + len(generates)) % len(DIFFICULTIES)]
                generates.append(action(Op.GENERATE, int(s), difficulty, amount))
        if not generates and teacher_left >= min(cfg.amounts):
            weakest = int(np.argmax(share))
            generates.append(action(Op.GENERATE, weakest, 1 + self.round % 3, 0))
        self.plan.extend(generates)
        generated = sum(cfg.amounts[a["amount"]] for a in generates)
        to_verify = min(generated, teacher_left - generated)
        while to_verify >= min(cfg.amounts):
            amount = _closest(cfg.amounts, to_verify, floor=True)
            self.plan.append(action(Op.VERIFY, amount=amount))
            to_verify -= cfg.amounts[amount]
        self.plan.extend(
            [
                action(Op.FILTER, param=self.threshold),
                action(Op.DEDUP),
                action(Op.DECONTAMINATE),
                action(Op.TRAIN),
            ]
        )
        self.round += 1


def _closest(amounts: tuple[int, ...], target: float, floor: bool = False) -> Any:
    """Index of the amount nearest ``target``; with ``floor``, the largest not above it."""
    if floor:
        fits = [i for i, a in enumerate(amounts) if a <= target]
        return max(fits, key=lambda i: amounts[i]) if fits else None
    return int(np.argmin([abs(a - target) for a in amounts]))
