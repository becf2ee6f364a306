import json
import string

import numpy as np
import pytest
from llm_servers import VLLM_CPU, Reply

from dataeng_gym.cli import main
from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.text import DataEngTextEnv
from dataeng_gym.episode import run_episode
from dataeng_gym.errors import ProviderError
from dataeng_gym.llm import make_backend
from dataeng_gym.policies import make_policy
from dataeng_gym.policies.llm import FAILURES, LLMPolicy, LLMPolicyConfig

SKILLS = ("reverse", "upper", "replace", "slice")  # the code domain's (FAST's domain)
INFO = {"skills": SKILLS, "invalid_action": None}
TRAIN = '{"op": "train"}'


def good_plan(amount=50):
    plan = [{"op": "generate", "skill": s, "difficulty": 1, "amount": amount} for s in SKILLS]
    plan += [{"op": "filter", "threshold": 0.3}, {"op": "dedup"}, {"op": "train"}]
    return json.dumps(plan)


def policy_for(server, **settings):
    backend = make_backend("openai", "scripted", server.base_url, max_retries=1)
    return LLMPolicy(backend=backend, settings=LLMPolicyConfig(**settings))


def test_malformed_reply_is_reasked_with_the_validation_message(scripted_server):
    scripted_server.push("{op: train}", '{"op": "fly"}', "Sure! ```json\n" + TRAIN + "\n```")
    policy = policy_for(scripted_server)
    assert policy.act("state", INFO) == TRAIN
    assert policy.last_info["calls"] == 3 and "fallback" not in policy.last_info
    assert policy.last_info["failures"] == ["unparseable", "invalid_action"]
    second = scripted_server.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": "{op: train}"}
    assert "not valid JSON" in second[-1]["content"]
    third = scripted_server.requests[2]["messages"][-1]["content"]
    assert "field 'op' must be one of" in third and "'generate'" in third
    stats = policy.stats
    assert stats["calls"] == 3 and stats["reasks"] == 2 and stats["fallbacks"] == 0
    assert stats["failures"]["unparseable"] == 1 and stats["failures"]["invalid_action"] == 1
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0


def test_after_k_reasks_the_declared_fallback_with_the_reason(scripted_server):
    cut = Reply('{"op": "generate", "skill": "rev', finish_reason="length")
    scripted_server.push(cut, cut, cut, cut)
    policy = policy_for(scripted_server, max_reasks=2, fallback='{"op": "dedup"}')
    assert policy.act("state", INFO) == '{"op": "dedup"}'
    assert len(scripted_server.requests) == 3  # one ask and k = 2 re-asks, no more
    assert "cut at 512 tokens" in scripted_server.requests[1]["messages"][-1]["content"]
    info = policy.last_info
    assert info["failures"] == ["truncated"] * 3 and "no valid reply in 3 asks" in info["fallback"]
    assert policy.stats["fallbacks"] == 1 and policy.stats["failures"]["truncated"] == 3


def test_a_plan_cut_at_the_token_limit_is_reasked_not_run_as_its_first_item(scripted_server):
    cut = good_plan()[:120]  # ends inside the second item
    scripted_server.push(Reply(cut, finish_reason="length"), good_plan())
    policy = policy_for(scripted_server, plans=True)
    first = policy.act("state", INFO)
    assert policy.last_info["failures"] == ["truncated"] and policy.last_info["calls"] == 2
    assert len(policy.queue) == len(json.loads(good_plan())) - 1  # the whole second reply
    assert json.loads(first)["op"] == "generate"


def test_a_plan_is_queued_and_dropped_when_the_env_rejects_a_step(scripted_server):
    scripted_server.push('[{"op": "train"}, {"op": "dedup"}, {"op": "submit"}]', TRAIN)
    policy = policy_for(scripted_server)
    assert policy.act("state", INFO) == TRAIN
    assert policy.stats["plans"] == 1 and len(policy.queue) == 2
    rejected = {**INFO, "invalid_action": "TRAIN: insufficient valid samples: 0 usable items"}
    assert policy.act("state", rejected) == TRAIN  # a fresh ask, not the queued dedup
    assert len(scripted_server.requests) == 2 and not policy.queue
    assert policy.stats["failures"]["insufficient_valid_samples"] == 1
    budget = {**INFO, "invalid_action": "GENERATE of 50 items needs 50 teacher samples; 3 left"}
    scripted_server.push(TRAIN)
    policy.act("state", budget)
    assert policy.stats["failures"]["budget_exhausted"] == 1


def test_plans_are_served_one_action_per_step_without_calls(scripted_server):
    scripted_server.push(good_plan())
    policy = policy_for(scripted_server)
    got = [policy.act("state", INFO) for _ in range(7)]
    assert [json.loads(g)["op"] for g in got][-3:] == ["filter", "dedup", "train"]
    assert len(scripted_server.requests) == 1 and policy.last_info["from_plan"]


def test_never_raises_on_arbitrary_model_text(scripted_server):
    rng = np.random.default_rng(0)
    alphabet = list(string.printable) + ['{"op": ', '"train"', "[", "]", "}", "```"]
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(45)]
    scripted_server.push(*texts)
    policy = policy_for(scripted_server, max_reasks=2)
    for _ in range(15):
        action = policy.act("state", INFO)
        assert isinstance(action, str) and json.loads(action)["op"]
    assert sum(policy.stats["failures"].values()) + 15 >= policy.stats["calls"]
    assert set(policy.stats["failures"]) == set(FAILURES)


def test_provider_errors_are_raised_not_hidden(scripted_server):
    scripted_server.push(Reply(status=401, error="bad key"))
    with pytest.raises(ProviderError, match="HTTP 401"):
        policy_for(scripted_server).act("state", INFO)


def test_structured_env_is_a_clear_error(scripted_server):
    with pytest.raises(ValueError, match="DataEngText-v1"):
        policy_for(scripted_server).act({"skill_acc": None}, {"invalid_action": None})


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_reasks"):
        LLMPolicyConfig(max_reasks=-1)
    with pytest.raises(ValueError, match="fallback"):
        LLMPolicyConfig(fallback="submit")
    with pytest.raises(ValueError, match="fallback's op must be one of"):
        LLMPolicyConfig(fallback='{"op": "sumbit"}')


def test_episode_end_to_end_on_the_fast_text_twin(scripted_server):
    scripted_server.push(good_plan(), '{"op": "submit"}')
    env = DataEngTextEnv(FAST)
    policy = make_policy("llm", FAST, backend=make_backend("openai", "m", scripted_server.base_url))
    summary = run_episode(env, policy, seed=0)
    assert summary["train_runs"] == 1 and summary["invalid_actions"] == 0
    assert summary["teacher_samples"] == 200 and summary["steps"] == 8
    stats = summary["policy_stats"]
    assert stats["calls"] == 2 and stats["actions"] == 8 and stats["fallbacks"] == 0


def test_cli_llm_policy_against_transformers_serve(served_tiny_model, tmp_path, capsys):
    """A random model's text never validates: every step re-asks twice, then falls back."""
    base_url, model = served_tiny_model
    out = tmp_path / "ep"
    args = ["run", "--fast", "--policy", "llm", "--backend", "openai", "--base-url", base_url]
    args += ["--model", model, "--max-tokens", "16", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(line) for line in (out / "episode.jsonl").read_text().splitlines()]
    stats = summary["policy_stats"]
    assert stats["calls"] == 3 and stats["fallbacks"] == 1 and stats["reasks"] == 2
    assert sum(stats["failures"].values()) == 3 and stats["completion_tokens"] == 3 * 16
    assert stats["prompt_tokens"] > 3 * 1000 and stats["seconds"] > 0
    assert (
        steps[0]["action"] == {"op": "submit"}
        and "no valid reply" in steps[0]["policy"]["fallback"]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["env"] == "dataeng_gym/DataEngText-v1" and config["backend"].startswith("openai:")


def test_cli_llm_policy_with_the_in_process_transformers_backend(tiny_model_dir, tmp_path):
    out = tmp_path / "ep"
    args = ["run", "--fast", "--policy", "llm", "--backend", "transformers"]
    args += ["--model", str(tiny_model_dir), "--max-tokens", "8", "--max-reasks", "0"]
    assert main([*args, "--out", str(out)]) == 0
    stats = json.loads((out / "summary.json").read_text())["policy_stats"]
    assert stats["calls"] == 1 and stats["fallbacks"] == 1 and stats["backend"].startswith("trans")


def test_cli_llm_policy_needs_a_model(capsys):
    assert main(["run", "--fast", "--policy", "llm"]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.vllm
def test_vllm_structured_outputs_make_a_random_model_valid(tiny_model_dir):
    """Needs vllm (its own environment; see README). Skipped where vllm is not installed."""
    pytest.importorskip("vllm")
    backend = make_backend("vllm", str(tiny_model_dir), max_model_len=16384, **VLLM_CPU)
    settings = LLMPolicyConfig(max_tokens=1024, temperature=1.0, max_plan=4)
    policy = LLMPolicy(backend=backend, settings=settings)
    summary = run_episode(DataEngTextEnv(FAST), policy, seed=0)
    stats = summary["policy_stats"]
    assert stats["failures"]["unparseable"] == 0
    assert stats["actions"] > stats["fallbacks"]  # schema-valid actions reached the env
