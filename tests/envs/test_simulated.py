import dataclasses
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dataeng_gym  # noqa: F401  (registers the envs)
from dataeng_gym.envs.calibrate import (
    config_key,
    gated_training_samples,
    record_policy_pools,
    record_pools,
)
from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import DataEngEnv, Op
from dataeng_gym.envs.data_env import structured_action as act
from dataeng_gym.envs.simulated import SimulatedDataEngEnv
from dataeng_gym.envs.surrogate import (
    KINDS,
    SurrogateError,
    fit_surrogate,
    load_surrogate,
    save_surrogate,
    spearman,
    training_counts,
)
from dataeng_gym.episode import FINAL_KEYS, run_episode
from dataeng_gym.io import read_jsonl
from dataeng_gym.policies import make_policy
from dataeng_gym.training.cli import SHIPPED_SURROGATE

RECORDS = Path(__file__).parent.parent / "data" / "calib_code.jsonl"
SIM = EnvConfig(domain="code", student_kind="simulated", simulator_path=str(SHIPPED_SURROGATE))


def test_surrogate_fit_beats_a_constant_on_held_out_real_trains():
    records = list(read_jsonl(RECORDS))
    assert len(records) >= 30
    shipped = load_surrogate(SHIPPED_SURROGATE, "code")
    base = {
        k: getattr(shipped, k)
        for k in ("base_public", "base_private", "public_counts", "private_counts")
    }
    train, test = records[: -len(records) // 4], records[-len(records) // 4 :]
    model = fit_surrogate(
        train,
        domain="code",
        skills=shipped.skills,
        base=base,
        config_key="t",
        recipe=shipped.recipe,
    )
    y = np.array([r["per_skill"] for r in test])
    pred = np.stack([model.predict(np.array(r["counts"]), np.array(r["position"])) for r in test])
    const = np.array([r["per_skill"] for r in train]).mean(axis=0)
    mae, const_mae = np.abs(pred - y).mean(), np.abs(const - y).mean()
    assert mae < 0.8 * const_mae, (mae, const_mae)
    real = [r["public"] for r in test]
    assert spearman([model.score(p, "public") for p in pred], real) > 0.5


def test_policy_weight_pulls_the_fit_towards_policy_episodes():
    records = list(read_jsonl(RECORDS))
    shipped = load_surrogate(SHIPPED_SURROGATE, "code")
    fit = dict(
        domain="code",
        skills=shipped.skills,
        base={
            k: getattr(shipped, k)
            for k in ("base_public", "base_private", "public_counts", "private_counts")
        },
        config_key="t",
        recipe=shipped.recipe,
        alphas=(3.0,),
    )
    policy = [r for r in records if r.get("source", "random") != "random"]
    assert len(policy) >= 10

    def policy_error(model):
        return np.mean(
            [
                np.abs(
                    model.predict(np.array(r["counts"]), np.array(r["position"])) - r["per_skill"]
                )
                for r in policy
            ]
        )

    even = fit_surrogate(records, policy_weight=1.0, **fit)
    weighted = fit_surrogate(records, policy_weight=4.0, **fit)
    assert policy_error(weighted) < policy_error(even)
    with pytest.raises(SurrogateError, match="policy_weight"):
        fit_surrogate(records, policy_weight=0.0, **fit)


@pytest.mark.parametrize("domain", ["code", "science", "finance"])
def test_shipped_surrogate_was_fitted_on_the_default_config(domain):
    # A new config field must leave config_key alone unless it changes what a TRAIN learns;
    # otherwise every calibration record and the shipped fit stop matching the default env.
    config = EnvConfig(domain=domain)
    assert load_surrogate(SHIPPED_SURROGATE, domain).config_key == config_key(config)
    how = dataclasses.replace(config.student, device="cpu", compile=True)  # where and how fast
    assert config_key(config.replace(student=how)) == config_key(config)
    what = dataclasses.replace(config.student, lr=2e-3)
    assert config_key(config.replace(student=what)) != config_key(config)


def test_a_surrogate_fitted_on_another_config_warns():
    fast_sim = FAST.replace(student_kind="simulated", simulator_path=str(SHIPPED_SURROGATE))
    with pytest.warns(UserWarning, match="fitted on real TRAINs of another config"):
        SimulatedDataEngEnv(fast_sim).reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SimulatedDataEngEnv(SIM.replace(train_budget=2, max_steps=9)).reset(seed=0)


def test_a_surrogate_file_from_an_older_version_asks_for_a_refit(tmp_path):
    entry = dataclasses.asdict(load_surrogate(SHIPPED_SURROGATE, "code"))
    del entry["recipe"], entry["features"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"code": entry}))
    with pytest.raises(SurrogateError, match="dataeng-gym calibrate --domain code"):
        load_surrogate(old, "code")


def test_gym_make_selects_the_simulated_twin_and_it_passes_check_env():
    env = gym.make("dataeng_gym/DataEng-v1", config=SIM)
    assert isinstance(env.unwrapped, SimulatedDataEngEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def test_bad_simulator_path_and_unknown_domain_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="simulator_path"):
        EnvConfig(student_kind="simulated")
    with pytest.raises(ValueError, match="student_kind"):
        EnvConfig(student_kind="gpt")
    env = SimulatedDataEngEnv(SIM.replace(simulator_path=str(tmp_path / "none.json")))
    with pytest.raises(SurrogateError, match="dataeng-gym calibrate"):
        env.reset(seed=0)
    code_only = tmp_path / "code.json"
    save_surrogate(code_only, load_surrogate(SHIPPED_SURROGATE, "code"))
    with pytest.raises(SurrogateError, match="science"):
        SimulatedDataEngEnv(SIM.replace(simulator_path=str(code_only))).reset(
            seed=0, options={"domain": "science"}
        )
    with pytest.raises(ValueError, match="simulated"):
        DataEngEnv(SIM)


def test_same_seed_same_trajectory_and_final_keys():
    a, b = SimulatedDataEngEnv(SIM), SimulatedDataEngEnv(SIM)
    pa, pb = make_policy("random", SIM, seed=3), make_policy("random", SIM, seed=3)
    sa, sb = run_episode(a, pa, seed=5), run_episode(b, pb, seed=5)
    assert {k: sa[k] for k in FINAL_KEYS} == {k: sb[k] for k in FINAL_KEYS}
    assert set(FINAL_KEYS) <= set(sa)


def test_curation_operations_move_counts_like_the_real_pool():
    env = SimulatedDataEngEnv(SIM)
    env.reset(seed=0)
    env.step(act(Op.GENERATE, skill=1, difficulty=2, amount=3))  # 500 hard items of skill 1
    assert env.pool.sum() == 500 and env.pool[1].sum() == 500
    noisy = env.pool[:, :, 1:].sum()
    assert 0.25 * 500 < noisy < 0.65 * 500  # difficulty-3 noise rates sum to 0.64
    env.step(act(Op.VERIFY, amount=3))
    stats = env.pool_stats()
    assert stats["verified_frac"] == 1.0 and 0 < stats["verified_wrong_frac"] < 0.5
    env.step(act(Op.FILTER, param=2))
    assert env.pool[:, :, KINDS.index("format_error")].sum() == 0
    env.step(act(Op.DEDUP))
    assert env.pool[:, :, KINDS.index("near_duplicate")].sum() == 0
    _, reward, _, _, info = env.step(act(Op.TRAIN))
    assert "insufficient" in info["invalid_action"]  # filtering left too few items
    for s in range(4):
        env.step(act(Op.GENERATE, skill=s, difficulty=0, amount=3))
    _, reward, _, _, info = env.step(act(Op.TRAIN))
    assert info["invalid_action"] is None
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert info["result"]["examples"] >= 500
    assert not np.allclose(env.acc, env.base_acc)  # the surrogate student moved


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (act(Op.FILTER, param=-1), "param must be in 0..3"),  # once wiped all but one bin
        (act(Op.GENERATE, amount=7), "amount in 0..3"),  # once an IndexError
        (act(Op.GENERATE, difficulty=5), "difficulty must be in 0..2, got 5"),
        (act(Op.VERIFY, amount=9), "amount in 0..3"),
        (act(Op.MIX, skill=4), "skill index 4 is not used by code"),
    ],
)
def test_out_of_range_actions_are_invalid_in_the_twin_as_in_the_real_env(bad, reason):
    env = SimulatedDataEngEnv(SIM)
    env.reset(seed=0)
    env.step(act(Op.GENERATE, skill=0, difficulty=0, amount=3))
    before = env.pool.copy()
    _, reward, _, _, info = env.step(bad)
    assert reason in info["invalid_action"]
    assert reward == pytest.approx(-SIM.invalid_penalty)
    assert np.array_equal(env.pool, before)


def test_sim_noise_scatters_public_scores_and_private_follows_the_noise_free_prediction():
    clean, noisy = SimulatedDataEngEnv(SIM), SimulatedDataEngEnv(SIM.replace(sim_noise=0.05))
    twin = SimulatedDataEngEnv(SIM.replace(sim_noise=0.05))
    deltas = []
    for seed in range(40):
        finals = []
        for env in (clean, noisy, twin):
            env.reset(seed=seed)
            for s in range(4):  # the teacher draws the same pool with and without the noise
                env.step(act(Op.GENERATE, skill=s, difficulty=seed % 3, amount=2))
            env.step(act(Op.TRAIN))
            finals.append(env.step(act(Op.SUBMIT))[4])
        np.testing.assert_array_equal(noisy.pool, clean.pool)
        np.testing.assert_array_equal(noisy.acc, twin.acc)  # seeded by reset
        deltas.extend(noisy.acc - clean.acc)
        n = finals[1]
        # picked by its noisy public score, the pool's private is the noise-free prediction's
        predicted = clean.model.score(clean.model.private(clean.acc), "private")
        picked = n["final_public"] > n["base_public"]
        assert n["final_private"] == pytest.approx(predicted if picked else n["base_private"])
    assert 0.04 < np.std(deltas) < 0.06 and abs(np.mean(deltas)) < 0.015
    with pytest.raises(ValueError, match="sim_noise"):
        SIM.replace(sim_noise=-0.1)


@pytest.mark.parametrize("domain", ["code", "science", "finance"])
def test_simulated_student_ranks_the_baselines_like_the_real_one(domain):
    # real student (DataEng-v1, docs/results.md): weakest-skill > uniform > random = 0 on each
    env = SimulatedDataEngEnv(SIM)
    gains = {}
    for name in ("weakest-skill", "uniform", "random"):
        policy = make_policy(name, SIM, seed=0)
        gains[name] = np.mean(
            [run_episode(env, policy, seed=s, domain=domain)["gain_abs"] for s in range(10)]
        )
    assert gains["weakest-skill"] > gains["uniform"] > gains["random"] >= 0, gains


def test_real_training_counts_match_the_pool(tmp_path):
    config = dataclasses.replace(FAST, cache_dir=None)
    env = DataEngEnv(config)
    env.reset(seed=0)
    for s in range(4):
        env.step(act(Op.GENERATE, skill=s, difficulty=1, amount=2))
    samples = gated_training_samples(env)
    counts, position = training_counts(samples, env.domain.skill_names)
    assert counts.sum() == len(samples) <= config.max_train_items
    assert counts.shape == (4, 3, len(KINDS)) and np.all((position >= 0) & (position <= 1))


def test_calibration_records_persist_and_resume(tmp_path):
    config = FAST.replace(train_budget=2)
    records = record_pools(config, 3, tmp_path, seed=1)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == len(lines) == 3
    assert all(len(json.loads(x)["per_skill"]) == 4 for x in lines)
    again = record_pools(config, 3, tmp_path, seed=1)  # resumes: nothing new to record
    assert again == records
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 3


def test_calibration_with_few_amounts_records_and_an_unreachable_pool_is_an_error(tmp_path):
    # Two amounts: the top-up GENERATE once asked for amount index 3 and spun on invalid actions.
    few = FAST.replace(train_budget=1, amounts=(20, 50), min_train_items=300, max_train_items=400)
    assert len(record_pools(few, 2, tmp_path / "few", seed=0)) == 2
    out_of_reach = FAST.replace(min_train_items=1300, max_train_items=2000)  # > 1,200 samples
    with pytest.raises(ValueError, match="min_train_items=1300 usable items is out of reach"):
        record_pools(out_of_reach, 1, tmp_path / "never", seed=0)


def test_exploring_policy_pools_are_reproducible(tmp_path):
    config = FAST.replace(train_budget=2)
    a = record_policy_pools(config, ["uniform"], 2, tmp_path / "a", explore=0.5)
    b = record_policy_pools(config, ["uniform"], 2, tmp_path / "b", explore=0.5)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a]
    assert a and strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b]


def test_policy_pools_record_each_train_of_whole_episodes_and_resume(tmp_path):
    config = FAST.replace(train_budget=2)
    records = record_policy_pools(config, ["weakest-skill"], 1, tmp_path, explore=0.2)
    assert [r["train"] for r in records] == list(range(len(records))) and records
    assert {r["source"] for r in records} == {"weakest-skill"}
    for r in records:  # the counts are the items that TRAIN saw
        assert config.min_train_items <= np.sum(r["counts"]) <= config.max_train_items
    random_pools = record_pools(config, 1, tmp_path, seed=1)  # its own source, same file
    assert [r.get("source", "random") for r in random_pools] == ["random"]
    again = record_policy_pools(config, ["weakest-skill"], 1, tmp_path, explore=0.2)
    assert again == records  # resumed: the episode is not run again
    with pytest.raises(ValueError, match="explore"):
        record_policy_pools(config, ["uniform"], 1, tmp_path, explore=1.5)


def test_save_surrogate_replaces_one_domain_and_keeps_the_others_as_stored(tmp_path):
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps({"science": {"domain": "science", "coef": []}}))  # an old entry
    code = load_surrogate(SHIPPED_SURROGATE, "code")
    save_surrogate(path, code)
    save_surrogate(path, code)  # replacing, not duplicating
    stored = json.loads(path.read_text())
    assert sorted(stored) == ["code", "science"]
    assert stored["science"] == {"domain": "science", "coef": []}
    assert load_surrogate(path, "code") == code
    with pytest.raises(SurrogateError, match="dataeng-gym calibrate --domain science"):
        load_surrogate(path, "science")
