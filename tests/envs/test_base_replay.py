import numpy as np
import pytest

from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.data_env import DataEngEnv, Op, base_examples, with_replay
from dataeng_gym.envs.data_env import structured_action as act
from dataeng_gym.envs.surrogate import optimizer_steps, train_recipe


def test_with_replay_keeps_the_curated_order_and_spreads_distinct_draws():
    curated = [(f"q{i}", "a") for i in range(40)]
    source = [(f"r{i}", "b") for i in range(100)]
    out = with_replay(curated, source, 0.25, np.random.default_rng(0))
    assert [e for e in out if e[0].startswith("q")] == curated
    replayed = [e for e in out if e[0].startswith("r")]
    assert len(replayed) == 10 and len(set(replayed)) == 10
    positions = [i for i, e in enumerate(out) if e[0].startswith("r")]
    assert max(np.diff(positions)) <= 6  # spread through the order, not appended at the end
    assert with_replay(curated, source, 0.0, np.random.default_rng(0)) == curated


@pytest.mark.parametrize("ratio", [0.25, 0.0])
def test_train_replays_base_examples_beside_the_pool(ratio):
    config = FAST.replace(replay_ratio=ratio)
    env = DataEngEnv(config)
    env.reset(seed=0)
    seen = []
    real_fine_tune = env.student.fine_tune

    def spy(examples, *, seed):
        seen.extend(examples)
        return real_fine_tune(examples, seed=seed)

    env.student.fine_tune = spy
    env.step(act(Op.GENERATE, 0, 0, 3))
    _, _, _, _, info = env.step(act(Op.TRAIN))
    result = info["result"]
    curated = result["examples"]
    assert result["replayed"] == round(ratio * curated)
    assert len(seen) == curated + result["replayed"]
    base = set(base_examples(env.domain, config))
    pool = {env.domain.to_student(s.question, s.answer) for s in env.pool.items}
    assert sum(e in base and e not in pool for e in seen) == result["replayed"]
    # the surrogate's steps feature counts the steps the student really took
    assert optimizer_steps(curated, train_recipe(config)) == result["steps"]


def test_replay_ratio_is_validated():
    with pytest.raises(ValueError, match="replay_ratio"):
        FAST.replace(replay_ratio=1.5)


@pytest.mark.parametrize(
    "mix",
    [
        {"base_difficulty_mix": (1.2, -0.1, -0.1)},  # sums to 1, once a numpy error at reset
        {"base_skill_mix": (0.0, 0.0, 0.0, 0.0)},  # nothing to draw from
        {"base_skill_mix": (0.5, -0.5, 1.0, 0.0)},
        {"base_difficulty_mix": (0.5, 0.3, 0.1)},
    ],
)
def test_base_mixes_are_validated(mix):
    with pytest.raises(ValueError, match="base mixes must be non-negative"):
        FAST.replace(**mix)
