"""Record real TRAIN outcomes of the tiny student, and fit the surrogate to them.

``dataeng-gym calibrate --domain code --pools 60 --policies weakest-skill uniform --out DIR``
runs the real env (:class:`~dataeng_gym.envs.data_env.DataEngEnv` with the tiny student) two
ways. *Random pools*: a randomised curation script (random generation mixes over skills,
difficulties and amounts; random verifying, filtering, deduplication, decontamination, mixing
weights and orders between TRAINs) covers the space broadly. *Policy pools*: whole episodes of
the named policies, each action replaced by a random curation action with probability
``explore``, record the TRAINs that good policies reach (DAgger-style: random pools alone
rarely look like a clean, balanced pool, and the surrogate under-predicted exactly those).

Each TRAIN's training counts and per-skill public accuracy are appended to ``records.jsonl``
as they are produced (a rerun resumes); then the surrogate is fitted on four fifths of the
records and evaluated on the other fifth (every fifth record, so every source is in both):
mean absolute error in accuracy points against a constant predictor, and rank correlation of
predicted and real overall gains. It is refitted on everything and written to
``surrogate.json``, with the report in ``report-DOMAIN.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import DataEngEnv, Op, structured_action
from dataeng_gym.envs.surrogate import (
    fit_surrogate,
    save_surrogate,
    spearman,
    train_recipe,
    training_counts,
)
from dataeng_gym.io import append_jsonl, read_jsonl, write_json


def config_key(config: EnvConfig) -> str:
    """A short digest of the config fields a TRAIN's outcome depends on."""
    c = dataclasses.asdict(config)
    # Where and how fast it trains, not what: keys from before stay valid. A GPU or a compiled
    # student matches the CPU's eager one closely, not bitwise (docs/results.md).
    c["student"].pop("device", None)
    c["student"].pop("compile", None)
    keep = {
        k: c[k]
        for k in (
            "domain",
            "student",
            "student_seed",
            "replay_ratio",
            "base_items",
            "base_skill_mix",
            "base_difficulty_mix",
            "eval_public_limit",
            "max_train_items",
            "domain_seed",
        )
    }
    return hashlib.blake2b(repr(sorted(keep.items())).encode(), digest_size=6).hexdigest()


def gated_training_samples(env: DataEngEnv) -> list[Any]:
    """The samples the next TRAIN will train on, in order: the env's own gate, replayed."""
    assert env.domain is not None
    rng = np.random.default_rng([env.train_seed, 10_000 + env.train_left])
    items = env.pool.training_items(rng, env.config.max_train_items)
    return [
        s
        for s in items
        if s.digest in env.ledger
        and not env.index.contaminated(s.question)
        and env.domain.to_student(s.question, s.answer) is not None
    ]


def _train_record(
    env: DataEngEnv,
    key: str,
    counts: np.ndarray,
    position: np.ndarray,
    result: dict[str, Any],
    **ids: Any,
) -> dict[str, Any]:
    """One calibration record: what a TRAIN trained on and the per-skill scores it reached."""
    assert env.domain is not None
    return {
        "config_key": key,
        "domain": env.domain.name,
        **ids,
        "order": env.pool.order,
        "counts": counts.tolist(),
        "position": position.tolist(),
        "per_skill": [result["per_skill"][s] for s in env.domain.skill_names],
        "public": result["public"],
        "base_public": env.base_eval.score,
    }


def _random_round(env: DataEngEnv, rng: np.random.Generator) -> None:
    """Apply one randomised round of curation to ``env`` (never TRAIN or SUBMIT)."""
    cfg = env.config
    assert env.domain is not None
    n_skills = len(env.domain.skills)
    # from one-skill pools (imbalance, forgetting) to even ones (what good curation builds)
    focus = rng.dirichlet(np.full(n_skills, float(rng.choice([0.3, 1.0, 5.0]))))
    for _ in range(int(rng.integers(2, 9))):
        amount = int(rng.integers(len(cfg.amounts)))
        if cfg.amounts[amount] > env.teacher_left:
            break
        skill = int(rng.choice(n_skills, p=focus))
        env.step(structured_action(Op.GENERATE, skill, int(rng.integers(3)), amount))
    steps = [
        (0.6, structured_action(Op.VERIFY, amount=int(rng.integers(len(cfg.amounts))))),
        (0.6, structured_action(Op.FILTER, param=int(rng.integers(4)))),
        (0.6, structured_action(Op.DEDUP)),
        (0.4, structured_action(Op.DECONTAMINATE)),
        (
            0.25,
            structured_action(
                Op.MIX, skill=int(rng.integers(n_skills)), param=int(rng.integers(4))
            ),
        ),
        (0.5, structured_action(Op.ORDER, param=int(rng.integers(4)))),
    ]
    for p, a in steps:
        if rng.random() < p and len(env.pool):
            env.step(a)


def record_pools(
    config: EnvConfig,
    pools: int,
    out: str | Path,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Record ``pools`` real TRAIN outcomes to ``out/records.jsonl`` (resuming); return all."""
    path = Path(out) / "records.jsonl"
    key = config_key(config)
    config = config.replace(max_steps=1000)  # room for every round; the outcome ignores it
    records = [
        r
        for r in (read_jsonl(path) if path.exists() else [])
        if r["config_key"] == key and r.get("source", "random") == "random"
    ]
    done = {(r["episode"], r["train"]) for r in records if r.get("seed", 0) == seed}
    env = DataEngEnv(config)
    episode, barren = 0, 0
    largest = int(np.argmax(config.amounts))
    start = time.perf_counter()
    while len(records) < pools:
        if all((episode, t) in done for t in range(config.train_budget)):
            episode += 1
            continue
        if barren >= MAX_BARREN_EPISODES:
            raise ValueError(
                f"{barren} calibration episodes in a row made no valid TRAIN: a pool of "
                f"min_train_items={config.min_train_items} usable items is out of reach of "
                f"teacher_budget={config.teacher_budget}; lower the one or raise the other"
            )
        before = len(records)
        env.reset(seed=seed * 100_000 + episode)
        rng = np.random.default_rng([seed, episode, 7])
        for t in range(config.train_budget):
            if len(records) >= pools or env.teacher_left < min(config.amounts):
                break
            _random_round(env, rng)
            samples = gated_training_samples(env)
            while len(samples) < config.min_train_items and env.teacher_left >= max(config.amounts):
                skill = int(rng.integers(len(env.domain.skills)))
                env.step(structured_action(Op.GENERATE, skill, 0, largest))
                samples = gated_training_samples(env)
            if len(samples) < config.min_train_items or env.done:
                break
            counts, position = training_counts(samples, env.domain.skill_names)
            _, _, _, _, info = env.step(structured_action(Op.TRAIN))
            if info["invalid_action"]:
                break
            result = info["result"]
            record = _train_record(
                env, key, counts, position, result, seed=seed, episode=episode, train=t
            )
            if (episode, t) not in done:
                append_jsonl(path, record)
                records.append(record)
                if progress:
                    progress(
                        f"[{time.perf_counter() - start:6.0f}s] record {len(records)}/{pools}: "
                        f"{len(samples)} items, public {100 * result['public']:.1f}"
                    )
            if env.done:
                break
        barren = barren + 1 if len(records) == before else 0
        episode += 1
    return records[:pools]


MAX_BARREN_EPISODES = 20
"""Calibration episodes in a row without a record before record_pools gives up."""


POLICY_SEEDS = 50_000
"""Policy-pool episodes start from seed ``POLICY_SEEDS + 1000 * policy + episode`` (away from
the evaluation seeds 10,000+ of ``experiments/train_ppo.py``)."""


def record_policy_pools(
    config: EnvConfig,
    policies: Sequence[str],
    episodes: int,
    out: str | Path,
    *,
    explore: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Record the TRAINs of ``episodes`` episodes of each policy to ``out/records.jsonl``.

    With probability ``explore`` an action is replaced by a random curation action (never
    TRAIN or SUBMIT), so the records cover the neighbourhood of the policy's pools. Episodes
    already in the file are skipped; returns this call's policy records (old and new).
    """
    from dataeng_gym.policies import make_policy

    if not 0 <= explore < 1:
        raise ValueError(f"explore must be in [0, 1), got {explore}")
    path = Path(out) / "records.jsonl"
    key = config_key(config)
    old = [r for r in read_jsonl(path) if r["config_key"] == key] if path.exists() else []
    done = {(r.get("source"), r["episode"]) for r in old}
    records = [r for r in old if r.get("source") in policies and r["episode"] < episodes]
    env = DataEngEnv(config)
    start = time.perf_counter()
    for k, name in enumerate(policies):
        policy = make_policy(name, config, seed=k)
        for episode in range(episodes):
            if (name, episode) in done:
                continue
            seed = POLICY_SEEDS + 1000 * k + episode
            rng = np.random.default_rng([seed, 11])
            obs, info = env.reset(seed=seed)
            policy.reset(seed)
            new: list[dict[str, Any]] = []
            while not env.done:
                action = policy.act(obs, info)
                if rng.random() < explore:
                    spaces = env.action_space.spaces  # drawn from the seeded rng: reproducible
                    action = {k: int(rng.integers(space.n)) for k, space in spaces.items()}
                    action["op"] = int(rng.integers(int(Op.TRAIN)))  # GENERATE .. ORDER
                if int(action["op"]) != int(Op.TRAIN):
                    obs, _, _, _, info = env.step(action)
                    continue
                assert env.domain is not None
                samples = gated_training_samples(env)
                counts, position = training_counts(samples, env.domain.skill_names)
                obs, _, _, _, info = env.step(action)
                if info["invalid_action"]:
                    continue
                new.append(
                    _train_record(
                        env,
                        key,
                        counts,
                        position,
                        info["result"],
                        source=name,
                        seed=seed,
                        episode=episode,
                        train=len(new),
                    )
                )
            for record in new:  # a whole episode at once, so a rerun never duplicates one
                append_jsonl(path, record)
            records.extend(new)
            if progress:
                best = max([r["public"] for r in new], default=float("nan"))
                progress(
                    f"[{time.perf_counter() - start:6.0f}s] {name} episode {episode + 1}/"
                    f"{episodes}: {len(new)} TRAINs, best public {100 * best:.1f}"
                )
    return records


def base_scores(config: EnvConfig) -> dict[str, Any]:
    """The base student's per-skill public and private accuracy and split sizes per skill."""
    from dataeng_gym.envs.data_env import _subset, evaluate

    env = DataEngEnv(config)
    env.reset(seed=0)
    assert env.domain is not None
    skills = env.domain.skill_names
    private = _subset(env.domain.private, config.eval_private_limit)
    priv = evaluate(env.domain, env.student, private, None)
    return {
        "base_public": [env.base_eval.per_skill[s] for s in skills],
        "base_private": [priv.per_skill[s] for s in skills],
        "public_counts": [sum(i.skill == s for i in env.public) for s in skills],
        "private_counts": [sum(i.skill == s for i in private) for s in skills],
        "skills": skills,
    }


def episode_growth(records: Sequence[dict[str, Any]], **fit: Any) -> dict[str, Any]:
    """Public gain of policy episodes from first to last TRAIN: real, and held-out predicted.

    The prediction comes from a surrogate fitted without that episode (leave one episode out).

    This is what a policy learns from the simulator about collecting more data before a later
    TRAIN; a surrogate that under-predicts it teaches a policy to stop early.
    """
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(records):
        if r.get("source", "random") != "random":
            groups.setdefault((r["source"], r["episode"]), []).append(i)
    real, predicted = [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        first, last = records[members[0]], records[members[-1]]
        rest = [r for i, r in enumerate(records) if i not in members]
        model = fit_surrogate(rest, **fit)
        p0, p1 = (
            model.predict(np.asarray(r["counts"]), np.asarray(r["position"])) for r in (first, last)
        )
        real.append(100 * (last["public"] - first["public"]))
        predicted.append(100 * (model.score(p1, "public") - model.score(p0, "public")))
    return {
        "episodes": len(real),
        "real_points": float(np.mean(real)) if real else None,
        "predicted_points": float(np.mean(predicted)) if predicted else None,
    }


def calibrate(
    config: EnvConfig,
    pools: int,
    out: str | Path,
    *,
    seed: int = 0,
    policies: Sequence[str] = (),
    policy_episodes: int = 0,
    explore: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Record random and policy pools, fit the surrogate, report its held-out error.

    Writes ``surrogate.json`` (keeping other domains already in it) and ``report-DOMAIN.json``.
    """
    out = Path(out)
    records = record_pools(config, pools, out, seed=seed, progress=progress)
    if policies and policy_episodes:
        records += record_policy_pools(
            config, policies, policy_episodes, out, explore=explore, progress=progress
        )
    base = base_scores(config)
    skills = base["skills"]
    test_mask = np.arange(len(records)) % 5 == 4
    train = [r for r, t in zip(records, test_mask) if not t]
    test = [r for r, t in zip(records, test_mask) if t]
    key = config_key(config)
    recipe = train_recipe(config)
    model = fit_surrogate(
        train, domain=config.domain, skills=skills, base=base, config_key=key, recipe=recipe
    )
    y = np.asarray([r["per_skill"] for r in test])
    pred = np.stack(
        [model.predict(np.asarray(r["counts"]), np.asarray(r["position"])) for r in test]
    )
    const = np.asarray([r["per_skill"] for r in train]).mean(axis=0)
    real_gain = [r["public"] - r["base_public"] for r in test]
    pred_gain = [
        model.score(p, "public") - model.score(np.asarray(base["base_public"]), "public")
        for p in pred
    ]
    report = {
        "domain": config.domain,
        "config_key": key,
        "records": len(records),
        "train_records": len(train),
        "test_records": len(test),
        "alpha": model.alpha,
        "mae_points": float(100 * np.abs(pred - y).mean()),
        "constant_mae_points": float(100 * np.abs(const - y).mean()),
        "overall_mae_points": float(100 * np.mean(np.abs(np.subtract(pred_gain, real_gain)))),
        "spearman_gain": spearman(pred_gain, real_gain),
        "per_skill_mae_points": (100 * np.abs(pred - y).mean(axis=0)).tolist(),
        "sources": {
            source: {
                "test_records": int(sum(m)),
                "mae_points": float(100 * np.abs(pred[m] - y[m]).mean()),
                "overall_mae_points": float(
                    100 * np.mean(np.abs(np.subtract(pred_gain, real_gain))[m])
                ),
            }
            for source in sorted({r.get("source", "random") for r in test})
            for m in [np.array([r.get("source", "random") == source for r in test])]
        },
        "episode_growth": episode_growth(
            records, domain=config.domain, skills=skills, base=base, config_key=key, recipe=recipe
        ),
    }
    final = fit_surrogate(
        records, domain=config.domain, skills=skills, base=base, config_key=key, recipe=recipe
    )
    save_surrogate(out / "surrogate.json", final)
    write_json(out / f"report-{config.domain}.json", report)
    return report


def main_progress(message: str) -> None:
    """Progress lines go to stderr so stdout keeps only the report."""
    print(message, file=sys.stderr, flush=True)
