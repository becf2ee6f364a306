"""Run one episode of a policy in an env, logging every step as it happens."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym

from dataeng_gym.io import append_jsonl, write_json
from dataeng_gym.policies.base import Policy

FINAL_KEYS = (
    "base_public",
    "final_public",
    "base_private",
    "final_private",
    "gain_abs",
    "gain_rel",
    "public_private_gap",
    "teacher_samples",
    "train_runs",
    "student_seconds",
    "invalid_actions",
    "contaminated_removed",
)
"""The fields of an episode's final ``info`` that make its summary."""


def run_episode(
    env: gym.Env,
    policy: Policy,
    *,
    seed: int,
    domain: str | None = None,
    out: str | Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Play one episode; return its summary (the final info fields plus context).

    Beyond the final info fields, the summary holds ``train_publics`` (the public score of each
    TRAIN, in order) and the per-skill public accuracy of the base and of the best TRAIN
    (``base_skill_public``, ``final_skill_public``). With ``out``, each step is appended to
    ``out/episode.jsonl`` as it happens and the summary is written atomically to
    ``out/summary.json`` at the end.
    """
    start = time.perf_counter()
    log = Path(out) / "episode.jsonl" if out else None
    if log is not None and log.exists():
        log.unlink()  # a rerun of the same episode starts its step log afresh
    options = {"domain": domain} if domain else None
    obs, info = env.reset(seed=seed, options=options)
    policy.reset(seed)
    total, info_final = 0.0, info
    base_eval = getattr(env.unwrapped, "base_eval", None)
    base_skills = dict(base_eval.per_skill) if base_eval is not None else {}
    best_skills, train_publics = base_skills, []
    while True:
        action = policy.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        record = {
            "step": info["step"],
            "action": env.unwrapped.history[-1]["action"],
            "raw_action": _raw(action),
            "invalid_action": info["invalid_action"],
            "reward": reward,
            "reward_terms": info["reward_terms"],
            "result": info["result"],
            "pool": info["pool"],
            "public": info["public"],
            "best_public": info["best_public"],
            "teacher_left": info["teacher_left"],
            "train_left": info["train_left"],
        }
        if hasattr(policy, "last_info"):  # e.g. an LLM policy: its calls, re-asks, fallback
            record["policy"] = policy.last_info
        if "per_skill" in info["result"]:  # a TRAIN: keep the curve and the best's skills
            train_publics.append(info["result"]["public"])
            if info["reward_terms"]["gain"] > 0:
                best_skills = dict(info["result"]["per_skill"])
        if log is not None:
            append_jsonl(log, record)
        if on_step is not None:
            on_step(record)
        if terminated or truncated:
            info_final = info
            break
    config = env.unwrapped.config
    summary = {
        "domain": info_final["domain"],
        "seed": seed,
        "steps": info_final["step"],
        "return": total,
        "wall_seconds": time.perf_counter() - start,
        "config": asdict(config),
        **{k: info_final.get(k) for k in FINAL_KEYS},
        "train_publics": train_publics,
        "base_skill_public": base_skills,
        "final_skill_public": best_skills,
    }
    if hasattr(policy, "stats"):  # e.g. an LLM policy: tokens, latency, failures by kind
        summary["policy_stats"] = policy.stats
    if out is not None:
        write_json(Path(out) / "summary.json", summary)
    return summary


def _raw(action: Any) -> Any:
    """The action as the policy gave it, JSON-able, so that ``replay`` can re-execute it."""
    if isinstance(action, str):
        return action
    if isinstance(action, dict):
        return {k: v.item() if hasattr(v, "item") else v for k, v in action.items()}
    return None
