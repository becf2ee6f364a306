import numpy as np
import pytest

from dataeng_gym.envs.domains import DIFFICULTIES, DOMAINS, make_domain
from dataeng_gym.envs.teacher import CLEAN, GenerationRequest, ProceduralTeacher


@pytest.fixture(params=list(DOMAINS))
def domain(request):
    return make_domain(request.param)


def test_make_domain_unknown_lists_valid():
    with pytest.raises(ValueError, match="science, code, finance"):
        make_domain("nope")


def test_splits_shape(domain):
    assert len(domain.skills) >= 4
    assert len(domain.private) >= 1000
    assert len(domain.private) == 3 * len(domain.public)
    for split in (domain.public, domain.private):
        cells = {(i.skill, i.difficulty) for i in split}
        assert cells == {(s, d) for s in domain.skill_names for d in DIFFICULTIES}


def test_splits_are_pure_function_of_seed(domain):
    again = DOMAINS[domain.name](domain.seed)
    assert again.public == domain.public and again.private == domain.private
    other = DOMAINS[domain.name](domain.seed + 1)
    assert other.public != domain.public


def test_splits_disjoint_from_each_other_and_from_teacher(domain):
    pub = {domain.key(i.question) for i in domain.public}
    priv = {domain.key(i.question) for i in domain.private}
    assert not pub & priv
    teacher = ProceduralTeacher(CLEAN, seed=3)
    for j, skill in enumerate(domain.skill_names):
        for d in DIFFICULTIES:
            for s in teacher.generate(domain, GenerationRequest(j * 3 + d, skill, d, 300)):
                assert domain.key(s.question) not in pub | priv


def test_reference_answers_are_correct_and_well_formed(domain):
    for item in domain.public + domain.private:
        assert domain.solve(item.question) == item.answer
        assert domain.well_formed(item.skill, item.answer)
        assert domain.parse(item.question).skill == item.skill
        assert domain.score(item, item.answer) == 1.0


def test_student_format_round_trips(domain):
    for item in domain.public:
        prompt, target = domain.to_student(item.question, item.answer)
        assert domain.score(item, domain.from_student(item.skill, target)) == 1.0
        assert len(prompt) + len(target) < 40


@pytest.mark.parametrize(
    "given",
    ["1200", "1,200", "1200.0", "$1200", "\\boxed{1200}", "The answer is 1200.", " 1200 dollars "],
)
def test_numeric_scorer_accepts_equivalent_formats(given):
    d = make_domain("finance")
    item = next(i for i in d.public if i.skill == "cents")
    item = type(item)(item.question, "1200", item.skill, item.difficulty)
    assert d.score(item, given) == 1.0
    assert d.score(item, "1201") == 0.0
    assert d.score(item, "no idea") == 0.0


def test_code_scorer_formats():
    d = make_domain("code")
    item = next(i for i in d.public if i.skill == "upper")
    assert d.score(item, item.answer) == 1.0
    assert d.score(item, "  " + item.answer + "\n") == 1.0
    assert d.score(item, item.answer[:-1]) == 0.0
    assert d.score(item, item.answer.lower()) == 0.0
    rev = next(i for i in d.public if i.skill == "reverse")
    assert d.score(rev, rev.answer[::-1]) == float(rev.answer == rev.answer[::-1])


def test_format_errors_render_as_junk_targets():
    d = make_domain("science")
    item = d.public[0]
    prompt, target = d.to_student(item.question, f"The answer is {item.answer}.")
    assert target != item.answer and d.to_student(item.question, item.answer)[1] == item.answer


def test_seed_questions_and_description(domain):
    assert domain.description and domain.seed_questions
    assert all(domain.parse(q) is not None for q in domain.seed_questions)
    for skill in domain.skill_names:
        assert skill in domain.description


def test_sample_is_pure_function_of_rng(domain):
    a = domain.sample(domain.skill_names[0], 2, np.random.default_rng(5))
    b = domain.sample(domain.skill_names[0], 2, np.random.default_rng(5))
    assert a == b
