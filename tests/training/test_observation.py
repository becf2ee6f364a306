import numpy as np

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import Op
from dataeng_gym.envs.simulated import SimulatedDataEngEnv
from dataeng_gym.policies import make_policy
from dataeng_gym.training.cli import SHIPPED_SURROGATE
from dataeng_gym.training.observation import (
    LAST_OP,
    LastOp,
    LastOpObservation,
    flatten_observation,
    policy_observation_space,
)

SIM = EnvConfig(domain="code", student_kind="simulated", simulator_path=str(SHIPPED_SURROGATE))


def test_the_wrapper_and_a_policy_side_memory_see_the_same_observations():
    """RLlib trains on the wrapper's observations; BC and PPO act on LastOp's: they must agree."""
    wrapped = LastOpObservation(SimulatedDataEngEnv(SIM))
    plain = SimulatedDataEngEnv(SIM)
    assert wrapped.observation_space == policy_observation_space(SIM)
    policy, memory = make_policy("random", SIM, seed=3), LastOp()
    obs, _ = wrapped.reset(seed=5)
    raw, _ = plain.reset(seed=5)
    assert obs[LAST_OP].sum() == 0
    for _ in range(40):
        assert obs in wrapped.observation_space
        np.testing.assert_array_equal(
            flatten_observation(obs), flatten_observation(memory.observe(raw))
        )
        action = memory.took(policy.act(raw, {}))
        obs, _, terminated, truncated, _ = wrapped.step(action)
        raw, *_ = plain.step(action)
        assert obs[LAST_OP].tolist() == np.eye(len(Op))[action["op"]].tolist()
        if terminated or truncated:
            break
    memory.reset()
    assert memory.observe(raw)[LAST_OP].sum() == 0
