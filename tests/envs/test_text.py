import json
import string

import numpy as np
import pytest

from dataeng_gym.envs.data_env import Op
from dataeng_gym.envs.text import parse_action

SKILLS = ("reverse", "sort", "count", "add")


def test_parser_never_raises_on_arbitrary_text():
    rng = np.random.default_rng(0)
    alphabet = list(string.printable)
    samples = [
        '{"op": "generate"}',
        "[]",
        "null",
        '{"op": 3}',
        '{"op": "mix", "weight": "x"}',
        '{"op": "generate", "skill": "add", "difficulty": true, "amount": 5}',
        "[" * 5000,
        '{"op": "verify", "amount": 1e999}',
    ]
    samples += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 80)))) for _ in range(2000)]
    for text in samples:
        action, error = parse_action(text, SKILLS)
        assert (action is None) != (error is None)


@pytest.mark.parametrize(
    "obj",
    [
        {"op": "generate", "skill": "sort", "difficulty": 2, "amount": 40, "instructions": "short"},
        {"op": "verify", "amount": 10},
        {"op": "filter", "threshold": 0.5},
        {"op": "dedup"},
        {"op": "decontaminate"},
        {"op": "mix", "skill": "add", "weight": 2.0},
        {"op": "order", "strategy": "interleave"},
        {"op": "train"},
        {"op": "submit"},
    ],
)
def test_valid_actions_round_trip(obj):
    action, error = parse_action(json.dumps(obj), SKILLS)
    assert error is None and action.op == Op[obj["op"].upper()]
    for key, value in obj.items():
        if key == "op":
            continue
        field = {"strategy": "order"}.get(key, key)
        assert getattr(action, field) == value


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"op": "fly"}, "field 'op' must be one of"),
        ({"op": "generate", "skill": "poetry", "difficulty": 1, "amount": 5}, "field 'skill'"),
        ({"op": "generate", "skill": "add", "difficulty": 4, "amount": 5}, "'difficulty' must be"),
        ({"op": "verify", "amount": 0}, "'amount' must be an integer in 1..1000"),
        ({"op": "order", "strategy": "backwards"}, "field 'strategy' must be one of"),
    ],
)
def test_errors_name_the_field_and_allowed_values(obj, fragment):
    action, error = parse_action(json.dumps(obj), SKILLS)
    assert action is None and fragment in error


def test_long_and_non_ascii_instructions_keep_the_observation_in_its_space():
    from dataeng_gym.envs.config import FAST
    from dataeng_gym.envs.text import DataEngTextEnv

    env = DataEngTextEnv(FAST)
    obs, info = env.reset(seed=0)
    skill = info["skills"][0]
    wide = "请生成较短的单词" * 250  # 2,000 characters, each 6 when JSON-escaped
    too_long = "x" * 3900  # the action fits the action space; the field takes 2,000
    for i in range(14):
        text = wide if i % 2 else too_long
        action = json.dumps(
            {"op": "generate", "skill": skill, "difficulty": 1, "amount": 1, "instructions": text},
            ensure_ascii=False,
        )
        obs, _, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs), len(obs)
        if i % 2:
            assert info["invalid_action"] is None
        else:
            assert env.action_space.contains(action)
            assert "(3902 characters)" in info["invalid_action"]
            assert len(info["invalid_action"]) < 300
    assert not (terminated or truncated)
