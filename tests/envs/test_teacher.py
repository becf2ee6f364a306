from collections import Counter

import pytest

from dataeng_gym.envs.domains import DIFFICULTIES, make_domain
from dataeng_gym.envs.teacher import NOISE_KINDS, GenerationRequest, NoiseConfig, ProceduralTeacher


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_noise_rates_match_configuration(difficulty):
    domain = make_domain("finance")
    noise = NoiseConfig()
    teacher = ProceduralTeacher(noise, seed=11)
    n = 6000
    samples = teacher.generate(domain, GenerationRequest(0, "cents", difficulty, n))
    counts = Counter(s.noise for s in samples)
    for kind, rate in noise.rates(difficulty).items():
        # binomial standard error; 4 sigma keeps the test stable across seeds
        sigma = (rate * (1 - rate) / n) ** 0.5
        assert abs(counts[kind] / n - rate) < 4 * sigma + 1e-9, (kind, counts[kind] / n, rate)


def test_rates_rise_with_difficulty():
    noise = NoiseConfig()
    for kind in NOISE_KINDS:
        assert noise.rates(1)[kind] < noise.rates(2)[kind] < noise.rates(3)[kind]


def test_noise_kinds_behave_as_documented():
    domain = make_domain("science")
    teacher = ProceduralTeacher(seed=2)
    samples = teacher.generate(domain, GenerationRequest(4, "elements", 3, 3000))
    public = {i.question for i in domain.public}
    for s in samples:
        truth = domain.solve(s.question)
        parsed = domain.parse(s.question)
        if s.noise == "clean":
            assert truth == s.answer and parsed.skill == "elements"
        elif s.noise == "wrong_answer":
            assert truth != s.answer and domain.well_formed("elements", s.answer)
        elif s.noise == "format_error":
            assert not domain.well_formed("elements", s.answer)
            assert truth in s.answer  # the value is right, the format is not
        elif s.noise == "off_skill":
            assert parsed.skill != "elements"
        elif s.noise == "contamination":
            assert s.question in public
    clean_q = [s.quality for s in samples if s.noise == "clean"]
    noisy_q = [s.quality for s in samples if s.noise != "clean"]
    assert sum(clean_q) / len(clean_q) > sum(noisy_q) / len(noisy_q) + 0.2


def test_deterministic_per_seed_and_request_index():
    domain = make_domain("code")
    a = ProceduralTeacher(seed=1).generate(domain, GenerationRequest(7, "slice", 2, 50))
    b = ProceduralTeacher(seed=1).generate(domain, GenerationRequest(7, "slice", 2, 50))
    c = ProceduralTeacher(seed=1).generate(domain, GenerationRequest(8, "slice", 2, 50))
    assert a == b and a != c
    assert all(s.request_id == 7 and s.teacher == "procedural" for s in a)


def test_noise_config_validation():
    with pytest.raises(ValueError, match=">= 0"):
        NoiseConfig(wrong_answer=-0.1)
    with pytest.raises(ValueError, match="sum to more than 1"):
        NoiseConfig(wrong_answer=0.5, format_error=0.3)
