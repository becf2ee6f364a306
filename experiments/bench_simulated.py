"""Steps per second of the simulated twin (count-level pool + fitted surrogate student).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_simulated.py [--episodes 200]

Runs random and weakest-skill episodes in ``DataEng-v1`` with ``student_kind="simulated"`` and
prints env steps per second (policy time included). Expected: thousands per second on one core.
"""

from __future__ import annotations

import argparse
import time

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.simulated import make_data_env
from dataeng_gym.policies import make_policy
from dataeng_gym.training.cli import SHIPPED_SURROGATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--simulator", default=str(SHIPPED_SURROGATE))
    parser.add_argument("--as-test", action="store_true", help="10 episodes per policy")
    args = parser.parse_args()
    episodes = 10 if args.as_test else args.episodes
    config = EnvConfig(domain="code", student_kind="simulated", simulator_path=args.simulator)
    env = make_data_env(config)
    for name in ("random", "weakest-skill"):
        policy = make_policy(name, config, seed=0)
        steps, start = 0, time.perf_counter()
        for seed in range(episodes):
            obs, info = env.reset(seed=seed)
            policy.reset(seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                steps += 1
                done = terminated or truncated
        seconds = time.perf_counter() - start
        print(f"{name:14} {episodes} episodes, {steps} steps, {steps / seconds:,.0f} steps/s")


if __name__ == "__main__":
    main()
