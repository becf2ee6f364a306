import json
import re
import string

import numpy as np
import pytest
from llm_servers import Reply

from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.domains import make_domain
from dataeng_gym.envs.llm_teacher import LLMTeacher, item_prompt, parse_item
from dataeng_gym.envs.teacher import GenerationRequest
from dataeng_gym.envs.text import DataEngTextEnv
from dataeng_gym.errors import ConfigError, DataEngError
from dataeng_gym.llm import make_backend

DOMAIN = make_domain("code")


def teacher_server(server, delay=0.02):
    """Answers like a decent teacher: mostly valid items, some junk, some eval-set copies."""
    counter = iter(range(10**6))

    def respond(request):
        k = next(counter)
        prompt = request["messages"][-1]["content"]
        skill = re.search(r"Skill: (\w+) \(", prompt).group(1)
        d = int(re.search(r"Difficulty (\d) of", prompt).group(1))
        if k % 5 == 4:
            return Reply("I cannot help with that.", delay=delay)
        if k % 7 == 6:
            return Reply('{"instruction": "What does', finish_reason="length", delay=delay)
        if k % 9 == 8:
            item = DOMAIN.public[k % len(DOMAIN.public)]  # a copy of a public item
        else:
            item = DOMAIN.sample(skill, d, np.random.default_rng(k))
        reply = {"instruction": item.question, "input": "", "output": item.answer}
        return Reply("```json\n" + json.dumps(reply) + "\n```", delay=delay)

    server.default = respond
    return server


def test_llm_teacher_items_go_through_the_env_gates(scripted_server, tmp_path):
    teacher_server(scripted_server)
    backend = make_backend("openai", "teacher", scripted_server.base_url)
    teacher = LLMTeacher(backend, concurrency=4, cache_dir=tmp_path / "cache")
    env = DataEngTextEnv(FAST, teacher=teacher)
    _, info = env.reset(seed=0)
    for skill in info["skills"]:
        gen = {"op": "generate", "skill": skill, "difficulty": 1, "amount": 20}
        _, _, _, _, info = env.step(json.dumps(gen))
        assert info["invalid_action"] is None
    assert env.teacher_left == FAST.teacher_budget - 80  # one teacher sample per prompt
    stats = teacher.stats
    assert stats["prompts"] == stats["calls"] == len(scripted_server.requests) == 80
    rejected = stats["rejected"]
    assert rejected["unparseable"] == 16 and rejected["truncated"] > 0
    assert stats["items"] == 80 - sum(rejected.values()) == len(env.pool)
    assert 2 <= scripted_server.max_in_flight <= 4  # concurrent, within the limit
    assert all(s.teacher == "llm" and s.digest in env.ledger for s in env.pool.items)
    _, _, _, _, info = env.step('{"op": "decontaminate"}')
    assert info["result"]["removed"] > 0  # the copies of public items
    _, _, _, _, info = env.step('{"op": "train"}')
    assert info["invalid_action"] is None and info["result"]["gate"]["not_from_teacher"] == 0


def test_a_recorded_run_replays_from_the_cache_without_the_model(scripted_server, tmp_path):
    teacher_server(scripted_server, delay=0)
    backend = make_backend("openai", "teacher", scripted_server.base_url)
    live = LLMTeacher(backend, concurrency=3, cache_dir=tmp_path)
    request = GenerationRequest(0, "upper", 2, 12, "short strings")
    first = live.generate(DOMAIN, request)
    assert live.stats["calls"] == 12 and live.stats["cache_hits"] == 0
    again = live.generate(DOMAIN, request)
    assert again == first and live.stats["calls"] == 12 and live.stats["cache_hits"] == 12
    replay = LLMTeacher(None, cache_dir=tmp_path, model_id="teacher")  # the model's name
    assert replay.generate(DOMAIN, request) == first and replay.stats["calls"] == 0
    with pytest.raises(DataEngError, match="no cached reply"):
        replay.generate(DOMAIN, GenerationRequest(1, "upper", 2, 2))
    # the same model at another address replays; another episode seed asks the model afresh
    elsewhere = scripted_server.base_url.replace("127.0.0.1", "localhost")
    moved = LLMTeacher(make_backend("openai", "teacher", elsewhere), cache_dir=tmp_path)
    assert moved.generate(DOMAIN, request) == first and moved.stats["calls"] == 0
    other_seed = GenerationRequest(0, "upper", 2, 12, "short strings", episode_seed=1)
    moved.generate(DOMAIN, other_seed)
    assert moved.stats["calls"] == 12


def test_generate_works_inside_a_running_event_loop(scripted_server):
    import asyncio

    teacher_server(scripted_server, delay=0)
    teacher = LLMTeacher(make_backend("openai", "teacher", scripted_server.base_url))

    async def notebook_cell():  # e.g. Jupyter, where a loop is always running
        return teacher.generate(DOMAIN, GenerationRequest(0, "upper", 1, 3))

    assert asyncio.run(notebook_cell()) is not None and teacher.stats["calls"] == 3


def test_prompts_are_pure_alpaca_style_and_show_an_example():
    request = GenerationRequest(3, "slice", 3, 5, "vary the strings")
    prompt = item_prompt(DOMAIN, request, 2)
    assert prompt == item_prompt(DOMAIN, request, 2) != item_prompt(DOMAIN, request, 1)
    text = prompt[-1]["content"]
    assert "Skill: slice" in text and "Difficulty 3 of 3" in text and "Question: " in text
    assert "vary the strings" in text and '"instruction"' in prompt[0]["content"]


def test_item_parser_never_raises_and_names_the_reason():
    assert parse_item('{"instruction": "Q?", "input": "ctx", "output": "A"}', "stop") == (
        ("Q?\nctx", "A"),
        None,
    )
    assert parse_item('{"instruction": "Q?"}', "stop") == (None, "missing_fields")
    assert parse_item('{"instruction": "Q?", "output": " "}', "stop") == (None, "empty_output")
    assert parse_item('{"instruction": "Q', "length") == (None, "truncated")
    # no context as null and a numeric answer are common ways to write a valid item
    assert parse_item('{"instruction": "2+3?", "input": null, "output": 5}', "stop") == (
        ("2+3?", "5"),
        None,
    )
    assert parse_item('{"instruction": "Q?", "output": true}', "stop") == (None, "missing_fields")
    rng = np.random.default_rng(0)
    alphabet = list(string.printable) + ['"instruction"', '"output"', "{", "}", ":"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 50))))
        parsed, reason = parse_item(text, "stop")
        assert (parsed is None) != (reason is None)


def test_configuration_errors():
    with pytest.raises(ConfigError, match="replay"):
        LLMTeacher(None)
    with pytest.raises(ConfigError, match="concurrency"):
        LLMTeacher(None, cache_dir="x", model_id="m", concurrency=0)
    from argparse import Namespace

    from dataeng_gym.envs.llm_teacher import teacher_from_args

    cache_only = Namespace(teacher_model=None, teacher_base_url=None, teacher_cache="c")
    with pytest.raises(ConfigError, match="--teacher-cache needs --teacher-model"):
        teacher_from_args(cache_only)  # was silently the procedural teacher


def test_llm_teacher_against_transformers_serve(served_tiny_model, tmp_path):
    base_url, model = served_tiny_model
    teacher = LLMTeacher(
        make_backend("openai", model, base_url), concurrency=2, max_tokens=12, cache_dir=tmp_path
    )
    samples = teacher.generate(DOMAIN, GenerationRequest(0, "reverse", 1, 4))
    assert samples == [] and teacher.stats["calls"] == 4
    assert sum(teacher.stats["rejected"].values()) == 4 and teacher.stats["completion_tokens"] > 0


def test_cli_run_with_an_llm_teacher(scripted_server, tmp_path):
    from dataeng_gym.cli import main

    teacher_server(scripted_server, delay=0)
    out = tmp_path / "ep"
    args = ["run", "--fast", "--policy", "uniform", "--teacher-budget", "400"]
    args += ["--teacher-model", "t", "--teacher-base-url", scripted_server.base_url]
    args += ["--teacher-cache", str(tmp_path / "cache"), "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["teacher_stats"]
    assert stats["prompts"] == summary["teacher_samples"] == 240 == stats["calls"]
    assert stats["items"] < 240 and summary["train_runs"] == 1
