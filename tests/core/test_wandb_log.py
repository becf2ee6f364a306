import json
import time

import pytest

from dataeng_gym.report import summarize, write_report
from dataeng_gym.results import EpisodeKey, make_record
from dataeng_gym.wandb_log import WandbLogger

pytest.importorskip("wandb")


def _step(i):
    pool = {"size": 10 * i, "verified_frac": 0.5, "duplicate_frac": 0.1, "malformed_frac": 0.0}
    return {
        "step": i,
        "action": {"op": "generate", "skill": "upper", "amount": 50},
        "invalid_action": None,
        "reward": 0.01 * i,
        "public": 0.3,
        "best_public": 0.3,
        "pool": pool,
        "teacher_left": 100 - i,
    }


@pytest.fixture
def run_dir(tmp_path):
    """A run with one recorded episode of three steps."""
    ep = tmp_path / "episodes" / "e0"
    ep.mkdir(parents=True)
    (ep / "episode.jsonl").write_text("".join(json.dumps(_step(i)) + "\n" for i in (1, 2, 3)))
    summary = {
        "gain_abs": 0.125,
        "gain_rel": 25.0,
        "base_private": 0.5,
        "final_private": 0.625,
        "public_private_gap": 0.0,
        "teacher_samples": 150,
        "student_seconds": 1.0,
    }
    record = make_record(
        EpisodeKey("wb", "uniform", "code", 0), "ok", summary=summary, episode_dir="episodes/e0"
    )
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    return tmp_path, record


def _written(path, needle, patience=60.0):
    """The file's bytes once they hold needle: wandb-core may still be writing after finish()."""
    deadline = time.monotonic() + patience
    while needle not in (data := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return data


def _log_all(run_dir, record):
    logger = WandbLogger(run_dir, "wb", {"policies": ["uniform"], "seeds": 1})
    logger.log_episode(record, run_dir / record["episode_dir"])
    logger.log_report(summarize([record]), write_report(run_dir))
    logger.finish()
    return logger


def test_offline_run_dir_holds_the_logged_metrics_and_resumed_from(run_dir, monkeypatch):
    path, record = run_dir
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = _log_all(path, record)
    assert first.resumed_from is None
    (run,) = (path / "wandb").glob("offline-run-*")
    data = _written(next(run.glob("run-*.wandb")), b"episode/gain_abs")
    for key in (b"step/public", b"step/pool_size", b"env_step", b"episode/gain_abs", b"0.125"):
        assert key in data
    assert list(run.glob("files/media/table/comparison_*.table.json"))
    assert list(run.glob("files/media/table/actions_*.table.json"))
    first_id = json.loads((path / "wandb_runs.json").read_text())["runs"][0]["id"]
    second = WandbLogger(path, "wb", {"seeds": 1})  # a rerun of the same run directory
    assert second.resumed_from == first_id
    assert second.run.config["resumed_from"] == first_id  # logged with the config
    second.finish()
    runs = json.loads((path / "wandb_runs.json").read_text())["runs"]
    assert [r["id"] for r in runs] == [first_id, second.resumed_from and runs[1]["id"]]
    assert runs[1]["id"] != first_id


def test_disabled_mode_logs_nothing_and_keeps_no_state(run_dir, monkeypatch):
    path, record = run_dir
    monkeypatch.setenv("WANDB_MODE", "disabled")
    _log_all(path, record)
    assert not (path / "wandb_runs.json").exists()


def test_a_wandb_failure_warns_and_never_raises(run_dir, monkeypatch):
    path, record = run_dir
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(path, "wb", {})
    broken = dict(record, summary=None, attempts="x", status="ok")
    del broken["policy"]
    with pytest.warns(RuntimeWarning, match="W&B logging stopped"):
        logger.log_episode(broken, path / record["episode_dir"])
    assert logger.run is None
    logger.log_episode(record, path / record["episode_dir"])  # a no-op now
    logger.finish()


@pytest.mark.parametrize("state", ["", '{"runs": {"id": 1}}'])
def test_an_unreadable_run_state_warns_and_never_raises(run_dir, monkeypatch, state):
    path, _ = run_dir
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (path / "wandb_runs.json").write_text(state)
    with pytest.warns(RuntimeWarning, match="W&B logging stopped"):
        logger = WandbLogger(path, "wb", {})
    assert logger.run is None and logger.resumed_from is None
    logger.finish()


def test_a_refused_compare_rerun_starts_no_wandb_run(tmp_path, monkeypatch):
    from dataeng_gym.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "cmp"
    argv = ["compare", "--fast", "--policies", "random", "--domains", "code", "--seeds", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(out), "--max-steps", "5", "--wandb"]) == 2  # another config
    assert not (out / "wandb_runs.json").exists() and not (out / "wandb").exists()
