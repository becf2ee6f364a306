import json
import subprocess
import sys
from pathlib import Path

from dataeng_gym.cli import main
from dataeng_gym.episode import FINAL_KEYS


def test_domains_lists_every_domain_with_skills(capsys):
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    for name, skill in (("science", "elements"), ("code", "reverse"), ("finance", "cents")):
        assert f"{name}:" in out and f"- {skill}:" in out


def test_unknown_domain_or_policy_lists_valid_ones(capsys):
    assert main(["run", "--domain", "poetry"]) == 2
    assert "science, code, finance" in capsys.readouterr().err
    assert main(["run", "--policy", "oracle"]) == 2
    assert "random, uniform, weakest-skill" in capsys.readouterr().err


def test_run_end_to_end_on_the_fast_twin(tmp_path, capsys):
    out = tmp_path / "ep"
    code = main(["run", "--fast", "--policy", "weakest-skill", "--seed", "1", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "private accuracy" in captured.out  # the summary table
    assert "step  1 generate" in captured.err  # live progress
    steps = [json.loads(line) for line in (out / "episode.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(steps) == summary["steps"] >= 5
    assert {"action", "reward_terms", "pool", "public"} <= set(steps[0])
    assert set(FINAL_KEYS) | {"domain", "policy", "seed", "wall_seconds"} <= set(summary)
    assert summary["policy"] == "weakest-skill" and summary["train_runs"] >= 1
    for step in steps:
        assert abs(sum(step["reward_terms"].values()) - step["reward"]) < 1e-9


def test_config_fields_are_cli_options(tmp_path):
    out = tmp_path / "ep"
    assert (
        main(["run", "--fast", "--policy", "uniform", "--teacher-budget", "900", "--out", str(out)])
        == 0
    )
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["teacher_budget"] == 900
    cache = str(tmp_path / "cache")  # an optional string field is an option too
    assert (
        main(["run", "--fast", "--policy", "random", "--cache-dir", cache, "--out", str(out)]) == 0
    )
    assert json.loads((out / "config.json").read_text())["config"]["cache_dir"] == cache


def test_a_rerun_into_the_same_out_keeps_the_earlier_run_even_when_it_fails(tmp_path, capsys):
    out = tmp_path / "ep"
    assert main(["run", "--fast", "--policy", "uniform", "--out", str(out)]) == 0
    first = {name: (out / name).read_text() for name in ("episode.jsonl", "summary.json")}
    missing = str(tmp_path / "no-model")
    assert (
        main(["run", "--fast", "--policy", "uniform", "--out", str(out), "--hf-model", missing])
        == 2
    )
    assert "kept the earlier run's files" in capsys.readouterr().err
    kept = {p.name.split(".earlier-")[0]: p for p in out.iterdir() if ".earlier-" in p.name}
    assert set(kept) == {"config", "episode", "summary"}
    assert kept["episode"].read_text() == first["episode.jsonl"]
    assert kept["summary"].read_text() == first["summary.json"]
    assert not (out / "summary.json").exists()  # the failed run wrote no summary


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "dataeng-gym"
    result = subprocess.run([exe, "domains"], capture_output=True, text=True, check=True)
    assert "finance:" in result.stdout


def test_run_with_the_hf_student(tmp_path, capsys):
    from transformers import LlamaConfig

    from dataeng_gym.envs.hf_student import save_random_model

    tiny = LlamaConfig(
        vocab_size=128,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = save_random_model(tmp_path / "model", tiny)
    out = tmp_path / "ep"
    args = ["run", "--fast", "--policy", "uniform", "--out", str(out), "--hf-model", str(model)]
    args += ["--train-budget", "1"]  # one TRAIN is enough here
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["student_kind"] == "hf" and config["hf_student"]["model"] == str(model)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_runs"] >= 1
    assert main(["run", "--fast", "--student-kind", "hf"]) == 2  # no model given
    assert "HFStudentConfig(model=" in capsys.readouterr().err
