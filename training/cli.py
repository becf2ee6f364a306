"""``dataeng-gym train-policy``: PPO on the tiny or simulated student, or behaviour cloning."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.errors import DataEngError

SHIPPED_SURROGATE = Path(__file__).resolve().parent.parent / "envs" / "data" / "surrogate.json"
"""The surrogate fitted to the default config's real TRAINs (``dataeng-gym calibrate``)."""


def env_config(student: str, simulator: str | None, fast: bool, domain: str) -> EnvConfig:
    """The episode config for a training run."""
    base = FAST if fast else EnvConfig()
    if student == "simulated":
        path = simulator or str(SHIPPED_SURROGATE)
        return base.replace(domain=domain, student_kind="simulated", simulator_path=path)
    return base.replace(domain=domain)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_policy(args: argparse.Namespace) -> int:
    """Run the subcommand; print the summary as JSON."""
    config = env_config(args.student, args.simulator, args.fast, args.domains[0])
    if args.algo == "ppo":
        from dataeng_gym.training.ppo import PPOSettings, train_ppo

        settings = PPOSettings(
            env=config,
            domains=tuple(args.domains),
            iterations=args.iterations,
            workers=args.workers,
            batch_size=args.batch_size,
            minibatch_size=min(250, args.batch_size),
            seed=args.seed,
            track=args.track,
            init_from=args.init_from,
        )
        summary = train_ppo(settings, args.out, progress=_progress)
        print(json.dumps(summary, indent=2))
        print(f"policy: ppo:{args.out}", file=sys.stderr)
        return 0
    from dataeng_gym.envs.simulated import make_data_env
    from dataeng_gym.training.bc import BCSettings, demonstrations, load_episodes, train_bc

    if not args.episodes:
        raise DataEngError("--algo bc needs --episodes: run directories of `dataeng-gym run`")
    episodes = load_episodes(args.episodes)
    env = make_data_env(config)
    obs, targets = demonstrations(env, episodes, config)
    report = train_bc(
        obs,
        targets,
        config,
        BCSettings(epochs=args.iterations, seed=args.seed),
        args.out,
        progress=_progress,
    )
    print(json.dumps(report, indent=2))
    print(f"policy: bc:{args.out}", file=sys.stderr)
    return 0
