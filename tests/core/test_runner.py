import json

import pytest

from dataeng_gym.results import read_results
from dataeng_gym.runner import (
    EpisodeSpec,
    FailureBudgetExceeded,
    RunnerConfig,
    RunnerError,
    make_specs,
    run_episodes,
)

TIMING = {"wall_seconds", "student_seconds"}


def _comparable(record):
    return {k: v for k, v in record["summary"].items() if k not in TIMING}


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_matches_serial_on_the_fast_twin(ray_instance, tmp_path):
    specs = make_specs("same", ["uniform", "weakest-skill"], ["code"], [3])
    serial = run_episodes(specs, tmp_path / "serial", RunnerConfig())
    parallel = run_episodes(specs, tmp_path / "ray", RunnerConfig(backend="ray", workers=2))
    assert [r["status"] for r in serial + parallel] == ["ok"] * 4
    assert [_comparable(r) for r in serial] == [_comparable(r) for r in parallel]
    for r in serial:  # the summary's TRAIN curve and per-skill accuracies
        s = r["summary"]
        assert len(s["train_publics"]) == s["train_runs"] and s["policy"] == r["policy"]
        assert set(s["base_skill_public"]) == set(s["final_skill_public"]) == {
            "reverse", "upper", "replace", "slice"
        }  # fmt: skip
    for run in ("serial", "ray"):  # every step log is written under the run dir
        for r in read_results(tmp_path / run):
            steps = (tmp_path / run / r["episode_dir"] / "episode.jsonl").read_text().splitlines()
            assert len(steps) == r["summary"]["steps"]


@pytest.mark.ray
def test_ray_retries_dead_workers_records_errors_and_bounds_poison(ray_instance, tmp_path):
    marker = tmp_path / "crashed-once"
    specs = [
        EpisodeSpec("faults", "uniform", "code", 0, fault=f"exit-once:{marker}"),
        EpisodeSpec("faults", "uniform", "code", 1, fault="raise"),
        EpisodeSpec("faults", "uniform", "code", 2, fault="exit"),
        EpisodeSpec("faults", "uniform", "code", 3),
    ]
    config = RunnerConfig(backend="ray", workers=2, max_retries=1, max_failures=2)
    records = run_episodes(specs, tmp_path / "run", config)
    by_seed = {r["seed"]: r for r in records}
    assert marker.exists()
    # killed mid-episode once, retried, and completed
    assert by_seed[0]["status"] == "ok" and by_seed[0]["attempts"] == 2
    # a Python error: recorded with its traceback, not retried
    assert by_seed[1]["status"] == "failed" and by_seed[1]["attempts"] == 1
    assert "fault injection" in by_seed[1]["traceback"]
    # always kills its worker: failed after max_retries + 1 attempts
    assert by_seed[2]["status"] == "failed" and by_seed[2]["attempts"] == 2
    assert "2 attempt" in by_seed[2]["error"]
    # siblings finish
    assert by_seed[3]["status"] == "ok" and by_seed[3]["attempts"] == 1
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["seed"] for line in lines) == [0, 1, 2, 3]  # no duplicates


def test_failure_budget_stops_the_run_and_keeps_what_finished(tmp_path):
    specs = [
        EpisodeSpec("budget", "uniform", "code", 0, fault="raise"),
        EpisodeSpec("budget", "uniform", "code", 1, fault="raise"),
        EpisodeSpec("budget", "uniform", "code", 2),
    ]
    with pytest.raises(FailureBudgetExceeded, match="failure budget of 1"):
        run_episodes(specs, tmp_path, RunnerConfig(max_failures=1))
    records = read_results(tmp_path)
    assert [(r["seed"], r["status"]) for r in records] == [(0, "failed"), (1, "failed")]


def test_rerun_skips_finished_episodes_and_retries_failed_ones(tmp_path):
    specs = make_specs("resume", ["uniform"], ["code"], [0, 1])
    broken = [specs[0], EpisodeSpec("resume", "uniform", "code", 1, fault="raise")]
    first = run_episodes(broken, tmp_path, RunnerConfig())
    assert [r["status"] for r in first] == ["ok", "failed"]
    seen = []
    second = run_episodes(specs, tmp_path, RunnerConfig(), on_result=lambda r, i, n: seen.append(r))
    assert [r["seed"] for r in seen] == [1]  # only the failed one ran again
    assert [r["status"] for r in second] == ["ok", "ok"]
    assert second[1]["attempts"] == 1  # this call's starts, not the failed call's as well
    attempts = tmp_path / specs[0].episode_dir / "attempts.jsonl"
    assert len(attempts.read_text().splitlines()) == 1  # the finished episode never restarted
    assert second[0] == first[0]


def test_another_config_in_the_same_run_dir_is_refused(tmp_path):
    from dataeng_gym.envs.config import FAST

    run_episodes(make_specs("pin", ["random"], ["code"], [0]), tmp_path, RunnerConfig())
    other = make_specs("pin", ["random"], ["code"], [1], config=FAST.replace(train_budget=2))
    with pytest.raises(RunnerError, match="another env configuration"):
        run_episodes(other, tmp_path, RunnerConfig())


def test_bad_specs_and_configs_say_how_to_fix_them():
    with pytest.raises(ValueError, match="choose one of"):
        EpisodeSpec("x", "oracle", "code", 0)
    with pytest.raises(ValueError, match="dataeng-gym agents"):  # needs an endpoint: refused early
        EpisodeSpec("x", "llm", "code", 0)
    with pytest.raises(ValueError, match="exit-once:MARKER_PATH"):
        EpisodeSpec("x", "uniform", "code", 0, fault="exit-once")
    with pytest.raises(ValueError, match="backend='ray'"):
        RunnerConfig(gpus_per_episode=0.25)
    with pytest.raises(ValueError, match="workers"):
        RunnerConfig(backend="ray", workers=0)
