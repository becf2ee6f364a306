"""The data-engineering environment: curate a pool through a teacher, reward the student's gain."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dataeng_gym import rewards
from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.decontam import NgramIndex
from dataeng_gym.envs.domains import DIFFICULTIES, Domain, Item, make_domain
from dataeng_gym.envs.pool import FILTER_THRESHOLDS, MIX_WEIGHTS, ORDERS, DataPool
from dataeng_gym.envs.student import TinyStudent
from dataeng_gym.envs.teacher import GenerationRequest, ProceduralTeacher, Sample, Teacher

MAX_SKILLS = 6
"""Size of the per-skill axes of the structured spaces; a domain uses its first ``len(skills)``."""


class Op(IntEnum):
    """Data-curation operations, the ``op`` of an action."""

    GENERATE = 0
    VERIFY = 1
    FILTER = 2
    DEDUP = 3
    DECONTAMINATE = 4
    MIX = 5
    ORDER = 6
    TRAIN = 7
    SUBMIT = 8


@dataclass(frozen=True)
class Action:
    """A decoded action with real-valued arguments (both env twins turn theirs into this)."""

    op: Op
    skill: str = ""
    difficulty: int = 1
    amount: int = 0
    threshold: float = 0.0
    weight: float = 1.0
    order: str = "random"
    instructions: str = ""


@dataclass(frozen=True)
class Evaluation:
    """A student's scores on a split: overall, per skill, and the items it got wrong."""

    score: float
    per_skill: dict[str, float]
    failures: list[tuple[Item, str]]


def evaluate(domain: Domain, student: TinyStudent, items: list[Item], state: Any) -> Evaluation:
    """Greedy-decode the student on ``items`` and score each answer with the domain scorer."""
    outputs = student.answer(domain.student_eval(items), state)
    hits: dict[str, list[float]] = {s: [] for s in domain.skill_names}
    failures = []
    for item, out in zip(items, outputs):
        given = domain.from_student(item.skill, out)
        ok = domain.score(item, given)
        hits[item.skill].append(ok)
        if not ok:
            failures.append((item, given))
    per_skill = {s: float(np.mean(v)) if v else 0.0 for s, v in hits.items()}
    return Evaluation(float(np.mean([x for v in hits.values() for x in v])), per_skill, failures)


def _subset(items: list[Item], limit: int) -> list[Item]:
    if not limit or limit >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]


_BASE_EVALS: dict[tuple[str, str, str, int], Evaluation] = {}
"""Base-student evaluations, memoised per process: the base is fixed per (domain, config, seed)."""


def index_error(
    op: Op,
    indices: tuple[int, int, int, int],
    domain: str,
    skills: Sequence[str],
    amounts: Sequence[int],
) -> str | None:
    """Why a structured action's (skill, difficulty, amount, param) indices are out of range.

    Shared by the real env and its simulated twin, so both reject the same actions.
    """
    skill_i, diff_i, amount_i, param = indices
    if not 0 <= param < 4 or not 0 <= amount_i < len(amounts):
        return f"param must be in 0..3 and amount in 0..{len(amounts) - 1}"
    if not 0 <= diff_i < len(DIFFICULTIES):
        return f"difficulty must be in 0..{len(DIFFICULTIES) - 1}, got {diff_i}"
    if op in (Op.GENERATE, Op.MIX) and not 0 <= skill_i < len(skills):
        return f"skill index {skill_i} is not used by {domain} ({tuple(skills)})"
    return None


class DataEngEnv(gym.Env[dict[str, np.ndarray], dict[str, int]]):
    """Curate training data for a student model; the reward is the student's gain.

    ## Description

    One episode is one data-engineering run on one domain, as in arXiv 2605.30407: the agent asks
    a fixed teacher for items, verifies, filters, deduplicates, decontaminates, mixes and orders
    them, and fine-tunes a fixed student on the pool (TRAIN). Each TRAIN starts from the same base
    checkpoint and is scored on the domain's ``public`` split; SUBMIT scores the best pool's
    student on the hidden ``private`` split.

    ## Action Space

    ``Dict(op=Discrete(9), skill=Discrete(6), difficulty=Discrete(3), amount=Discrete(4),
    param=Discrete(4))``. ``op`` is an :class:`Op`. GENERATE uses skill, difficulty and
    ``config.amounts[amount]``; VERIFY checks ``amounts[amount]`` unverified items; FILTER drops
    malformed, off-skill, verified-wrong and items of quality below ``FILTER_THRESHOLDS[param]``;
    DEDUP, DECONTAMINATE and SUBMIT take no argument; MIX gives ``skill`` the weight
    ``MIX_WEIGHTS[param]``; ORDER sets the training order ``ORDERS[param]``. An invalid or
    unaffordable action changes nothing, costs ``invalid_penalty`` and is explained in
    ``info["invalid_action"]``.

    ## Observation Space

    A ``Dict`` of float32 arrays: ``skill_acc`` and ``base_skill_acc`` (public accuracy per
    skill now and at base), ``skill_mask`` (which of the 6 skill slots the domain uses),
    ``pool_counts`` (items per skill and difficulty, as a fraction of the teacher budget,
    which bounds the pool), ``pool_stats`` (verified, verified-wrong,
    duplicate and malformed fractions, mean quality), ``mix_weights``, ``order`` (one-hot),
    ``budgets`` (fractions left of teacher samples, TRAIN runs and steps) and ``scores``
    (best public so far, last public, base public).

    ## Rewards

    Terms from :mod:`dataeng_gym.rewards`, reported in ``info["reward_terms"]``, summing to the
    reward: ``gain`` (improvement of the best public score), ``teacher_cost``, ``train_cost``,
    ``invalid`` and ``contamination`` (evaluation items caught at the TRAIN gate). Gains over an
    episode sum to best public - base public. The private score is never part of a reward.

    ## Starting State

    An empty pool, full budgets, and the base student's public scores.

    ## Episode End

    Terminated on SUBMIT, after the last TRAIN of the budget, or after ``max_steps`` actions.
    The final ``info`` holds ``base_public``, ``final_public``, ``base_private``,
    ``final_private``, ``gain_abs``, ``gain_rel`` (percent, the paper's metric, on private),
    ``public_private_gap``, ``teacher_samples``, ``train_runs``, ``student_seconds``,
    ``invalid_actions`` and ``contaminated_removed``. ``env.best_samples`` then holds the
    samples the best TRAIN trained on, in training order (empty if no TRAIN beat the base).

    ## Arguments

    ``config`` (:class:`EnvConfig`) and any of its fields as keyword overrides, e.g.
    ``gym.make("dataeng_gym/DataEng-v1", domain="code", teacher_budget=2000)``.

    ## Version History

    * v0: initial version.
    * v1: every TRAIN of the tiny student replays base-mix examples (``replay_ratio``,
      default 0.25), so the student no longer forgets the skills a pool leaves out;
      ``replay_ratio=0`` gives v0's dynamics.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        config: EnvConfig | None = None,
        render_mode: str | None = None,
        teacher: Teacher | None = None,
        **overrides: Any,
    ) -> None:
        self.config = (config or EnvConfig()).replace(**overrides)
        if self.config.student_kind == "simulated":
            raise ValueError(
                "DataEngEnv trains a real student; for student_kind='simulated' use "
                "gym.make('dataeng_gym/DataEng-v1', ...) or envs.simulated.SimulatedDataEngEnv"
            )
        self.render_mode = render_mode
        self._teacher_override = teacher
        self.observation_space, self.action_space = structured_spaces(self.config)
        self._students: dict[str, TinyStudent] = {}
        self.domain: Domain | None = None

    # ------------------------------------------------------------------ episode lifecycle

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        name = (options or {}).get("domain", self.config.domain)
        self.domain = make_domain(name, self.config.domain_seed)
        episode_seed = int(self.np_random.integers(2**31))
        self.teacher: Teacher = self._teacher_override or ProceduralTeacher(
            self.config.noise, seed=episode_seed
        )
        self.train_seed = episode_seed
        self.student = self._student(self.domain)
        self.public = _subset(self.domain.public, self.config.eval_public_limit)
        self.private = _subset(self.domain.private, self.config.eval_private_limit)
        self.index = _decontamination_index(self.domain, self.config.ngram)
        self.pool = DataPool(self.domain)
        self.ledger: set[str] = set()
        self.base_eval = self._base_eval("public", self.public)
        self.last_eval = self.base_eval
        self.best_public = self.base_eval.score
        self.best_state: Any = None
        self.best_samples: list[Sample] = []
        self.teacher_left = self.config.teacher_budget
        self.train_left = self.config.train_budget
        self.steps = 0
        self.requests = 0
        self.invalid_actions = 0
        self.contaminated_removed = 0
        self.student_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.done = False
        self.pool_stats = self.pool.stats()
        return self._observation(), self._info(None, {}, {})

    def step(
        self, action: dict[str, int]
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        decoded, error = self.decode(action)
        return self._step(decoded, error)

    def _step(
        self, action: Action | None, error: str | None
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.domain is None or self.done:
            raise gym.error.ResetNeeded("call reset() before step() (and after the episode ends)")
        self.steps += 1
        terms = dict.fromkeys(
            ("gain", "teacher_cost", "train_cost", "invalid", "contamination"), 0.0
        )
        result: dict[str, Any] = {}
        if action is not None and error is None:
            error = self._invalid_reason(action)
        if action is None or error is not None:
            self.invalid_actions += 1
            terms["invalid"] = rewards.invalid_action_penalty(True, self.config.invalid_penalty)
        else:
            result = self._apply(action, terms)
        terminated = (
            self.done
            or self.steps >= self.config.max_steps
            or (action is not None and action.op == Op.TRAIN and self.train_left == 0)
        )
        reward = float(sum(terms.values()))
        self.history.append(
            {
                "step": self.steps,
                "action": _action_record(action),
                "invalid_action": error,
                "result": result,
                "public": self.last_eval.score,
                "reward": reward,
            }
        )
        self.pool_stats = self.pool.stats()  # once per step: observation, info and text read it
        info = self._info(error, terms, result)
        if terminated:
            self.done = True
            info.update(self._final())
        return self._observation(), reward, terminated, False, info

    def _apply(self, action: Action, terms: dict[str, float]) -> dict[str, Any]:
        cfg, pool = self.config, self.pool
        assert self.domain is not None
        if action.op == Op.GENERATE:
            request = GenerationRequest(
                self.requests,
                action.skill,
                action.difficulty,
                action.amount,
                action.instructions,
                episode_seed=self.train_seed,
            )
            self.requests += 1
            samples = self.teacher.generate(self.domain, request)
            self.ledger.update(s.digest for s in samples)
            self.teacher_left -= request.count
            terms["teacher_cost"] = rewards.teacher_cost(request.count, cfg.teacher_cost)
            return pool.add(samples)
        if action.op == Op.VERIFY:
            n = min(action.amount, pool.unverified())
            rng = np.random.default_rng([self.train_seed, self.steps])
            result = pool.verify(n, rng, cfg.verify_error_rate)
            self.teacher_left -= result["verified"]
            terms["teacher_cost"] = rewards.teacher_cost(result["verified"], cfg.teacher_cost)
            return result
        if action.op == Op.FILTER:
            return pool.filter(action.threshold)
        if action.op == Op.DEDUP:
            return pool.dedup()
        if action.op == Op.DECONTAMINATE:
            result = pool.decontaminate(self.index)
            self.contaminated_removed += result["removed"]
            return result
        if action.op == Op.MIX:
            return pool.mix(action.skill, action.weight)
        if action.op == Op.ORDER:
            pool.order = action.order
            return {"order": action.order}
        if action.op == Op.TRAIN:
            return self._train(terms)
        self.done = True  # SUBMIT
        return {}

    def _train_examples(self) -> tuple[list[tuple[str, str]], dict[str, int]]:
        """The gate every TRAIN passes: ledger check, decontamination, student rendering."""
        assert self.domain is not None
        rng = np.random.default_rng([self.train_seed, 10_000 + self.train_left])
        items = self.pool.training_items(rng, self.config.max_train_items)
        gate = {"not_from_teacher": 0, "contaminated": 0, "unrenderable": 0}
        examples, self._gated_samples = [], []
        # A target the student cannot hold (an LLM teacher's answer can be any length) is
        # unrenderable here, not an error inside fine_tune after the TRAIN has been paid for.
        longest = getattr(self.student, "max_target_chars", None)
        for s in items:
            if s.digest not in self.ledger:
                gate["not_from_teacher"] += 1
            elif self.index.contaminated(s.question):
                gate["contaminated"] += 1
            elif (ex := self.domain.to_student(s.question, s.answer)) is None or (
                longest is not None and len(ex[1]) > longest
            ):
                gate["unrenderable"] += 1
            else:
                examples.append(ex)
                self._gated_samples.append(s)
        return examples, gate

    def _train(self, terms: dict[str, float]) -> dict[str, Any]:
        assert self.domain is not None
        examples, gate = self._gated  # computed by _invalid_reason for this very step
        self.contaminated_removed += gate["contaminated"]
        terms["contamination"] = rewards.contamination_penalty(
            gate["contaminated"], self.config.contamination_penalty
        )
        self.train_left -= 1
        terms["train_cost"] = rewards.train_cost(1, self.config.train_cost)
        curated = len(examples)
        if self.config.replay_ratio and self.config.student_kind == "tiny":
            rng = np.random.default_rng([self.train_seed, 20_000 + self.train_left])
            examples = with_replay(examples, self._replay_source(), self.config.replay_ratio, rng)
        start = time.perf_counter()
        trained = self.student.fine_tune(examples, seed=self.train_seed)
        self.last_eval = evaluate(self.domain, self.student, self.public, trained.state)
        self.student_seconds += time.perf_counter() - start
        terms["gain"] = rewards.best_gain(self.best_public, self.last_eval.score)
        if self.last_eval.score > self.best_public:
            self.best_public, self.best_state = self.last_eval.score, trained.state
            self.best_samples = self._gated_samples  # what the best TRAIN trained on, in order
        return {
            "examples": curated,
            "replayed": len(examples) - curated,
            "gate": gate,
            "steps": trained.steps,
            "final_loss": trained.losses[-1] if trained.losses else None,
            "public": self.last_eval.score,
            "per_skill": self.last_eval.per_skill,
        }

    def _final(self) -> dict[str, Any]:
        """Score the best public TRAIN's student on private (the paper's final replay).

        Fine-tuning is seeded and deterministic, so keeping the best TRAIN's weights is the same
        as retraining its pool from the base, and costs nothing.
        """
        assert self.domain is not None
        base_private = self._base_eval("private", self.private).score
        start = time.perf_counter()
        if self.best_state is None:
            final_private = base_private
        else:
            final_private = evaluate(self.domain, self.student, self.private, self.best_state).score
        self.student_seconds += time.perf_counter() - start
        base_public = self.base_eval.score
        return {
            "base_public": base_public,
            "final_public": self.best_public,
            "base_private": base_private,
            "final_private": final_private,
            "gain_abs": final_private - base_private,
            "gain_rel": rewards.relative_gain(base_private, final_private),
            "public_private_gap": self.best_public - final_private,
            "teacher_samples": self.config.teacher_budget - self.teacher_left,
            "train_runs": self.config.train_budget - self.train_left,
            "student_seconds": self.student_seconds,
            "invalid_actions": self.invalid_actions,
            "contaminated_removed": self.contaminated_removed,
        }

    # ------------------------------------------------------------------ actions

    def decode(self, action: dict[str, Any]) -> tuple[Action | None, str | None]:
        """Turn a structured action into an :class:`Action`, or say why it is malformed."""
        assert self.domain is not None
        try:
            op = Op(int(action["op"]))
            skill_i, diff_i = int(action["skill"]), int(action["difficulty"])
            amount_i, param = int(action["amount"]), int(action["param"])
        except (KeyError, TypeError, ValueError) as exc:
            keys = sorted(self.action_space.spaces)
            return None, f"malformed action {action!r}: expected a dict with integer {keys} ({exc})"
        skills = self.domain.skill_names
        indices = (skill_i, diff_i, amount_i, param)
        error = index_error(op, indices, self.domain.name, skills, self.config.amounts)
        if error is not None:
            return None, error
        return (
            Action(
                op=op,
                skill=skills[skill_i] if skill_i < len(skills) else "",
                difficulty=DIFFICULTIES[diff_i],
                amount=self.config.amounts[amount_i],
                threshold=FILTER_THRESHOLDS[param],
                weight=MIX_WEIGHTS[param],
                order=ORDERS[param],
            ),
            None,
        )

    def _invalid_reason(self, a: Action) -> str | None:
        cfg, pool = self.config, self.pool
        if a.op == Op.GENERATE and a.amount > self.teacher_left:
            return (
                f"GENERATE of {a.amount} items needs {a.amount} teacher samples; "
                f"{self.teacher_left} left"
            )
        if a.op == Op.VERIFY:
            n = min(a.amount, pool.unverified())
            if n == 0:
                return "VERIFY: no unverified items in the pool"
            if n > self.teacher_left:
                return f"VERIFY of {n} items needs {n} teacher samples; {self.teacher_left} left"
        if a.op in (Op.FILTER, Op.DEDUP, Op.DECONTAMINATE, Op.ORDER) and not len(pool):
            return f"{a.op.name}: the pool is empty"
        if a.op == Op.TRAIN:
            if self.train_left == 0:
                return "TRAIN: no TRAIN runs left in the budget"
            self._gated = self._train_examples()
            n = len(self._gated[0])
            if n < cfg.min_train_items:
                return (
                    f"TRAIN: insufficient valid samples: {n} usable items, at least "
                    f"{cfg.min_train_items} needed (GENERATE more, or relax FILTER/MIX)"
                )
        return None

    # ------------------------------------------------------------------ observation and info

    def _observation(self) -> dict[str, np.ndarray]:
        assert self.domain is not None
        skills = self.domain.skill_names
        return structured_observation(
            self.config,
            acc=[self.last_eval.per_skill[k] for k in skills],
            base_acc=[self.base_eval.per_skill[k] for k in skills],
            counts=self.pool.counts(),
            stats=self.pool_stats,
            weights=[self.pool.weights[k] for k in skills],
            order=self.pool.order,
            used=(self.teacher_left, self.train_left, self.steps),
            scores=(self.best_public, self.last_eval.score, self.base_eval.score),
        )

    def _info(
        self, error: str | None, terms: dict[str, float], result: dict[str, Any]
    ) -> dict[str, Any]:
        assert self.domain is not None
        return {
            "domain": self.domain.name,
            "step": self.steps,
            "invalid_action": error,
            "reward_terms": terms,
            "result": result,
            "pool": self.pool_stats,
            "teacher_left": self.teacher_left,
            "train_left": self.train_left,
            "public": self.last_eval.score,
            "best_public": self.best_public,
        }

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            from dataeng_gym.envs.text import render_state

            return render_state(self)
        return None

    # ------------------------------------------------------------------ students

    def _student(self, domain: Domain) -> TinyStudent:
        if domain.name not in self._students:
            cfg = self.config
            if cfg.student_kind == "hf":
                from dataeng_gym.envs.hf_student import HFStudent

                student: Any = HFStudent(
                    cfg.hf_student, seed=cfg.student_seed, cache_dir=cfg.cache_dir
                )
            else:
                student = TinyStudent(cfg.student, seed=cfg.student_seed, cache_dir=cfg.cache_dir)
            student.load_base(self._base_key(domain), lambda: base_examples(domain, self.config))
            self._students[domain.name] = student
        return self._students[domain.name]

    def _base_key(self, domain: Domain) -> str:
        return base_key(domain, self.config)

    def _replay_source(self) -> list[tuple[str, str]]:
        """The base student's own training mix, built once per process and base checkpoint."""
        assert self.domain is not None
        key = (self._base_key(self.domain), self.config.student_seed)
        if key not in _REPLAY:
            _REPLAY[key] = base_examples(self.domain, self.config)
        return _REPLAY[key]

    def _base_eval(self, split: str, items: list[Item]) -> Evaluation:
        assert self.domain is not None
        # The answers depend on the decoding settings too (max_new_tokens, ...), not only on
        # the checkpoint, so the whole student config is part of the key.
        checkpoint = self.student.cache_path(self._base_key(self.domain)).name
        key = (checkpoint, repr(self.student.config), split, len(items))
        if key not in _BASE_EVALS:
            _BASE_EVALS[key] = evaluate(self.domain, self.student, items, None)
        return _BASE_EVALS[key]


_POOL_STATS = (
    "verified_frac",
    "verified_wrong_frac",
    "duplicate_frac",
    "malformed_frac",
    "mean_quality",
)

_INDEXES: dict[tuple[str, int, int], NgramIndex] = {}
_REPLAY: dict[tuple[str, int], list[tuple[str, str]]] = {}


def _decontamination_index(domain: Domain, n: int) -> NgramIndex:
    key = (domain.name, domain.seed, n)
    if key not in _INDEXES:
        _INDEXES[key] = NgramIndex(domain.eval_texts, n)
    return _INDEXES[key]


def with_replay(
    examples: list[tuple[str, str]],
    source: Sequence[tuple[str, str]],
    ratio: float,
    rng: np.random.Generator,
) -> list[tuple[str, str]]:
    """``examples`` with ``round(ratio * len(examples))`` draws from ``source`` spread evenly.

    The curated examples keep their order (a curriculum stays a curriculum); replayed ones
    are drawn without replacement and slotted in at even intervals.

    >>> import numpy as np
    >>> with_replay([("a", "1"), ("b", "2")], [("r", "0")], 0.5, np.random.default_rng(0))
    [('a', '1'), ('b', '2'), ('r', '0')]
    """
    k = min(len(source), round(ratio * len(examples)))
    picked = [source[int(i)] for i in rng.choice(len(source), size=k, replace=False)]
    out: list[tuple[str, str]] = []
    j = 0
    for i, ex in enumerate(examples):
        out.append(ex)
        while j < k and (j + 1) * len(examples) <= (i + 1) * k:
            out.append(picked[j])
            j += 1
    return out + picked[j:]


def base_key(domain: Domain, config: EnvConfig) -> str:
    """Names the base mix of :func:`base_examples`: the student's base-checkpoint cache key."""
    return (
        f"{domain.name}-{domain.seed}-{domain.fingerprint}-items{config.base_items}"
        f"-skills{config.base_skill_mix or domain.base_mix}"
        f"-diff{config.base_difficulty_mix}"
    )


def base_examples(domain: Domain, config: EnvConfig) -> list[tuple[str, str]]:
    """The base student's general, skewed training mix: clean items, most of a few skills.

    Skills get the domain's ``base_mix`` shares (or ``config.base_skill_mix``) in a seeded order,
    so some skills start strong and others weak, which is what makes targeted curation pay off.
    """
    rng = np.random.default_rng([config.student_seed, 99])
    order = rng.permutation(len(domain.skills))
    shares = np.zeros(len(domain.skills))
    mix = np.array((config.base_skill_mix or domain.base_mix)[: len(domain.skills)], dtype=float)
    shares[order[: len(mix)]] = mix
    shares /= shares.sum()
    skills = rng.choice(len(domain.skills), size=config.base_items, p=shares)
    diffs = rng.choice(DIFFICULTIES, size=config.base_items, p=config.base_difficulty_mix)
    out = []
    for k, d in zip(skills, diffs):
        item = domain.sample(domain.skills[k].name, int(d), rng)
        ex = domain.to_student(item.question, item.answer)
        assert ex is not None
        out.append(ex)
    return out


def structured_action(
    op: Op, skill: int = 0, difficulty: int = 0, amount: int = 0, param: int = 0
) -> dict[str, int]:
    """An action of :func:`structured_spaces`: every argument is an index into its space.

    >>> structured_action(Op.GENERATE, skill=1, amount=2)
    {'op': 0, 'skill': 1, 'difficulty': 0, 'amount': 2, 'param': 0}
    """
    return {
        "op": int(op),
        "skill": skill,
        "difficulty": difficulty,
        "amount": amount,
        "param": param,
    }


def structured_observation(
    config: EnvConfig,
    *,
    acc: Sequence[float],
    base_acc: Sequence[float],
    counts: np.ndarray,
    stats: dict[str, float],
    weights: Sequence[float],
    order: str,
    used: tuple[int, int, int],
    scores: tuple[float, float, float],
) -> dict[str, np.ndarray]:
    """The observation of :func:`structured_spaces`, from per-skill values in skill order.

    One builder for DataEngEnv and its simulated twin, so that a policy sees the same
    encoding in both. ``counts`` are pool items per [skill, difficulty]; ``used`` is
    (teacher samples left, TRAIN runs left, steps taken).
    """
    n = len(acc)

    def per_skill(values: Sequence[float]) -> np.ndarray:
        out = np.zeros(MAX_SKILLS, np.float32)
        out[:n] = values
        return out

    pool_counts = np.zeros((MAX_SKILLS, len(DIFFICULTIES)), np.float32)
    pool_counts[:n] = np.asarray(counts) / config.teacher_budget
    teacher_left, train_left, steps = used
    return {
        "skill_acc": per_skill(acc),
        "base_skill_acc": per_skill(base_acc),
        "skill_mask": per_skill([1.0] * n),
        "pool_counts": np.clip(pool_counts, 0, 1),
        "pool_stats": np.array([stats[k] for k in _POOL_STATS], dtype=np.float32),
        "mix_weights": per_skill(weights),
        "order": np.eye(len(ORDERS), dtype=np.float32)[ORDERS.index(order)],
        "budgets": np.array(
            [
                teacher_left / config.teacher_budget,
                train_left / config.train_budget,
                1 - steps / config.max_steps,
            ],
            dtype=np.float32,
        ),
        "scores": np.array(scores, dtype=np.float32),
    }


def structured_spaces(config: EnvConfig) -> tuple[spaces.Dict, spaces.Dict]:
    """The observation and action spaces of DataEng-v1 (and of its simulated twin).

    One definition for both envs: a policy trained in one acts in the other, and a saved
    RLlib checkpoint's flattening order depends on the observation space.
    """
    n = MAX_SKILLS
    unit = spaces.Box(0.0, 1.0, (n,), np.float32)
    observation = spaces.Dict(
        {
            "skill_acc": unit,
            "base_skill_acc": unit,
            "skill_mask": unit,
            "pool_counts": spaces.Box(0.0, 1.0, (n, len(DIFFICULTIES)), np.float32),
            "pool_stats": spaces.Box(0.0, 1.0, (5,), np.float32),
            "mix_weights": spaces.Box(0.0, max(MIX_WEIGHTS), (n,), np.float32),
            "order": spaces.Box(0.0, 1.0, (len(ORDERS),), np.float32),
            "budgets": spaces.Box(0.0, 1.0, (3,), np.float32),
            "scores": spaces.Box(0.0, 1.0, (3,), np.float32),
        }
    )
    action = spaces.Dict(
        {
            "op": spaces.Discrete(len(Op)),
            "skill": spaces.Discrete(n),
            "difficulty": spaces.Discrete(len(DIFFICULTIES)),
            "amount": spaces.Discrete(len(config.amounts)),
            "param": spaces.Discrete(4),
        }
    )
    return observation, action


ARGUMENTS: dict[Op, tuple[str, ...]] = {
    Op.GENERATE: ("skill", "difficulty", "amount", "instructions"),
    Op.VERIFY: ("amount",),
    Op.FILTER: ("threshold",),
    Op.MIX: ("skill", "weight"),
    Op.ORDER: ("order",),
}
"""The arguments each operation reads; the others are ignored."""


def _action_record(action: Action | None) -> dict[str, Any] | None:
    """The action as a JSON-able dict with only the arguments its op reads."""
    if action is None:
        return None
    record: dict[str, Any] = {"op": action.op.name.lower()}
    for name in ARGUMENTS.get(action.op, ()):
        value = getattr(action, name)
        if value != "":
            record[name] = value
    return record
