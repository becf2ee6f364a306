import dataclasses
import json

import numpy as np
import pytest

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.simulated import SimulatedDataEngEnv
from dataeng_gym.episode import run_episode
from dataeng_gym.errors import DataEngError
from dataeng_gym.policies import make_policy
from dataeng_gym.training.cli import SHIPPED_SURROGATE

pytestmark = pytest.mark.ray

# A short task (one TRAIN, 8 steps). With this budget PPO learns what random never does: to
# stop paying for invalid and wasted actions (random's mean return is about -0.025). Gaining
# on the student needs a longer run (experiments/train_ppo.py warm-starts from BC for that).
TASK = EnvConfig(
    domain="code",
    student_kind="simulated",
    simulator_path=str(SHIPPED_SURROGATE),
    train_budget=1,
    max_steps=8,
    min_train_items=100,
)
THRESHOLD = -0.01
"""Mean episode return (public gain minus costs) PPO must beat; random stays well below."""


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    from dataeng_gym.training.ppo import PPOSettings, train_ppo

    out = tmp_path_factory.mktemp("ppo")
    settings = PPOSettings(
        env=TASK,
        iterations=8,
        workers=0,
        batch_size=600,
        minibatch_size=200,
        epochs=8,
        lr=1e-3,
        checkpoint_every=4,
        track=True,  # W&B code path; the test session disables W&B (WANDB_MODE=disabled)
    )
    summary = train_ppo(settings, out)
    return out, summary


def mean_return(policy, seeds):
    env = SimulatedDataEngEnv(TASK)
    return float(np.mean([run_episode(env, policy, seed=s)["return"] for s in seeds]))


def test_ppo_beats_a_threshold_random_does_not_reach(trained):
    out, summary = trained
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and "episode_return_mean" in json.loads(lines[-1])
    seeds = range(1000, 1030)
    random_return = mean_return(make_policy("random", TASK, seed=0), seeds)
    ppo_return = mean_return(make_policy(f"ppo:{out}", TASK), seeds)
    assert random_return < THRESHOLD < ppo_return, (random_return, ppo_return)


def test_checkpoint_reloads_and_acts_identically(trained):
    out, _ = trained
    a, b = make_policy(f"ppo:{out}", TASK), make_policy(f"ppo:{out / 'checkpoint'}", TASK)
    env = SimulatedDataEngEnv(TASK)
    obs, info = env.reset(seed=3)
    for _ in range(5):
        action = a.act(obs, info)
        assert action == b.act(obs, info)
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            break


def test_missing_checkpoint_and_amount_mismatch_are_clear_errors(trained, tmp_path):
    out, _ = trained
    with pytest.raises(DataEngError, match="train-policy --algo ppo"):
        make_policy(f"ppo:{tmp_path}", TASK)
    with pytest.raises(DataEngError, match="amounts"):
        make_policy(f"ppo:{out}", TASK.replace(amounts=(1, 2, 3, 4)))


class _CutOff(Exception):
    """Stands for a crash or Ctrl-C in the middle of a PPO run."""


def test_a_cut_off_run_resumes_from_its_last_checkpoint(ray_session, tmp_path):
    from dataeng_gym.training.ppo import PPOSettings, train_ppo

    settings = PPOSettings(
        env=TASK, iterations=3, workers=0, batch_size=200, minibatch_size=100, epochs=1,
        checkpoint_every=1,
    )  # fmt: skip

    def cut_off_at_2(message: str) -> None:
        if "iteration 2/" in message:  # logged before iteration 2's checkpoint is saved
            raise _CutOff

    with pytest.raises(_CutOff):
        train_ppo(settings, tmp_path, progress=cut_off_at_2)
    first = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in first] == [1, 2]
    assert json.loads((tmp_path / "checkpoint" / "progress.json").read_text()) == {"iteration": 1}

    said: list[str] = []
    summary = train_ppo(settings, tmp_path, progress=said.append)
    assert said[0] == "resuming from the checkpoint of iteration 1"
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in metrics] == [1, 2, 3] and summary["iteration"] == 3
    assert metrics[0] == first[0]  # iteration 1 kept, the cut-off iteration 2 trained again
    # the algorithm's own counters came back: 600 lifetime steps, not 400 as after a restart
    assert metrics[-1]["env_steps"] == 3 * settings.batch_size

    # training for longer continues; other settings start over
    longer = dataclasses.replace(settings, iterations=4)
    said.clear()
    assert train_ppo(longer, tmp_path, progress=said.append)["iteration"] == 4
    assert said[0] == "resuming from the checkpoint of iteration 3"
    said.clear()
    train_ppo(dataclasses.replace(longer, lr=1e-3), tmp_path, progress=said.append)
    assert not said[0].startswith("resuming")
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["env_steps"] == 4 * settings.batch_size and len(metrics) == 4

    # a new run cut off before its first checkpoint must not resume from the old run's
    other = dataclasses.replace(longer, lr=5e-4)

    def cut_off_at_1(message: str) -> None:
        if "iteration 1/" in message:
            raise _CutOff

    with pytest.raises(_CutOff):
        train_ppo(other, tmp_path, progress=cut_off_at_1)
    said.clear()
    train_ppo(other, tmp_path, progress=said.append)  # the old checkpoint is of iteration 4, too
    assert not said[0].startswith("resuming")


def test_the_step_cost_lowers_each_training_reward_and_changes_nothing_else():
    from dataeng_gym.training.ppo import PPOSettings, make_training_env

    plain = make_training_env({"config": TASK.replace(max_steps=20), "domains": ["code"]})
    costly = make_training_env(
        {"config": TASK.replace(max_steps=20), "domains": ["code"], "step_cost": 0.001}
    )
    policy = make_policy("random", TASK, seed=1)
    (a, _), (b, _) = plain.reset(seed=4), costly.reset(seed=4)
    for _ in range(20):
        action = policy.act(a, {})
        a, ra, done_a, _, _ = plain.step(action)
        b, rb, done_b, _, _ = costly.step(action)
        assert rb == pytest.approx(ra - 0.001)
        assert done_a == done_b and all(np.array_equal(a[k], b[k]) for k in a)
        if done_a:
            break
    with pytest.raises(ValueError, match="step_cost"):
        PPOSettings(env=TASK, step_cost=-0.001)


def test_warm_start_reaches_a_remote_env_runner(ray_session, tmp_path):
    import torch

    from dataeng_gym.training.bc import (
        BCSettings,
        load_bc,
        record_demonstrations,
        train_bc,
        warm_start,
    )
    from dataeng_gym.training.ppo import PPOSettings, build_algorithm

    env = SimulatedDataEngEnv(TASK)
    obs, targets = record_demonstrations(env, make_policy("weakest-skill", TASK), range(3), "code")
    train_bc(obs, targets, TASK, BCSettings(epochs=5), tmp_path / "bc")
    algo = build_algorithm(PPOSettings(env=TASK, workers=1, batch_size=200, minibatch_size=100))
    try:
        warm_start(algo, tmp_path / "bc")
        net, _ = load_bc(tmp_path / "bc")
        first = next(net.parameters()).detach()
        remote = algo.env_runner_group.foreach_env_runner(
            lambda r: (
                next(p for n, p in r.module.named_parameters() if "actor_encoder" in n)
                .detach()
                .clone()
            ),
            local_env_runner=False,
        )
        assert len(remote) == 1 and torch.allclose(remote[0], first)
    finally:
        algo.stop()


def test_ppo_trains_against_the_real_tiny_student_in_a_remote_env_runner(ray_session, tmp_path):
    """The REAL student (the fast twin's micro student, fine-tuned at every TRAIN) behind an
    env runner: an iteration must return whole sampled episodes, and the checkpoint must act in
    the real env (train_ppo.py --ppo-student tiny runs this path at full size)."""
    from dataeng_gym.envs.data_env import DataEngEnv
    from dataeng_gym.training.ppo import PPOSettings, train_ppo

    task = FAST.replace(max_steps=8, train_budget=1, min_train_items=20)
    settings = PPOSettings(
        env=task, iterations=1, workers=1, batch_size=48, minibatch_size=24, epochs=1
    )
    summary = train_ppo(settings, tmp_path / "ppo")
    assert summary["episodes"] >= 1 and summary["env_steps"] >= 48, summary
    result = run_episode(DataEngEnv(task), make_policy(f"ppo:{tmp_path / 'ppo'}", task), seed=5)
    assert result["steps"] >= 1 and "gain_abs" in result
