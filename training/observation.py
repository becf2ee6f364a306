"""What the learned policies (BC and PPO) see: the env's observation plus the last op they took.

The env's observation is the pool and the scores, not the steps that led there, so a step that
changed little (DECONTAMINATE of an almost clean pool) leaves two states that look alike but
call for different ops (DECONTAMINATE, then TRAIN): the behaviour clone of ``weakest-skill``
confused the two on most of its missed ops. A one-hot of the last op, kept by the policy
itself, tells them apart. It is a policy-side input: the env's spaces stay as they are, RLlib
trains through :class:`LastOpObservation`, and :class:`LastOp` adds it at acting time.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import Op, structured_spaces
from dataeng_gym.errors import DataEngError

LAST_OP = "last_op"
"""The observation key of the last-op one-hot (all zeros before the first step)."""

Obs = dict[str, np.ndarray]


def with_last_op(obs: Obs, op: int | None) -> Obs:
    """``obs`` with the one-hot of ``op`` (``None``: no op yet) under :data:`LAST_OP`."""
    onehot = np.zeros(len(Op), np.float32)
    if op is not None:
        onehot[int(op)] = 1.0
    return {**obs, LAST_OP: onehot}


def with_last_op_space(space: gym.spaces.Dict) -> gym.spaces.Dict:
    """``space`` plus :data:`LAST_OP` (``Dict`` sorts the keys, as RLlib flattens them)."""
    return gym.spaces.Dict(
        {**space.spaces, LAST_OP: gym.spaces.Box(0.0, 1.0, (len(Op),), np.float32)}
    )


def policy_observation_space(config: EnvConfig) -> gym.spaces.Dict:
    """What a learned policy sees: the structured env's observation space plus the last op."""
    return with_last_op_space(structured_spaces(config)[0])


def require_last_op(meta: dict[str, Any], kind: str, path: object) -> None:
    """Refuse a checkpoint (its ``policy.json`` ``meta``) trained without the last-op input."""
    if not meta.get(LAST_OP):
        raise DataEngError(
            f"the {kind} policy at {str(path)!r} was trained before learned policies saw their "
            "last op (training/observation.py); train it again with this version"
        )


def flatten_observation(obs: Obs) -> np.ndarray:
    """Concatenate the observation's arrays in sorted-key order (RLlib's FlattenObservations)."""
    return np.concatenate([np.asarray(obs[k], np.float32).ravel() for k in sorted(obs)])


class LastOp:
    """The last op a policy took in the current episode (reset at each episode)."""

    def __init__(self) -> None:
        self.op: int | None = None

    def reset(self) -> None:
        self.op = None

    def observe(self, obs: Obs) -> Obs:
        """``obs`` as the policy sees it."""
        return with_last_op(obs, self.op)

    def took(self, action: dict[str, int]) -> dict[str, int]:
        """Remember ``action``'s op; return the action."""
        self.op = int(action["op"])
        return action


class LastOpObservation(gym.Wrapper):
    """The env with the last op added to its observations (for RLlib's env runners)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        assert isinstance(env.observation_space, gym.spaces.Dict)
        self.observation_space = with_last_op_space(env.observation_space)
        self.last = LastOp()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        obs, info = self.env.reset(seed=seed, options=options)
        self.last.reset()
        return self.last.observe(obs), info

    def step(self, action: dict[str, int]) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(self.last.took(action))
        return self.last.observe(obs), reward, terminated, truncated, info
