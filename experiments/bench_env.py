"""Benchmark the default environment: TRAIN time, episode time, action gaps, baseline policies.

Run (about 30 minutes on 2 CPU cores, most of it student training):

    .venv/bin/python experiments/bench_env.py --out runs/bench_env

It writes ``bench_env.md`` (the tables for docs/results.md) and ``bench_env.csv`` under --out.
What to expect: a default TRAIN plus public evaluation takes a few seconds; clean data for the
weak skills gains the most, noisy, duplicate-heavy and single-skill data gain little or lose;
``weakest-skill`` beats ``random`` by well over 10 points of private accuracy on every domain.

``--as-test`` runs one seed of everything on the fast twin (a minute), as CI does.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import DataEngEnv, Op
from dataeng_gym.envs.domains import DIFFICULTIES, DOMAINS
from dataeng_gym.envs.teacher import CLEAN, NoiseConfig
from dataeng_gym.episode import run_episode
from dataeng_gym.policies import make_policy


@dataclass
class Args:
    out: str = "runs/bench_env"
    """Directory for bench_env.md and bench_env.csv."""
    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    """Domains to benchmark."""
    gap_seeds: int = 3
    """Seeds per action-gap scenario."""
    policy_seeds: int = 5
    """Seeds per baseline policy."""
    gap_items: int = 1500
    """Items generated for each action-gap scenario."""
    as_test: bool = False
    """One seed, fast twin: checks the script end to end in about a minute."""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=Args.out)
    p.add_argument("--domains", nargs="+", default=list(DOMAINS))
    p.add_argument("--gap-seeds", type=int, default=Args.gap_seeds)
    p.add_argument("--policy-seeds", type=int, default=Args.policy_seeds)
    p.add_argument("--gap-items", type=int, default=Args.gap_items)
    p.add_argument("--as-test", action="store_true")
    return Args(**vars(p.parse_args()))


# ---------------------------------------------------------------------------- action gaps
# Each scenario fills the pool one way, trains once, and reports the public gain of that TRAIN.
SCENARIOS: dict[str, tuple[NoiseConfig, str, bool]] = {
    # name: (teacher noise, which skills, verify + filter + dedup before training)
    "clean, uniform": (CLEAN, "all", False),
    "clean, weakest 2 skills": (CLEAN, "weak2", False),
    "noisy, uniform, uncleaned": (NoiseConfig(), "all", False),
    "noisy, uniform, cleaned": (NoiseConfig(), "all", True),
    "duplicate-heavy, uniform": (NoiseConfig(0, 0, 0.75, 0, 0, 0), "all", False),
    "clean, single weakest skill": (CLEAN, "weak1", False),
}


def scenario_gain(config: EnvConfig, scenario: str, seed: int, items: int) -> tuple[float, float]:
    noise, which, clean_up = SCENARIOS[scenario]
    env = DataEngEnv(config.replace(noise=noise, teacher_budget=4 * items, max_steps=200))
    env.reset(seed=seed)
    base = env.base_eval.per_skill
    weakest = sorted(range(len(base)), key=lambda i: list(base.values())[i])
    skills = {"all": range(len(base)), "weak2": weakest[:2], "weak1": weakest[:1]}[which]
    cells = [(s, d) for s in skills for d in range(len(DIFFICULTIES))]
    per_cell = items // len(cells)
    amounts = config.amounts
    for s, d in cells:
        left = per_cell
        while left >= min(amounts):
            i = max(j for j, a in enumerate(amounts) if a <= left)
            env.step({"op": Op.GENERATE, "skill": s, "difficulty": d, "amount": i, "param": 0})
            left -= amounts[i]
    if clean_up:
        while env.pool.unverified():
            env.step(
                {
                    "op": Op.VERIFY,
                    "skill": 0,
                    "difficulty": 0,
                    "amount": len(amounts) - 1,
                    "param": 0,
                }
            )
        for op, param in ((Op.FILTER, 1), (Op.DEDUP, 0), (Op.DECONTAMINATE, 0)):
            env.step({"op": op, "skill": 0, "difficulty": 0, "amount": 0, "param": param})
    start = time.perf_counter()
    _, _, _, _, info = env.step(
        {"op": Op.TRAIN, "skill": 0, "difficulty": 0, "amount": 0, "param": 0}
    )
    seconds = time.perf_counter() - start
    if info["invalid_action"]:
        raise RuntimeError(f"{scenario}: TRAIN was invalid: {info['invalid_action']}")
    return info["result"]["public"] - env.base_eval.score, seconds


def header(first: str, domains: list[str]) -> list[str]:
    """The first two lines of a Markdown table with one column per domain."""
    return [f"| {first} | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]


def record(
    rows: list[dict[str, object]],
    table: str,
    domain: str,
    name: str,
    seed: int,
    value: float,
    seconds: float,
) -> None:
    """Keep one measurement for the CSV and show it as it is made."""
    rows.append(
        {
            "table": table,
            "domain": domain,
            "name": name,
            "seed": seed,
            "value": value,
            "seconds": seconds,
        }
    )
    print(
        f"{table} {domain:8} {name:30} seed {seed}: {100 * value:+.1f} ({seconds:.1f}s)",
        file=sys.stderr,
    )


def mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):+.1f} ± {100 * sd:.1f}"


def main() -> int:
    args = parse_args()
    config = FAST if args.as_test else EnvConfig()
    if args.as_test:
        args.gap_seeds, args.policy_seeds, args.gap_items = 1, 1, 600
        args.domains = args.domains[:1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    lines = [
        "## Environment benchmark (`experiments/bench_env.py`)",
        "",
        f"Command: `python experiments/bench_env.py {' '.join(sys.argv[1:])}`; machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        "",
    ]

    # 1. action gaps and TRAIN time
    train_seconds: list[float] = []
    lines += ["### Action gaps: public gain of one TRAIN (points, mean ± std over seeds)", ""]
    lines += header("scenario", args.domains)
    table: dict[str, list[str]] = {}
    bases: list[str] = []
    for domain in args.domains:
        dconfig = config.replace(domain=domain)
        env = DataEngEnv(dconfig)
        start = time.perf_counter()
        env.reset(seed=0)  # trains and caches the base outside the TRAIN timings
        per_skill = ", ".join(f"{k} {100 * v:.0f}" for k, v in env.base_eval.per_skill.items())
        bases.append(
            f"| {domain} | {100 * env.base_eval.score:.1f} | {per_skill} | "
            f"{time.perf_counter() - start:.0f} s |"
        )
        for scenario in SCENARIOS:
            gains = []
            for seed in range(args.gap_seeds):
                gain, seconds = scenario_gain(dconfig, scenario, seed, args.gap_items)
                gains.append(gain)
                train_seconds.append(seconds)
                record(rows, "gap", domain, scenario, seed, gain, seconds)
            table.setdefault(scenario, []).append(mean_std(gains))
    lines += [f"| {s} | " + " | ".join(v) + " |" for s, v in table.items()]
    lines += ["", "### Base student (public accuracy, %)", ""]
    lines += ["| domain | base public | per skill | base training (first use) |"]
    lines += ["|---|---|---|---|"]
    lines += [
        *bases,
        "",
        f"TRAIN + public evaluation: {statistics.mean(train_seconds):.2f} s mean, "
        f"{max(train_seconds):.2f} s max over {len(train_seconds)} runs.",
        "",
    ]

    # 2. baseline policies
    lines += ["### Baseline policies: private gain (points, mean ± std over seeds)", ""]
    policies = ("weakest-skill", "uniform", "random")
    lines += header("policy", args.domains)
    ptable: dict[str, list[str]] = {}
    walls: list[float] = []
    for domain in args.domains:
        dconfig = config.replace(domain=domain)
        for name in policies:
            gains = []
            for seed in range(args.policy_seeds):
                env = DataEngEnv(dconfig)
                summary = run_episode(env, make_policy(name, dconfig, seed=seed), seed=seed)
                gains.append(summary["gain_abs"])
                walls.append(summary["wall_seconds"])
                record(
                    rows, "policy", domain, name, seed, summary["gain_abs"], summary["wall_seconds"]
                )
            ptable.setdefault(name, []).append(mean_std(gains))
    lines += [f"| {s} | " + " | ".join(v) + " |" for s, v in ptable.items()]
    lines += ["", f"Episode wall time: {np.mean(walls):.1f} s mean, {max(walls):.1f} s max.", ""]

    (out / "bench_env.md").write_text("\n".join(lines) + "\n")
    with open(out / "bench_env.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
