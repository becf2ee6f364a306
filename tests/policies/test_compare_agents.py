import csv
import io
import json
import statistics

import pytest
from llm_servers import Reply, free_port

from dataeng_gym.cli import main
from dataeng_gym.errors import ConfigError
from dataeng_gym.io import read_jsonl
from dataeng_gym.policies.compare_agents import (
    CompareConfig,
    parse_agent,
    run_compare,
    summarize,
    table_markdown,
)

PLAN = json.dumps(
    [{"op": "generate", "skill": s, "difficulty": 1, "amount": 50} for s in ("reverse", "upper")]
    + [{"op": "dedup"}]
)


def alternating(server):
    """Odd requests get prose (unparseable), even ones a valid plan: MATS above 1."""
    return lambda _req: Reply("prose, not a plan" if len(server.requests) % 2 else PLAN)


def config(*agents, **changes):
    base = dict(domains=("code",), seeds=2, fast=True, max_attempts=2, max_iterations=3)
    return CompareConfig(agents=agents, **{"max_retries": 0, **base, **changes})


def table_rows(out):
    return list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))


def test_parse_agent_specs():
    assert parse_agent("weakest-skill").policy == "weakest-skill"
    a = parse_agent("qwen=llm:openai:qwen3:8b@http://127.0.0.1:8000/v1")
    assert (a.name, a.backend, a.model, a.base_url) == (
        "qwen",
        "openai",
        "qwen3:8b",
        "http://127.0.0.1:8000/v1",
    )
    assert parse_agent("llm:transformers:/models/tiny").base_url is None
    with pytest.raises(ConfigError, match="llm:BACKEND:MODEL"):
        parse_agent("llm:nope:m")
    with pytest.raises(ConfigError, match="unknown agent 'gpt'"):
        parse_agent("gpt")
    with pytest.raises(ValueError, match="NAME=SPEC"):
        CompareConfig(agents=("random", "random"))
    with pytest.raises(ValueError, match="share a run directory"):
        CompareConfig(agents=("a b=random", "a_b=uniform"))
    with pytest.raises(ValueError, match="unknown domain"):
        CompareConfig(agents=("random",), domains=("chess",))


def test_table_matches_the_runs_and_a_rerun_redoes_nothing(scripted_server, tmp_path):
    scripted_server.default = alternating(scripted_server)
    out = tmp_path / "cmp"
    cfg = config("random", f"scripted=llm:openai:m@{scripted_server.base_url}")
    records = run_compare(cfg, out, log=io.StringIO())
    assert [(r["agent"], r["protocol"]) for r in records] == [("random", "episode")] * 2 + [
        ("scripted", "one-shot")
    ] * 2 + [("scripted", "iterative")] * 2
    assert all(r["status"] == "ok" for r in records)

    rows = table_rows(out)
    assert [(r["agent"], r["protocol"], r["domain"]) for r in rows] == [
        (agent, protocol, domain)
        for agent, protocol in [
            ("random", "episode"),
            ("scripted", "one-shot"),
            ("scripted", "iterative"),
        ]
        for domain in ("code", "avg")
    ]
    for row in rows:  # each cell is the mean over seeds of the runs' own summary.json
        runs = [
            r for r in records if (r["agent"], r["protocol"]) == (row["agent"], row["protocol"])
        ]
        summaries = [json.loads((out / r["run_dir"] / "summary.json").read_text()) for r in runs]
        assert float(row["gain_rel"]) == pytest.approx(
            statistics.fmean(s["gain_rel"] for s in summaries)
        )
        assert float(row["final_private"]) == pytest.approx(
            statistics.fmean(s["final_private"] for s in summaries)
        )
        if row["protocol"] == "episode":
            assert row["mats"] == ""
        else:
            assert float(row["mats"]) == pytest.approx(
                statistics.fmean(s["mats"] for s in summaries)
            )
    one_shot = next(r for r in rows if r["protocol"] == "one-shot" and r["domain"] == "code")
    assert float(one_shot["mats"]) == 2.0  # prose, then a valid plan, on both seeds
    md = (out / "table.md").read_text()
    assert "**One-Shot**" in md and "**Iterative**" in md and "**Baselines (one episode)**" in md
    assert "| Agent | code | **avg** |" in md
    assert f"| scripted | 2.00 / {float(one_shot['gain_rel']):+.2f} |" in md
    assert (out / "curves_code.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    asked, lines = len(scripted_server.requests), (out / "results.jsonl").read_text()
    log = io.StringIO()
    again = run_compare(cfg, out, log=log)
    assert len(scripted_server.requests) == asked  # no LLM run redone
    assert (out / "results.jsonl").read_text() == lines  # no run of any kind redone
    assert log.getvalue().count("done before, skipped") == 6
    assert again == records


def test_a_dead_endpoint_is_a_recorded_failure_and_the_others_finish(scripted_server, tmp_path):
    scripted_server.default = lambda _req: Reply(PLAN)
    dead = f"dead=llm:openai:m@http://127.0.0.1:{free_port()}/v1"
    cfg = config(
        dead, f"live=llm:openai:m@{scripted_server.base_url}", protocols=("one-shot",), seeds=1
    )
    out = tmp_path / "cmp"
    records = run_compare(cfg, out, log=io.StringIO())
    failed, ok = records
    assert failed["status"] == "failed" and "never answered" in failed["error"]
    assert "cannot connect" in failed["error"]
    assert ok["status"] == "ok" and ok["mats"] == 1.0
    md = (out / "table.md").read_text()
    assert "| dead | n/a / n/a (1 failed) | n/a / n/a (1 failed) |" in md
    assert "| live | 1.00 / " in md
    rerun = run_compare(cfg, out, log=io.StringIO())  # the failed run is retried, the other kept
    assert len(list(read_jsonl(out / "results.jsonl"))) == 3
    assert rerun[0]["status"] == "failed" and rerun[1] == ok
    with pytest.raises(ConfigError, match="max_attempts"):  # would mix settings in one table
        run_compare(config(dead, protocols=("one-shot",), seeds=1, max_attempts=3), out)
    relabelled = "dead=llm:openai:another-model@http://127.0.0.1:9/v1"  # same label, new agent
    with pytest.raises(ConfigError, match="holds runs of agent 'dead' defined as"):
        run_compare(config(relabelled, protocols=("one-shot",), seeds=1), out)
    moved = "dead=llm:openai:m@http://127.0.0.1:9/v1"  # the same agent served elsewhere resumes
    assert run_compare(config(moved, protocols=("one-shot",), seeds=1), out, log=io.StringIO())


def test_summary_means_over_seeds_and_domains_leaves_failures_out():
    cfg = CompareConfig(agents=("a=llm:openai:m",), domains=("code", "finance"), seeds=2)

    def rec(domain, seed, gain, mats, status="ok"):
        r = {"agent": "a", "protocol": "one-shot", "domain": domain, "seed": seed, "status": status}
        return r | (
            {"gain_rel": gain, "mats": mats, "final_private": gain / 100} if status == "ok" else {}
        )

    records = [rec("code", 0, 10.0, 1.0), rec("code", 1, 30.0, 3.0), rec("finance", 0, -4.0, None)]
    records.append(rec("finance", 1, 0, 0, status="failed"))
    rows = {r["domain"]: r for r in summarize(records, cfg)}
    assert rows["code"]["gain_rel"] == 20.0 and rows["code"]["mats"] == 2.0
    assert rows["finance"]["gain_rel"] == -4.0 and rows["finance"]["mats"] is None
    assert rows["finance"]["runs_failed"] == 1 and rows["finance"]["no_valid"] == 1
    assert rows["avg"]["gain_rel"] == 8.0 and rows["avg"]["mats"] is None
    assert (
        "| a | 2.00 / +20.00 | n/a / -4.00 (1 failed) | n/a / +8.00 (1 failed) |"
        in table_markdown(list(rows.values()), cfg)
    )
    records = [r for r in records if r["domain"] == "code"]  # no finance run at all: no average
    assert summarize(records, cfg)[-1]["gain_rel"] is None


def test_cli_agents(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["agents", "--fast", "--agents", "random,uniform", "--domains", "code"]
    assert main([*argv, "--seeds", "1", "--out", str(out)]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "| random | " in text and "| uniform | " in text and "2 runs (0 failed)" in text
    assert len(list(read_jsonl(out / "results.jsonl"))) == 2
    assert main(["agents", "--agents", "gpt-5", "--out", str(out)]) == 2
    assert "unknown agent 'gpt-5'" in capsys.readouterr().err
