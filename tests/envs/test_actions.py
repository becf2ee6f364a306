import json
import string

import numpy as np
import pytest

from dataeng_gym.envs.actions import (
    MAX_PLAN,
    OPS,
    action_json,
    action_schema,
    extract_json,
    parse_action,
    parse_reply,
    plan_schema,
    reply_schema,
)
from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.data_env import Op
from dataeng_gym.envs.pool import ORDERS
from dataeng_gym.envs.text import DataEngTextEnv

SKILLS = ("reverse", "sort", "count", "add")


def random_actions(rng, n):
    out = []
    for _ in range(n):
        op = OPS[int(rng.integers(len(OPS)))]
        obj = {"op": op}
        if op in ("generate", "mix"):
            obj["skill"] = SKILLS[int(rng.integers(len(SKILLS)))]
        if op == "generate":
            obj["difficulty"] = int(rng.integers(1, 4))
            if rng.random() < 0.5:
                obj["instructions"] = "".join(rng.choice(list(string.printable), size=12))
        if op in ("generate", "verify"):
            obj["amount"] = int(rng.integers(1, 1001))
        if op == "filter":
            obj["threshold"] = float(rng.random())
        if op == "mix":
            obj["weight"] = float(rng.choice([0.0, 0.5, 1.0, 2.0, 1.37]))
        if op == "order":
            obj["strategy"] = ORDERS[int(rng.integers(len(ORDERS)))]
        out.append(obj)
    return out


def test_any_valid_action_round_trips_through_json():
    rng = np.random.default_rng(1)
    for obj in random_actions(rng, 500):
        action, error = parse_action(json.dumps(obj), SKILLS)
        assert error is None, (obj, error)
        assert action_json(action) == obj
        again, _ = parse_action(json.dumps(action_json(action)), SKILLS)
        assert again == action


def test_plans_parse_in_order_and_single_actions_are_plans_of_one():
    plan = random_actions(np.random.default_rng(2), 7)
    actions, error = parse_reply(json.dumps(plan), SKILLS)
    assert error is None and [action_json(a) for a in actions] == plan
    actions, error = parse_reply('{"op": "train"}', SKILLS)
    assert error is None and [a.op for a in actions] == [Op.TRAIN]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[]", f"a plan must hold 1..{MAX_PLAN} actions, got 0"),
        (json.dumps([{"op": "train"}] * (MAX_PLAN + 1)), "got 61"),
        ('[{"op": "train"}, {"op": "mix", "skill": "add"}]', "plan item 1 (counting from 0)"),
        ('[{"op": "train"}, {"op": "mix", "skill": "add"}]', "field 'weight' is required"),
        ('[{"op": "train"}, 3]', "plan item 1 (counting from 0): an action must be a JSON object"),
        ('{"op": "generate", "skill": "add", "difficulty": 1}', "'amount' is required for op"),
        ('{"op": "filter", "threshold": "high"}', "'threshold' must be a number in 0.0..1.0"),
        ('{"op": "mix", "skill": "poetry", "weight": 1}', "one of ['reverse', 'sort', 'count'"),
        ("{'op': 'train'}", "not valid JSON"),
    ],
)
def test_reply_errors_name_the_field_and_the_allowed_values(text, fragment):
    actions, error = parse_reply(text, SKILLS)
    assert actions is None and fragment in error


def test_reply_parser_never_raises_on_arbitrary_text():
    rng = np.random.default_rng(3)
    alphabet = list(string.printable) + ["[", "{", '"op"', ":", "}", "]", '"train"', ","]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 60))))
        for candidate in (text, extract_json(text)):
            actions, error = parse_reply(candidate, SKILLS)
            assert (actions is None) != (error is None)


def test_op_is_case_insensitive_and_extra_fields_are_ignored():
    action, error = parse_action('{"op": "TRAIN", "why": "enough data"}', SKILLS)
    assert error is None and action.op == Op.TRAIN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Sure! ```json\n{"op": "train"}\n``` Good luck.', '{"op": "train"}'),
        ('I will train now: {"op": "train"} and then submit.', '{"op": "train"}'),
        ('Plan: [{"op": "dedup"}, {"op": "train"}]', '[{"op": "dedup"}, {"op": "train"}]'),
        ("no json here", "no json here"),
        ('{"op": "generate", "skill": "ad', '{"op": "generate", "skill": "ad'),
        ('Weak skills [add, sort]; so: {"op": "dedup"}', '{"op": "dedup"}'),
        ('Steps [1, 2] then [{"op": "dedup"}]', '[{"op": "dedup"}]'),
        (
            'Plan:\n```text\ngenerate, then train\n```\n```json\n{"op": "train"}\n```',
            '{"op": "train"}',
        ),
        ('```json\n{"op": "generate", "skill": "ad', '{"op": "generate", "skill": "ad'),
        # a plan cut at the token limit or broken inside is not taken for its first item
        ('[{"op": "dedup"}, {"op": "tr', '[{"op": "dedup"}, {"op": "tr'),
        ('[{"op": "dedup"}, {"op": "train"},]', '[{"op": "dedup"}, {"op": "train"},]'),
        (
            '[{"op": "dedup"}, // then\n{"op": "train"}]',
            '[{"op": "dedup"}, // then\n{"op": "train"}]',
        ),
        (  # brackets inside a JSON string do not close the cut plan
            '[{"op": "dedup", "why": "a ] or } here"}, {"op": "tr',
            '[{"op": "dedup", "why": "a ] or } here"}, {"op": "tr',
        ),
    ],
)
def test_extract_json_finds_the_json_in_a_chatty_reply(text, expected):
    assert extract_json(text) == expected


def test_schemas_enumerate_the_domain_skills_and_every_op():
    schema = action_schema(SKILLS)
    blob = json.dumps(schema)
    for op in OPS:
        assert f'"{op}"' in blob
    assert json.dumps(list(SKILLS))[1:-1] in blob
    assert plan_schema(SKILLS)["type"] == "array"
    assert plan_schema(SKILLS)["maxItems"] == MAX_PLAN
    assert len(reply_schema(SKILLS)["anyOf"]) == 2


def test_prompt_has_what_the_agent_needs_and_the_schema():
    env = DataEngTextEnv(FAST)
    obs, info = env.reset(seed=0)
    skills = info["skills"]
    assert skills == env.domain.skill_names
    for skill in skills:
        assert f"- {skill} (" in obs
    assert "## Budgets" in obs and "teacher samples left" in obs and "## Pool" in obs
    assert "## Scores (public split)" in obs and "JSON schema of an action" in obs
    assert json.dumps(action_schema(skills), separators=(",", ":")) in obs
    gen = {"op": "generate", "skill": skills[0], "difficulty": 1, "amount": 50}
    obs, *_ = env.step(json.dumps(gen))
    obs, *_ = env.step(json.dumps({"op": "order", "strategy": "interleave"}))
    obs, _, _, _, info = env.step(json.dumps({"op": "train"}))
    assert "## History" in obs and '"strategy": "interleave"' in obs
    assert "## Bad cases" in obs and "expected" in obs and "student said" in obs
    assert "skills" in info
