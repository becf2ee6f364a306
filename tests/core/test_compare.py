import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataeng_gym.cli import main
from dataeng_gym.errors import DataEngError
from dataeng_gym.replay import find_episode_dir, replay
from dataeng_gym.results import read_results

EXE = Path(sys.executable).parent / "dataeng-gym"


def test_compare_serial_end_to_end_then_replay(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compare", "--fast", "--policies", "uniform,weakest-skill", "--domains", "code"]
    assert main([*argv, "--seeds", "1", "--out", str(out), "--wandb"]) == 0  # W&B disabled
    captured = capsys.readouterr()
    # a progress line per finished episode, with a bar over all of them
    assert "#" * 10 + "." * 10 + " [   1/2  50%] ok" in captured.err
    assert "#" * 20 + " [   2/2 100%] ok" in captured.err
    assert "| uniform | code | 1 |" in captured.out  # the summary table
    for name in ("results.jsonl", "report.md", "report.csv", "run.json"):
        assert (out / name).exists()
    records = read_results(out)
    assert [r["policy"] for r in records] == ["uniform", "weakest-skill"]
    ep = out / records[1]["episode_dir"]
    for name in ("episode.jsonl", "summary.json", "spec.json", "best_pool.jsonl"):
        assert (ep / name).exists()

    # replay by record key and by directory: the same rewards, step by step
    assert find_episode_dir(out, "weakest-skill/code/0") == ep
    result = replay(ep)
    assert result.identical and len(result.replayed) == records[1]["summary"]["steps"]
    assert result.final_info["gain_abs"] == records[1]["summary"]["gain_abs"]
    assert main(["replay", str(out), "--key", "uniform/code/0"]) == 0
    assert "rewards identical" in capsys.readouterr().out

    # a changed log no longer replays identically, and replay says so
    steps = [json.loads(line) for line in (ep / "episode.jsonl").read_text().splitlines()]
    steps[0]["reward"] += 1.0
    (ep / "episode.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert main(["replay", str(ep)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
    with pytest.raises(DataEngError, match="--key"):
        find_episode_dir(out)


def test_a_short_key_of_several_experiments_is_refused_not_guessed(tmp_path):
    from dataeng_gym.results import EpisodeKey, make_record

    records = [
        make_record(EpisodeKey(e, "uniform", "code", 0), "ok", summary={}, episode_dir=f"ep/{e}")
        for e in ("A", "B")
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DataEngError, match="A/uniform/code/0, B/uniform/code/0"):
        find_episode_dir(tmp_path, "uniform/code/0")
    assert find_episode_dir(tmp_path, "B/uniform/code/0") == tmp_path / "ep/B"


def test_compare_into_a_file_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("")
    argv = ["compare", "--fast", "--policies", "uniform", "--domains", "code", "--seeds", "1"]
    assert main([*argv, "--out", str(tmp_path / "results.jsonl")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_replay_of_a_run_out_directory(tmp_path):
    out = tmp_path / "ep"
    assert main(["run", "--fast", "--policy", "uniform", "--seed", "2", "--out", str(out)]) == 0
    assert replay(out).identical


def test_compare_killed_with_sigkill_resumes_to_exactly_n_episodes(tmp_path):
    out = tmp_path / "run"
    argv = [EXE, "compare", "--fast", "--policies", "random", "--domains", "code"]
    argv += ["--seeds", "3", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(read_results(out))
    assert 1 <= before <= 3
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["seed"] for r in lines) == [0, 1, 2]  # exactly N unique episodes
    assert done.stderr.count("] ok") == 3 - before  # the rerun ran only what was missing
