import json

import pytest
from llm_servers import Reply

from dataeng_gym.cli import main
from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.text import DataEngTextEnv
from dataeng_gym.errors import ProviderError
from dataeng_gym.io import read_jsonl
from dataeng_gym.llm import make_backend
from dataeng_gym.policies.llm import FAILURES
from dataeng_gym.policies.protocols import ProtocolConfig, run_iterative, run_one_shot

SKILLS = ("reverse", "upper", "replace", "slice")


def plan(amount=50, skills=SKILLS, extra=()):
    p = [{"op": "generate", "skill": s, "difficulty": 1, "amount": amount} for s in skills]
    return json.dumps(p + [{"op": "filter", "threshold": 0.3}, {"op": "dedup"}, *extra])


SMALL = json.dumps([{"op": "generate", "skill": "upper", "difficulty": 1, "amount": 10}])
OVERSPEND = json.dumps([{"op": "generate", "skill": "upper", "difficulty": 1, "amount": 1000}] * 2)


@pytest.fixture(scope="module")
def env():
    return DataEngTextEnv(FAST)


def backend(server):
    return make_backend("openai", "scripted", server.base_url, max_retries=1)


def prompts(server):
    return [r["messages"][-1]["content"] for r in server.requests]


def test_one_shot_retries_until_the_first_valid_submission(env, scripted_server, tmp_path):
    scripted_server.push(
        "I would generate lots of data.",  # unparseable
        Reply(plan()[:40], finish_reason="length"),  # truncated
        '[{"op": "fly"}]',  # invalid action
        SMALL,  # 10 items < min_train_items: insufficient valid samples
        OVERSPEND,  # 2000 teacher samples > 1200: budget exhausted
        plan(extra=[{"op": "train"}, {"op": "submit"}]),  # valid (train/submit are skipped)
        plan(),  # never asked: the first valid submission ends the run
    )
    out = tmp_path / "one-shot"
    s = run_one_shot(env, backend(scripted_server), seed=0, out=out)
    assert len(scripted_server.requests) == 6
    assert s["attempts"] == 6 and s["successes"] == 1 and s["mats"] == 6.0
    assert s["failures"] == {
        "unparseable": 1,
        "truncated": 1,
        "invalid_action": 1,
        "insufficient_valid_samples": 1,
        "budget_exhausted": 1,
        "other": 0,
    }
    assert s["best_node"] == 5 and s["final_private"] is not None
    assert s["gain_abs"] == pytest.approx(s["final_private"] - s["base_private"])
    assert s["teacher_samples"] == 10 + 1000 + 200  # the overspending plan stopped at its 2nd step
    nodes = list(read_jsonl(out / "nodes.jsonl"))
    assert [n["valid"] for n in nodes] == [False] * 5 + [True]
    assert "insufficient valid samples" in nodes[3]["error"]
    assert "teacher samples" in nodes[4]["error"]
    assert json.loads((out / "summary.json").read_text())["mats"] == 6.0
    first = prompts(scripted_server)[0]
    assert "JSON list of at most 18 actions" in first and "## Budgets" in first
    schema = json.loads(first.rsplit("JSON schema:\n", 1)[1])  # whole: the actions' fields too
    assert schema["$defs"]["Generate"]["properties"]["skill"]["enum"] == list(SKILLS)
    assert "private" not in first.lower().replace("private split", "")


def test_one_shot_without_a_valid_submission_keeps_the_base(env, scripted_server):
    scripted_server.default = lambda _req: Reply("no plan today")
    s = run_one_shot(env, backend(scripted_server), ProtocolConfig(max_attempts=3), seed=0)
    assert s["attempts"] == 3 and s["successes"] == 0 and s["mats"] is None
    assert s["failures"]["unparseable"] == 3 and s["gain_rel"] == 0.0
    assert s["final_private"] == s["base_private"] and s["best_node"] is None


def test_iterative_drafts_debugs_repairs_and_improves_from_the_best(env, scripted_server):
    better = plan(amount=80, extra=[{"op": "order", "strategy": "interleave"}])
    scripted_server.push(
        plan(),  # 0 draft: valid
        "garbage",  # 1 improve: unparseable
        better,  # 2 debug: valid
        SMALL,  # 3 improve: insufficient
        SMALL,  # 4 repair
        SMALL,  # 5 repair
        SMALL,  # 6 repair: the third consecutive fix
        plan(amount=60),  # 7 draft again
    )
    config = ProtocolConfig(max_iterations=8)
    s = run_iterative(env, backend(scripted_server), config, seed=0)
    assert s["stages"] == [
        "draft",
        "improve",
        "debug",
        "improve",
        "repair",
        "repair",
        "repair",
        "draft",
    ]
    assert s["attempts"] == 8 and s["successes"] == 3 and s["mats"] == pytest.approx(8 / 3)
    assert s["failures"]["unparseable"] == 1 and s["failures"]["insufficient_valid_samples"] == 4
    assert set(s["failures"]) == set(FAILURES)
    p = prompts(scripted_server)
    assert "Iteration 1 of 8: Draft" in p[0]
    assert "Iteration 2 of 8: Improve" in p[1] and plan() in p[1] and "## Bad cases" in p[1]
    assert "Debug" in p[2] and "garbage" in p[2] and "not valid JSON" in p[2]
    best_public = max(n["public"] for n in s["curve"] if n["public"] is not None)
    best_first = s["curve"][0]["public"] >= s["curve"][2]["public"]
    assert (plan() if best_first else better) in p[3]  # Improve starts from the best node
    assert "Repair" in p[4] and "insufficient valid samples" in p[4] and SMALL in p[4]
    assert "Iteration 8 of 8: Draft" in p[7]
    assert s["final_public"] == best_public
    curve = s["curve"]
    assert len(curve) == 8 and curve[-1]["best_public"] == best_public
    assert s["llm"]["calls"] == 8 and s["llm"]["prompt_tokens"] > 0


def test_a_cut_off_iterative_run_resumes_from_its_last_node(env, scripted_server, tmp_path):
    out = tmp_path / "iterative"
    config = ProtocolConfig(max_iterations=8)
    first_four = (plan(), "garbage", plan(amount=80), SMALL)  # those of the test above
    last_four = (SMALL, SMALL, SMALL, plan(amount=60))
    scripted_server.push(*first_four, *last_four)  # uninterrupted, for comparison
    whole = run_iterative(env, backend(scripted_server), config, seed=0, out=tmp_path / "whole")
    whole_prompts = prompts(scripted_server)
    scripted_server.requests.clear()
    scripted_server.push(*first_four, Reply(status=400, error="x"))  # the endpoint fails for good
    with pytest.raises(ProviderError, match="HTTP 400"):
        run_iterative(env, backend(scripted_server), config, seed=0, out=out)
    assert [n["stage"] for n in read_jsonl(out / "nodes.jsonl")] == [
        "draft", "improve", "debug", "improve",
    ]  # fmt: skip
    asked = len(scripted_server.requests)

    scripted_server.push(*last_four)
    s = run_iterative(env, backend(scripted_server), config, seed=0, out=out)
    assert s["stages"] == whole["stages"] and s["curve"] == whole["curve"]
    assert prompts(scripted_server)[asked:] == whole_prompts[4:]  # the same contexts, word for word
    assert s["attempts"] == 8 and s["successes"] == 3 and s["llm"]["calls"] == 8
    assert [n["index"] for n in read_jsonl(out / "nodes.jsonl")] == list(range(8))
    kept = [n["llm"] for n in read_jsonl(out / "nodes.jsonl")]  # the cut-off run's time counts
    assert sum(n["seconds"] for n in kept) == pytest.approx(s["llm"]["seconds"])
    assert sum(n["retries"] for n in kept) == s["llm"]["retries"]

    asked = len(scripted_server.requests)  # a finished run asks nothing more
    again = run_iterative(env, backend(scripted_server), config, seed=0, out=out)
    assert len(scripted_server.requests) == asked and again["final_private"] == s["final_private"]

    scripted_server.push(plan())  # other settings start afresh
    one = run_iterative(env, backend(scripted_server), ProtocolConfig(max_iterations=1), out=out)
    assert one["stages"] == ["draft"] and len(list(read_jsonl(out / "nodes.jsonl"))) == 1
    earlier = {p.name.split(".earlier-")[0]: p for p in out.iterdir() if ".earlier-" in p.name}
    assert set(earlier) == {"nodes", "run", "summary"}  # the 8-node run is kept, not wiped
    assert len(list(read_jsonl(earlier["nodes"]))) == 8


def test_a_best_submission_below_the_base_reports_the_base_as_the_env_does(env, scripted_server):
    from dataeng_gym.policies.protocols import Node, ProtocolRun

    run = ProtocolRun(
        env, backend(scripted_server), ProtocolConfig(), seed=0, out=None, protocol="x"
    )
    run.base = {"base_public": 0.4, "base_private": 0.5}
    run.nodes.append(Node(0, "attempt", None, "", valid=True, public=0.3, private=0.5, gain_rel=0))
    s = run.summary()
    assert s["final_public"] == 0.4 and s["final_private"] == 0.5 and s["gain_abs"] == 0
    assert s["curve"][-1]["best_public"] == 0.4


def test_cli_protocol_runs_end_to_end(scripted_server, tmp_path, capsys):
    scripted_server.push("not a plan", plan())
    out = tmp_path / "one-shot"
    args = ["protocol", "--fast", "--protocol", "one-shot", "--max-attempts", "3"]
    args += ["--base-url", scripted_server.base_url, "--model", "m", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "attempts 2, valid 1, MATS 2.00" in text and "unparseable=1" in text
    assert len(list(read_jsonl(out / "nodes.jsonl"))) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["max_attempts"] == 3 and summary["config"]["max_tokens"] == 2048


def test_protocols_against_transformers_serve_record_failures(env, served_tiny_model):
    base_url, model = served_tiny_model
    config = ProtocolConfig(max_attempts=2, max_iterations=3, max_tokens=16)
    garbage = make_backend("openai", model, base_url)
    s = run_one_shot(env, garbage, config, seed=0)
    assert s["attempts"] == 2 and s["successes"] == 0 and s["mats"] is None
    assert sum(s["failures"].values()) == 2 and s["llm"]["completion_tokens"] == 2 * 16
    s = run_iterative(env, garbage, config, seed=0)
    assert s["stages"] == ["draft", "debug", "debug"] and s["failures"]["truncated"] == 3


def test_a_spent_provider_is_a_recorded_failure_and_the_run_goes_on(env, scripted_server):
    scripted_server.push(Reply(status=503, error="overloaded"), plan())
    no_retries = make_backend("openai", "scripted", scripted_server.base_url, max_retries=0)
    s = run_one_shot(env, no_retries, seed=0)
    assert s["attempts"] == 2 and s["successes"] == 1 and s["failures"]["other"] == 1
    scripted_server.push(Reply(status=400, error="bad request"))
    with pytest.raises(ProviderError, match="HTTP 400"):  # a configuration error stops the run
        run_one_shot(env, no_retries, seed=0)


def test_a_rerun_asks_again_the_calls_a_dead_endpoint_failed(env, scripted_server, tmp_path):
    out, config = tmp_path / "one-shot", ProtocolConfig(max_attempts=3)
    no_retries = make_backend("openai", "scripted", scripted_server.base_url, max_retries=0)
    scripted_server.push("no plan", *[Reply(status=503, error="down")] * 2)
    s = run_one_shot(env, no_retries, config, seed=0, out=out)
    assert s["attempts"] == 3 and s["failures"]["other"] == 2 and s["successes"] == 0
    scripted_server.push(plan())  # the endpoint is back: its two failed calls are asked again
    s = run_one_shot(env, no_retries, config, seed=0, out=out)
    assert s["attempts"] == 2 and s["successes"] == 1 and s["failures"]["unparseable"] == 1
