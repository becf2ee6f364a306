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

from dataeng_gym.envs.actions import MAX_AMOUNT, action_schema, clip, parse_action
from dataeng_gym.envs.data_env import DataEngEnv
from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.pool import ORDERS

__all__ = ["CHARSET", "DataEngTextEnv", "action_help", "parse_action", "render_state"]

CHARSET = string.printable
"""Characters of text observations and actions (the Text space default is alphanumeric only)."""
HISTORY_INSTRUCTIONS = 200
"""Characters of a GENERATE's instructions the history shows (the action itself takes 2,000)."""

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


def action_help(skills: tuple[str, ...]) -> str:
    """How to reply: the actions in words, then the JSON schema an action is validated against."""
    schema = json.dumps(action_schema(skills), separators=(",", ":"))
    return f"{ACTION_HELP}\nSKILL is one of {list(skills)}. JSON schema of an action:\n{schema}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_state(env: DataEngEnv, ask: str | None = None) -> str:
    """The prompt an LLM agent reads: everything the structured observation holds, and more.

    ``ask`` replaces the closing "Your action" section (the protocols ask for a whole plan).
    """
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
        f"{cfg.max_train_items}"
        + (
            f"; each TRAIN also replays {cfg.replay_ratio:.0%} as many of the student's "
            "original (general) training items, which protects the skills the pool leaves out"
            if cfg.replay_ratio and cfg.student_kind == "tiny"
            else ""
        ),
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
            action = json.dumps(_text_form(h["action"]), ensure_ascii=False)
            lines.append(f"{h['step']}. {action} -> {outcome}")
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
    lines += ["", "## Your action", action_help(d.skill_names)] if ask is None else ["", ask]
    text = "\n".join(lines)
    return "".join(ch if ch in CHARSET else "?" for ch in text)


def _text_form(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """An env history record in the text twin's words (``order`` is called ``strategy``).

    Long teacher instructions are clipped, so that twelve of them fit the observation.
    """
    if record is None:
        return None
    return {
        ("strategy" if k == "order" else k): (
            clip(v, HISTORY_INSTRUCTIONS) if k == "instructions" else v
        )
        for k, v in record.items()
    }


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

    ``Text(charset=string.printable)`` holding one JSON object (see ``ACTION_HELP``; the
    pydantic schema of :mod:`dataeng_gym.envs.actions` validates it, and its JSON schema is
    printed in the prompt). Text that does not parse or validate is an invalid action: nothing
    changes, the penalty applies and ``info["invalid_action"]`` names the field and the allowed
    values. ``info["skills"]`` lists the skills an action may name.

    The rest (rewards, episode end, arguments, version history) is as in :class:`DataEngEnv`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observation_space = spaces.Text(max_length=32_000, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(max_length=4_000, min_length=0, charset=CHARSET)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        _, info = super().reset(seed=seed, options=options)
        assert self.domain is not None
        info["skills"] = self.domain.skill_names  # what an action's "skill" may name
        return render_state(self), info

    def step(self, action: str):  # type: ignore[override]
        assert self.domain is not None
        if not isinstance(action, str):
            decoded, error = None, f"action must be a JSON string, got {type(action).__name__}"
        else:
            decoded, error = parse_action(action, self.domain.skill_names)
        _, reward, terminated, truncated, info = self._step(decoded, error)
        info["skills"] = self.domain.skill_names
        return render_state(self), reward, terminated, truncated, info
