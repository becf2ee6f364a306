"""The text twin: the same dynamics, a prompt as observation and a JSON object as action.

An LLM agent reads the rendered state (domain description, budgets, per-skill public accuracy
now and at base, pool statistics, the action history and a few bad cases) and replies with one
JSON object. Nothing from the ``private`` split is ever rendered.
"""

from __future__ import annotations

import json
import string
from typing import Any

import numpy as np
from gymnasium import spaces

from dataeng_gym.envs.data_env import Action, DataEngEnv, Op
from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.pool import ORDERS

CHARSET = string.printable
"""Characters of text observations and actions (the Text space default is alphanumeric only)."""

MAX_AMOUNT = 1000
"""Largest ``amount`` one text action may ask for."""

ACTION_HELP = f"""\
Reply with exactly one JSON object, one of:
  {{"op": "generate", "skill": SKILL, "difficulty": 1-3, "amount": 1-{MAX_AMOUNT},
   "instructions": "optional text for the teacher"}}
  {{"op": "verify", "amount": 1-{MAX_AMOUNT}}}  check unverified items (costs teacher samples)
  {{"op": "filter", "threshold": 0.0-1.0}}  drop malformed, off-skill, verified-wrong and
                                          low-quality items
  {{"op": "dedup"}}                         drop exact and near duplicates
  {{"op": "decontaminate"}}                 drop items that overlap the evaluation sets
  {{"op": "mix", "skill": SKILL, "weight": 0.0-2.0}}   down- or up-weight a skill in training
  {{"op": "order", "strategy": {" | ".join(ORDERS)}}}
  {{"op": "train"}}                         fine-tune the student on the pool, score it on public
  {{"op": "submit"}}                        end: the best TRAIN is scored on hidden data"""


def parse_action(text: str, skills: tuple[str, ...]) -> tuple[Action | None, str | None]:
    """Parse one JSON action; on any problem return ``(None, reason)``, never raise."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"action is not valid JSON ({exc.__class__.__name__}: {exc})"
    if not isinstance(obj, dict):
        return None, f"action must be a JSON object, got {type(obj).__name__}"
    names = [op.name.lower() for op in Op]
    op_name = obj.get("op")
    if not isinstance(op_name, str) or op_name.lower() not in names:
        return None, f"field 'op' must be one of {names}, got {op_name!r}"
    op = Op[op_name.upper()]
    fields: dict[str, Any] = {"op": op}
    try:
        if op in (Op.GENERATE, Op.MIX):
            skill = obj.get("skill")
            if skill not in skills:
                return None, f"field 'skill' must be one of {list(skills)}, got {skill!r}"
            fields["skill"] = skill
        if op == Op.GENERATE:
            fields["difficulty"] = _int(obj, "difficulty", DIFFICULTIES[0], DIFFICULTIES[-1])
            instructions = obj.get("instructions", "")
            if not isinstance(instructions, str):
                return None, "field 'instructions' must be a string"
            fields["instructions"] = instructions
        if op in (Op.GENERATE, Op.VERIFY):
            fields["amount"] = _int(obj, "amount", 1, MAX_AMOUNT)
        if op == Op.FILTER:
            fields["threshold"] = _float(obj, "threshold", 0.0, 1.0)
        if op == Op.MIX:
            fields["weight"] = _float(obj, "weight", 0.0, 2.0)
        if op == Op.ORDER:
            strategy = obj.get("strategy")
            if strategy not in ORDERS:
                return None, f"field 'strategy' must be one of {list(ORDERS)}, got {strategy!r}"
            fields["order"] = strategy
    except ValueError as exc:
        return None, str(exc)
    return Action(**fields), None


def _int(obj: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"field {name!r} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _float(obj: dict[str, Any], name: str, lo: float, hi: float) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"field {name!r} must be a number in {lo}..{hi}, got {value!r}")
    return float(value)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_state(env: DataEngEnv) -> str:
    """The prompt an LLM agent reads: everything the structured observation holds, and more."""
    d, cfg, pool = env.domain, env.config, env.pool
    assert d is not None
    stats = env.pool_stats
    counts = pool.counts()
    lines = [f"# Data engineering task: {d.name}", "", d.description, ""]
    lines.append("## Skills: public accuracy after the last TRAIN / of the base student")
    for i, skill in enumerate(d.skills):
        now, base = env.last_eval.per_skill[skill.name], env.base_eval.per_skill[skill.name]
        per_d = " ".join(f"d{k}={int(c)}" for k, c in zip(DIFFICULTIES, counts[i]))
        lines.append(
            f"- {skill.name} ({skill.description}): {_pct(now)} / {_pct(base)}; "
            f"pool {per_d}; mix weight {pool.weights[skill.name]:g}"
        )
    lines += [
        "",
        "## Budgets",
        f"teacher samples left: {env.teacher_left} of {cfg.teacher_budget}; "
        f"TRAIN runs left: {env.train_left} of {cfg.train_budget}; "
        f"steps left: {cfg.max_steps - env.steps} of {cfg.max_steps}; "
        f"a TRAIN needs at least {cfg.min_train_items} usable items and uses the first "
        f"{cfg.max_train_items}",
        "",
        "## Pool",
        f"{stats['size']} items; verified {_pct(stats['verified_frac'])} "
        f"(of those judged wrong: {_pct(stats['verified_wrong_frac'])}); "
        f"duplicates {_pct(stats['duplicate_frac'])}; malformed or off-skill "
        f"{_pct(stats['malformed_frac'])}; mean teacher quality {stats['mean_quality']:.2f}; "
        f"training order: {pool.order}",
        "",
        "## Scores (public split)",
        f"base {_pct(env.base_eval.score)}; best so far {_pct(env.best_public)}; "
        f"last TRAIN {_pct(env.last_eval.score)}",
    ]
    if env.history:
        lines += ["", "## History (most recent last)"]
        for h in env.history[-12:]:
            outcome = (
                f"INVALID: {h['invalid_action']}"
                if h["invalid_action"]
                else json.dumps(_brief(h["result"]))
            )
            lines.append(f"{h['step']}. {json.dumps(h['action'])} -> {outcome}")
    failures = env.last_eval.failures if env.last_eval is not env.base_eval else []
    if failures and cfg.bad_cases:
        rng = np.random.default_rng([env.train_seed, env.steps])
        picks = rng.choice(len(failures), size=min(cfg.bad_cases, len(failures)), replace=False)
        lines += ["", "## Bad cases: public items the last trained student got wrong"]
        for i in sorted(picks):
            item, given = failures[int(i)]
            q = item.question.replace("\n", " | ")
            lines.append(
                f"- [{item.skill}, d{item.difficulty}] {q} -> expected {item.answer!r}, "
                f"student said {given!r}"
            )
    lines += ["", "## Your action", ACTION_HELP]
    text = "\n".join(lines)
    return "".join(ch if ch in CHARSET else "?" for ch in text)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in result.items()
        if k != "per_skill"
    }


class DataEngTextEnv(DataEngEnv):
    """The text twin of :class:`DataEngEnv`: same dynamics, a prompt in, a JSON action out.

    ## Observation Space

    ``Text(charset=string.printable)``: the rendered state (see :func:`render_state`).

    ## Action Space

    ``Text(charset=string.printable)`` holding one JSON object (see ``ACTION_HELP``). Text
    that does not parse or validate is an invalid action: nothing changes, the penalty applies
    and ``info["invalid_action"]`` names the field and the allowed values.

    The rest (rewards, episode end, arguments, version history) is as in :class:`DataEngEnv`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observation_space = spaces.Text(max_length=32_000, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(max_length=4_000, min_length=0, charset=CHARSET)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        _, info = super().reset(seed=seed, options=options)
        return render_state(self), info

    def step(self, action: str):  # type: ignore[override]
        assert self.domain is not None
        if not isinstance(action, str):
            decoded, error = None, f"action must be a JSON string, got {type(action).__name__}"
        else:
            decoded, error = parse_action(action, self.domain.skill_names)
        _, reward, terminated, truncated, info = self._step(decoded, error)
        return render_state(self), reward, terminated, truncated, info
