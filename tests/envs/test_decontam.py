import pytest

from dataeng_gym.envs.decontam import NgramIndex, words
from dataeng_gym.envs.domains import DOMAINS, make_domain
from dataeng_gym.envs.teacher import _PREFIXES


@pytest.mark.parametrize("n", [8, 13])
@pytest.mark.parametrize("name", DOMAINS)
def test_copies_with_a_teacher_prefix_are_caught_in_every_skill(name, n):
    # Science and finance have questions shorter than 8 words; a prefixed copy of one has no
    # n-gram in common with it, so the index must also look for the short text as a window.
    domain = make_domain(name)
    index = NgramIndex(domain.eval_texts, n)
    for skill in domain.skill_names:
        items = [i for i in domain.public if i.skill == skill][:10]
        items += [i for i in domain.private if i.skill == skill][:10]
        for item in items:
            assert index.contaminated(item.question)
            for prefix in _PREFIXES:
                assert index.contaminated(prefix + item.question), (prefix, item.question)
            assert index.contaminated(item.question + " Show your work.")


def test_built_in_domains_have_short_questions():
    # Keeps the test above honest: without short questions it would not exercise the fix.
    shortest = {name: min(len(words(t)) for t in make_domain(name).eval_texts) for name in DOMAINS}
    assert min(shortest.values()) < 8, shortest


def test_a_short_eval_text_is_found_inside_a_longer_text_but_not_its_part():
    evals = [
        "convert 5 km to m",
        *(f"what is {i} plus {i + 1} times {i + 2} today ?" for i in range(99)),
    ]
    index = NgramIndex(evals, 8)
    assert index.contaminated("Exercise: please convert 5 km to m, quickly")
    assert not index.contaminated("convert 5 km")
    assert not index.contaminated("convert 6 km to m and then some more words here")


def test_an_eval_text_listed_twice_in_a_small_set_is_still_caught():
    # Under 1/max_df texts, an n-gram in two texts is boilerplate; a repeated text must not be.
    evals = ["the quick brown fox jumps over the lazy dog again"] * 2 + ["a b c d e f g h i j"]
    index = NgramIndex(evals, 8)
    assert index.contaminated("the quick brown fox jumps over the lazy dog again")
    assert index.contaminated("a b c d e f g h i j")
