"""Re-execute a recorded episode's actions and check that the env gives the same rewards.

An episode directory written by ``dataeng-gym compare`` (``spec.json``) or ``dataeng-gym run
--out`` (``config.json``) holds the env configuration, the seed and, in ``episode.jsonl``, every
action as the policy gave it (``raw_action``). Replaying feeds those actions to a fresh env
with the same seed: on the deterministic fast twin the rewards are identical, which is how a
recorded episode is audited, turned into demonstrations, or checked after a code change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataeng_gym.errors import DataEngError
from dataeng_gym.io import read_jsonl
from dataeng_gym.results import read_results


@dataclass
class ReplayResult:
    """Recorded and replayed rewards, step by step."""

    episode_dir: Path
    env_id: str
    recorded: list[float]
    replayed: list[float] = field(default_factory=list)
    final_info: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        if len(self.recorded) != len(self.replayed):
            return float("inf")
        return max((abs(a - b) for a, b in zip(self.recorded, self.replayed)), default=0.0)

    @property
    def identical(self) -> bool:
        return self.recorded == self.replayed


def find_episode_dir(path: str | Path, key: str | None = None) -> Path:
    """The episode directory named by ``path``: the directory itself, or a record of a run.

    Args:
        path: An episode directory, or a run directory / ``results.jsonl`` together with ``key``.
        key: ``policy/domain/seed`` or ``experiment/policy/domain/seed`` of a record.
    """
    path = Path(path)
    if path.is_dir() and (path / "episode.jsonl").exists():
        return path
    run_dir = path.parent if path.is_file() else path
    records = read_results(path)
    if not records:
        raise DataEngError(
            f"{path} is neither an episode directory (with episode.jsonl) nor a run with records"
        )
    keys = {f"{r['experiment']}/{r['policy']}/{r['domain']}/{r['seed']}": r for r in records}
    short: dict[str, list[str]] = {}
    for k in keys:
        short.setdefault(k.split("/", 1)[1], []).append(k)
    if key is not None and key not in keys and len(short.get(key, [])) > 1:
        raise DataEngError(
            f"--key {key} names an episode of several experiments in {path}; give one of: "
            + ", ".join(sorted(short[key]))
        )
    if key is None or (key not in keys and key not in short):
        names = sorted(k if len(full) == 1 else f for k, full in short.items() for f in full)
        shown = ", ".join(names[:10])
        raise DataEngError(f"name the episode to replay with --key; records in {path}: {shown}")
    record = keys[key] if key in keys else keys[short[key][0]]
    if record["status"] != "ok":
        raise DataEngError(f"episode {key} failed ({record['error']}); there is nothing to replay")
    return run_dir / record["episode_dir"]


def replay(episode_dir: str | Path) -> ReplayResult:
    """Feed the recorded actions of ``episode_dir`` to a fresh env with the recorded seed."""
    import json

    import gymnasium as gym

    from dataeng_gym.runner import config_from_dict

    episode_dir = Path(episode_dir)
    meta_path = next(
        (episode_dir / n for n in ("spec.json", "config.json") if (episode_dir / n).exists()), None
    )
    if meta_path is None or not (episode_dir / "episode.jsonl").exists():
        raise DataEngError(
            f"{episode_dir} has no spec.json/config.json and episode.jsonl; point replay at a "
            "directory written by `dataeng-gym compare` or `dataeng-gym run --out`"
        )
    meta = json.loads(meta_path.read_text())
    config = config_from_dict(meta["config"])
    steps = list(read_jsonl(episode_dir / "episode.jsonl"))
    if any(s.get("raw_action") is None for s in steps):
        raise DataEngError(
            f"{episode_dir / 'episode.jsonl'} lacks raw actions (written by an older version); "
            "rerun the episode to record them"
        )
    result = ReplayResult(episode_dir, meta["env"], [float(s["reward"]) for s in steps])
    env = gym.make(meta["env"], config=config, max_episode_steps=config.max_steps)
    env.reset(seed=int(meta["seed"]), options={"domain": config.domain})
    for step in steps:
        _, reward, terminated, truncated, info = env.step(step["raw_action"])
        result.replayed.append(float(reward))
        if terminated or truncated:
            result.final_info = info
            break
    env.close()
    return result
