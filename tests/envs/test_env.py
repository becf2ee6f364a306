import dataclasses
import json
import pickle
import warnings

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dataeng_gym  # noqa: F401  (registers the envs)
from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.data_env import DataEngEnv, Op
from dataeng_gym.envs.data_env import structured_action as act
from dataeng_gym.envs.teacher import CLEAN, ProceduralTeacher, Sample
from dataeng_gym.episode import FINAL_KEYS
from dataeng_gym.policies import make_policy

ENV_IDS = sorted(i for i in gym.registry if i.startswith("dataeng_gym/"))
FAST_ID = "dataeng_gym/DataEngFast-v1"


def make(env_id=FAST_ID, **kwargs):
    # the full-size ids are checked on the fast configuration: same code, spaces and dynamics,
    # a micro student, so that check_env runs in seconds
    if env_id != FAST_ID:
        kwargs.setdefault("config", FAST)
    return gym.make(env_id, **kwargs)


def test_registry_has_the_three_envs():
    assert {"dataeng_gym/DataEng-v1", "dataeng_gym/DataEngText-v1", FAST_ID} <= set(ENV_IDS)
    assert gym.spec(FAST_ID).max_episode_steps == FAST.max_steps
    assert gym.spec("dataeng_gym/DataEng-v1").nondeterministic


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_warnings_as_errors(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (np.isnan(a) and np.isnan(b))
    return a == b


def _deterministic_info(info):
    return {k: v for k, v in info.items() if k not in ("student_seconds",)}


def _scripted(n_skills=4):
    """A fixed action sequence that exercises every op, including two valid TRAINs."""
    seq = [act(Op.GENERATE, s, s % 3, 2) for s in range(n_skills)]
    seq += [act(Op.VERIFY, amount=3), act(Op.FILTER, param=1), act(Op.DEDUP), act(Op.DECONTAMINATE)]
    seq += [act(Op.MIX, 1, param=3), act(Op.ORDER, param=1), act(Op.TRAIN)]
    seq += [act(Op.GENERATE, 2, 2, 3), act(Op.TRAIN), act(Op.SUBMIT)]
    return seq


def test_fast_twin_same_seed_step_by_step_equal():
    a, b = make(), make()
    oa, ia = a.reset(seed=7)
    ob, ib = b.reset(seed=7)
    assert _same(oa, ob) and _same(ia, ib)
    for action in _scripted():
        ra, rb = a.step(action), b.step(action)
        assert _same(ra[:4], rb[:4])
        assert _same(_deterministic_info(ra[4]), _deterministic_info(rb[4]))
        if ra[2]:
            break
    assert ra[2] and ra[4]["train_runs"] == 2


def test_observations_stay_in_space_through_random_and_malformed_actions():
    env = make()
    rng = np.random.default_rng(0)
    env.action_space.seed(0)
    malformed = [
        {},
        None,
        {"op": 99, "skill": 0, "difficulty": 0, "amount": 0, "param": 0},
        {"op": "train"},
        act(Op.GENERATE, skill=5),
        act(Op.GENERATE, amount=9),
        act(Op.FILTER, param=7),
        act(Op.GENERATE, difficulty=-1),
        "not a dict",
    ]
    obs, _ = env.reset(seed=0)
    invalid = 0
    for i in range(1000):
        action = malformed[i % len(malformed)] if rng.random() < 0.3 else env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs), obs
        assert sum(info["reward_terms"].values()) == pytest.approx(reward)
        invalid += info["invalid_action"] is not None
        if any(action is m for m in malformed):
            assert info["invalid_action"]
        if terminated or truncated:
            obs, _ = env.reset(seed=i)
            assert env.observation_space.contains(obs)
    assert invalid > 300


def test_invalid_action_changes_nothing_and_costs_penalty():
    env = make()
    env.reset(seed=1)
    before = env.unwrapped._observation()
    _, reward, _, _, info = env.step(act(Op.TRAIN))
    assert "insufficient valid samples" in info["invalid_action"]
    assert reward == -FAST.invalid_penalty
    after = env.unwrapped._observation()
    for key in before:
        if key != "budgets":  # the step counter moved
            assert np.array_equal(before[key], after[key]), key
    _, _, _, _, info = env.step(act(Op.GENERATE, amount=3))
    big = FAST.teacher_budget // 200 + 1
    for _ in range(big):
        _, _, _, _, info = env.step(act(Op.GENERATE, amount=3))
    assert "teacher samples" in info["invalid_action"]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_round_trip_reproduces_reset_and_next_step(dumps):
    env = make()
    clone = pickle.loads(dumps(env))
    o1, _ = env.reset(seed=5)
    o2, _ = clone.reset(seed=5)
    assert _same(o1, o2)
    action = act(Op.GENERATE, 1, 1, 2)
    assert _same(env.step(action)[:4], clone.step(action)[:4])
    # mid-episode too
    env.step(act(Op.GENERATE, 0, 0, 3))
    mid = pickle.loads(dumps(env))
    for action in [act(Op.DEDUP), act(Op.TRAIN)]:
        assert _same(env.step(action)[:4], mid.step(action)[:4])


class PlantingTeacher(ProceduralTeacher):
    """Replaces every 5th sample by a copy of a public or a private item, after ``prefix``."""

    name = "planting"

    def __init__(self, *args, prefix="", **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def generate(self, domain, request):
        out = super().generate(domain, request)
        evals = domain.public + domain.private
        for i in range(0, len(out), 5):
            item = evals[(request.request_id * 97 + i * 31) % len(evals)]
            out[i] = Sample(
                self.prefix + item.question,
                item.answer,
                item.skill,
                item.difficulty,
                request.request_id,
                self.name,
                0.9,
            )
        self.planted = getattr(self, "planted", 0) + len(range(0, len(out), 5))
        return out


# Science has questions shorter than the 8-word n-gram: a prefixed copy shares no 8-gram with
# its original, yet renders to the same student prompt.
@pytest.mark.parametrize("domain,prefix", [("code", ""), ("science", "Q: ")])
def test_planted_eval_items_never_reach_training_and_are_counted(domain, prefix):
    teacher = PlantingTeacher(CLEAN, seed=0, prefix=prefix)
    env = DataEngEnv(FAST.replace(domain=domain), teacher=teacher)
    env.reset(seed=0)
    seen = []
    real_fine_tune = env.student.fine_tune

    def spy(examples, *, seed):
        seen.extend(examples)
        return real_fine_tune(examples, seed=seed)

    env.student.fine_tune = spy
    env.step(act(Op.GENERATE, 0, 0, 2))
    env.step(act(Op.GENERATE, 1, 1, 2))  # 200 items, not over max_train_items: all go to the gate
    _, reward, _, _, info = env.step(act(Op.TRAIN))
    assert info["invalid_action"] is None
    assert info["result"]["gate"]["contaminated"] == teacher.planted == 40
    assert info["reward_terms"]["contamination"] == pytest.approx(-40 * FAST.contamination_penalty)
    eval_prompts = set(env.domain.student_eval(env.domain.public + env.domain.private))
    assert seen and not {p for p, _ in seen} & eval_prompts
    _, _, terminated, _, info = env.step(act(Op.SUBMIT))
    assert terminated and info["contaminated_removed"] == 40


class LongAnswerTeacher(ProceduralTeacher):
    """Gives every 10th sample a well-formed answer longer than the student can hold."""

    def generate(self, domain, request):
        out = super().generate(domain, request)
        for i in range(0, len(out), 10):
            out[i] = dataclasses.replace(out[i], answer="z" * 70)
        return out


def test_answers_too_long_for_the_student_are_dropped_at_the_gate_not_a_crash():
    env = DataEngEnv(FAST, teacher=LongAnswerTeacher(CLEAN, seed=0))
    env.reset(seed=0)
    env.step(act(Op.GENERATE, 0, 0, 2))  # 100 items, 10 of them with a 70-character answer
    _, _, _, _, info = env.step(act(Op.TRAIN))
    assert info["invalid_action"] is None
    assert info["result"]["gate"]["unrenderable"] == 10


def test_the_base_evaluation_is_shared_only_between_the_same_student_settings():
    # The answers depend on the decoding settings, not only on the cached checkpoint.
    short = FAST.replace(student=dataclasses.replace(FAST.student, max_new_tokens=2))
    envs = [DataEngEnv(c) for c in (FAST, FAST, short)]
    for env in envs:
        env.reset(seed=0)
    assert envs[0].base_eval is envs[1].base_eval
    assert envs[2].base_eval is not envs[0].base_eval


def test_items_not_from_the_teacher_are_dropped_at_the_gate():
    env = make().unwrapped
    env.reset(seed=0)
    env.step(act(Op.GENERATE, 0, 0, 3))
    forged = Sample("Q: forged", "1", "reverse", 1, 0, "procedural", 1.0)
    env.pool.items.extend([forged] * 10)
    _, _, _, _, info = env.step(act(Op.TRAIN))
    assert info["result"]["gate"]["not_from_teacher"] == 10


def test_final_info_fields_and_reward_sum():
    env = make()
    env.reset(seed=3)
    gains = 0.0
    for action in _scripted():
        _, reward, terminated, _, info = env.step(action)
        gains += info["reward_terms"]["gain"]
        if terminated:
            break
    required = {  # the list of final fields, kept apart from the code's FINAL_KEYS
        "base_public",
        "final_public",
        "base_private",
        "final_private",
        "gain_abs",
        "gain_rel",
        "public_private_gap",
        "teacher_samples",
        "train_runs",
        "student_seconds",
        "invalid_actions",
        "contaminated_removed",
    }
    assert required <= info.keys() and required == set(FINAL_KEYS)
    assert gains == pytest.approx(info["final_public"] - info["base_public"])
    assert info["gain_abs"] == pytest.approx(info["final_private"] - info["base_private"])
    assert info["public_private_gap"] == pytest.approx(info["final_public"] - info["final_private"])
    assert info["teacher_samples"] == 4 * 100 + 200 + 200  # generate, verify, generate
    with pytest.raises(gym.error.ResetNeeded):
        env.unwrapped.step(act(Op.DEDUP))


def test_reset_switches_domain():
    env = make()
    _, info = env.reset(seed=0, options={"domain": "finance"})
    assert info["domain"] == "finance"
    _, info = env.reset(seed=0, options={"domain": "science"})
    assert info["domain"] == "science"


def test_private_text_never_in_text_observations():
    env = make("dataeng_gym/DataEngText-v1")
    obs, info = env.reset(seed=0)
    domain = env.unwrapped.domain
    skills = domain.skill_names
    texts = [obs, json.dumps(info, default=str)]
    actions = [
        {"op": "generate", "skill": s, "difficulty": 1 + i % 3, "amount": 60}
        for i, s in enumerate(skills)
    ]
    actions += [
        {"op": "verify", "amount": 300},
        {"op": "filter", "threshold": 0.3},
        {"op": "decontaminate"},
        {"op": "train"},
        "{not json",
        {"op": "train"},
        {"op": "submit"},
    ]
    for a in actions:
        obs, _, terminated, _, info = env.step(a if isinstance(a, str) else json.dumps(a))
        texts.append(obs)
        texts.append(json.dumps(info, default=str))
        if terminated:
            break
    blob = "\n".join(texts)
    assert "Bad cases" in blob  # public failures are shown ...
    assert any(i.question.replace("\n", " | ") in blob for i in domain.public)
    leaked = [
        i.question
        for i in domain.private
        if i.question.replace("\n", " | ") in blob or i.question in blob
    ]
    assert not leaked  # ... private items never


def test_baseline_policies_finish_an_episode():
    for name in ("random", "uniform", "weakest-skill"):
        env = make()
        policy = make_policy(name, FAST, seed=0)
        obs, info = env.reset(seed=0)
        policy.reset(0)
        for _ in range(FAST.max_steps):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            if terminated or truncated:
                break
        assert terminated and "final_private" in info, name
