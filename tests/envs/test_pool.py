from collections import Counter

import numpy as np
import pytest

from dataeng_gym.envs.decontam import NgramIndex
from dataeng_gym.envs.domains import make_domain
from dataeng_gym.envs.pool import DataPool, order_items
from dataeng_gym.envs.teacher import GenerationRequest, ProceduralTeacher, Sample


@pytest.fixture
def domain():
    return make_domain("science")


def _pool(domain, n=400, seed=0):
    pool = DataPool(domain)
    teacher = ProceduralTeacher(seed=seed)
    for i, skill in enumerate(domain.skill_names):
        pool.add(teacher.generate(domain, GenerationRequest(i, skill, 1 + i % 3, n)))
    return pool


def test_verify_then_filter_removes_wrong_and_malformed(domain):
    pool = _pool(domain)
    pool.verify(len(pool), np.random.default_rng(0), error_rate=0.0)
    pool.filter(threshold=0.0)
    kinds = Counter(s.noise for s in pool.items)
    assert kinds["wrong_answer"] == kinds["format_error"] == kinds["off_skill"] == 0
    assert kinds["clean"] > 0


def test_verify_error_rate_flips_verdicts(domain):
    pool = _pool(domain)
    pool.verify(len(pool), np.random.default_rng(0), error_rate=0.2)
    clean = [s for s in pool.items if s.noise == "clean"]
    wrongly_failed = sum(not s.verified for s in clean) / len(clean)
    assert 0.15 < wrongly_failed < 0.25


def test_quality_threshold_prefers_clean_items(domain):
    pool = _pool(domain)
    before = Counter(s.noise for s in pool.items)
    pool.filter(threshold=0.7)
    after = Counter(s.noise for s in pool.items)
    assert after["clean"] / before["clean"] > 2 * (after["wrong_answer"] / before["wrong_answer"])


def test_dedup_exact_and_near(domain):
    pool = _pool(domain)
    dups = pool.duplicates()
    assert dups > 0
    result = pool.dedup()
    assert result["removed_near"] > 0
    assert pool.duplicates() == 0
    assert result["removed"] >= dups


def test_decontaminate_catches_copies_and_prefixed_copies(domain):
    index = NgramIndex(domain.eval_texts)
    for item in domain.public[:50] + domain.private[:50]:
        assert index.contaminated(item.question)
        assert index.contaminated("Question: " + item.question)
    teacher = ProceduralTeacher(seed=4)
    clean = [
        s
        for i, skill in enumerate(domain.skill_names)
        for s in teacher.generate(domain, GenerationRequest(i, skill, 2, 200))
        if s.noise == "clean"
    ]
    false_positive = sum(index.contaminated(s.question) for s in clean) / len(clean)
    assert false_positive < 0.05


def test_mix_weights_scale_skills(domain):
    pool = _pool(domain, n=100)
    pool.mix("units_up", 0.0)
    pool.mix("units_down", 2.0)
    pool.mix("elements", 0.5)
    items = pool.training_items(np.random.default_rng(0), limit=10_000)
    c = Counter(s.skill for s in items)
    assert c["units_up"] == 0 and c["units_down"] == 200 and c["elements"] == 50
    assert c["scientific"] == 100


def test_orders(domain):
    items = _pool(domain, n=60).items
    rng = np.random.default_rng(0)
    easy = order_items(items, "easy_to_hard", rng)
    assert [s.difficulty for s in easy] == sorted(s.difficulty for s in items)
    hard = order_items(items, "hard_to_easy", rng)
    assert [s.difficulty for s in hard] == sorted((s.difficulty for s in items), reverse=True)
    inter = order_items(items, "interleave", rng)
    assert len({s.skill for s in inter[:4]}) == 4
    assert sorted(map(id, order_items(items, "random", rng))) == sorted(map(id, items))
    with pytest.raises(ValueError, match="unknown order"):
        order_items(items, "sideways", rng)


def test_training_items_limit_and_samples_only(domain):
    pool = _pool(domain, n=100)
    assert len(pool.training_items(np.random.default_rng(0), limit=50)) == 50
    assert all(isinstance(s, Sample) for s in pool.items)
