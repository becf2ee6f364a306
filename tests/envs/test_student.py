"""Tests of the tiny student: tokenizer, fine-tuning, determinism, base cache, learning, LoRA."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import random
import sys
from pathlib import Path

import pytest
import torch

from dataeng_gym.envs.student import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    FineTuneResult,
    StudentConfig,
    TinyStudent,
    char_tokenizer,
)
from dataeng_gym.errors import MissingExtraError, StudentError

# A student small enough that the whole file runs in seconds on two cores.
SMALL = StudentConfig(
    hidden_size=32,
    num_heads=4,
    intermediate_size=64,
    max_length=16,
    max_new_tokens=5,
    batch_size=32,
    epochs=100,
    max_train_steps=20,
    base_steps=300,
    base_batch_size=32,
    eval_batch_size=128,
)

_WORDS = ["".join(w) for w in itertools.product("abcdefgh", repeat=3)]
random.Random(0).shuffle(_WORDS)
HELD_OUT, TRAIN = _WORDS[:100], _WORDS[100:]


def copy_task(words: list[str]) -> list[tuple[str, str]]:
    return [(f"C {w}=", w) for w in words]


def reverse_task(words: list[str]) -> list[tuple[str, str]]:
    return [(f"R {w}=", w[::-1]) for w in words]


def upper_task(words: list[str]) -> list[tuple[str, str]]:
    return [(f"U {w}=", w.upper()) for w in words]


def accuracy(student: TinyStudent, examples, state=None) -> float:
    answers = student.answer([p for p, _ in examples], state)
    return sum(a == t for a, (_, t) in zip(answers, examples, strict=True)) / len(examples)


def never_called() -> list[tuple[str, str]]:
    raise AssertionError("make_examples must not be called when the base is cached")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("student-cache")


@pytest.fixture(scope="module")
def trained_base(cache_dir: Path) -> Path:
    """Train the shared base (the copy task) once; later students load it from the cache."""
    TinyStudent(SMALL, seed=0, cache_dir=cache_dir).load_base("copy", lambda: copy_task(TRAIN))
    return cache_dir


def student(cache_dir: Path, config: StudentConfig = SMALL, seed: int = 0) -> TinyStudent:
    s = TinyStudent(config, seed=seed, cache_dir=cache_dir)
    s.load_base("copy", never_called)
    return s


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_arbitrary_printable_strings() -> None:
    tokenizer = char_tokenizer()
    rng = random.Random(0)
    printable = [chr(c) for c in range(32, 127)]
    strings = ["", " ", "  a b  ", "[PAD][BOS][EOS][UNK]", "T 12 345=", "".join(printable)]
    strings += ["".join(rng.choices(printable, k=rng.randint(0, 60))) for _ in range(300)]
    for s in strings:
        ids = tokenizer.encode(s).ids
        assert len(ids) == len(s)
        assert all(i > UNK_ID for i in ids)
        assert tokenizer.decode(ids) == s
    assert tokenizer.encode("é\n").ids == [UNK_ID, UNK_ID]
    assert len({PAD_ID, BOS_ID, EOS_ID, UNK_ID}) == 4


# ---------------------------------------------------------------- fine-tuning


def test_fine_tune_lowers_loss_and_changes_every_parameter(trained_base: Path) -> None:
    s = student(trained_base)
    examples = reverse_task(TRAIN[:200])
    result = s.fine_tune(examples, seed=0)

    assert isinstance(result, FineTuneResult)
    assert result.steps == SMALL.max_train_steps == len(result.losses)
    assert result.tokens > 0 and result.seconds > 0
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5
    assert result.state.keys() == s.base_state.keys()
    unchanged = [k for k, v in result.state.items() if torch.equal(v, s.base_state[k])]
    assert unchanged == []
    assert all(v.device.type == "cpu" and not v.requires_grad for v in result.state.values())


def test_fine_tune_steps_follow_epochs_when_under_the_cap(trained_base: Path) -> None:
    s = student(trained_base, dataclasses.replace(SMALL, epochs=3, batch_size=16))
    result = s.fine_tune(reverse_task(TRAIN[:40]), seed=0)  # 3 batches of 16, 16, 8
    assert result.steps == 9 == len(result.losses)


def test_fine_tune_leaves_the_base_untouched(trained_base: Path) -> None:
    s = student(trained_base)
    before = {k: v.clone() for k, v in s.base_state.items()}
    answers = s.answer([p for p, _ in copy_task(HELD_OUT)])
    s.fine_tune(reverse_task(TRAIN[:100]), seed=0)
    assert all(torch.equal(v, s.base_state[k]) for k, v in before.items())
    assert s.answer([p for p, _ in copy_task(HELD_OUT)]) == answers


def test_fine_tune_rejects_empty_and_oversized_examples(trained_base: Path) -> None:
    s = student(trained_base)
    with pytest.raises(StudentError, match="no examples"):
        s.fine_tune([], seed=0)
    with pytest.raises(StudentError, match="max_length"):
        s.fine_tune([("C a=", "x" * SMALL.max_length)], seed=0)


def test_long_prompts_are_truncated_not_rejected(trained_base: Path) -> None:
    s = student(trained_base)
    long_prompt = "C " + "a" * 50 + "=abc"
    result = s.fine_tune([(long_prompt, "abc")] * 4, seed=0)
    assert result.steps > 0
    assert len(s.answer([long_prompt], result.state)) == 1


# ---------------------------------------------------------------- determinism


def test_fine_tune_is_deterministic_per_seed(trained_base: Path) -> None:
    s = student(trained_base)
    examples = reverse_task(TRAIN[:100])
    prompts = [p for p, _ in reverse_task(HELD_OUT)]
    a = s.fine_tune(examples, seed=7)
    b = student(trained_base).fine_tune(examples, seed=7)  # a separate instance, too
    c = s.fine_tune(examples, seed=8)

    assert a.losses == b.losses
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert s.answer(prompts, a.state) == s.answer(prompts, b.state)
    assert any(not torch.equal(a.state[k], c.state[k]) for k in a.state)


def test_answer_keeps_prompt_order_and_batches_consistently(trained_base: Path) -> None:
    s = student(trained_base)
    prompts = [p for p, _ in copy_task(HELD_OUT)]
    together = s.answer(prompts)
    one_by_one = [s.answer([p])[0] for p in prompts[:10]]
    assert one_by_one == together[:10]
    assert s.answer(prompts[::-1]) == together[::-1]
    assert s.answer([]) == []
    with pytest.raises(StudentError, match="architecture"):
        s.answer(prompts, {"lm_head.weight": torch.zeros(3)})


# ---------------------------------------------------------------- base cache


def test_base_is_cached_and_loads_without_make_examples(trained_base: Path) -> None:
    first = TinyStudent(SMALL, seed=0, cache_dir=trained_base)
    first.load_base("copy", never_called)
    second = student(trained_base)
    assert first.cache_path("copy").is_file()
    assert all(torch.equal(v, second.base_state[k]) for k, v in first.base_state.items())


def test_cache_path_changes_with_what_shapes_the_base(tmp_path: Path) -> None:
    path = TinyStudent(SMALL, seed=0, cache_dir=tmp_path).cache_path("copy")
    assert TinyStudent(SMALL, seed=1, cache_dir=tmp_path).cache_path("copy") != path
    assert TinyStudent(SMALL, seed=0, cache_dir=tmp_path).cache_path("other") != path
    for change in ({"hidden_size": 64}, {"base_steps": 10}, {"max_length": 20}):
        other = TinyStudent(dataclasses.replace(SMALL, **change), seed=0, cache_dir=tmp_path)
        assert other.cache_path("copy") != path, change
    # Fine-tuning settings do not touch the base, so they share its checkpoint.
    same = TinyStudent(dataclasses.replace(SMALL, lr=1e-4, lora_r=4), seed=0, cache_dir=tmp_path)
    assert same.cache_path("copy") == path


def test_cache_dir_defaults_to_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAENG_GYM_CACHE", str(tmp_path))
    assert TinyStudent(SMALL).cache_path("copy").is_relative_to(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong_shapes", "not_a_dict"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    config = dataclasses.replace(SMALL, base_steps=3)
    calls = []

    def make_examples() -> list[tuple[str, str]]:
        calls.append(1)
        return copy_task(TRAIN[:50])

    s = TinyStudent(config, seed=0, cache_dir=tmp_path)
    s.load_base("copy", make_examples)
    good = s.base_state
    path = s.cache_path("copy")
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot a checkpoint" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong_shapes":
        torch.save({k: torch.zeros(2) for k in good}, path)
    else:
        torch.save([1, 2, 3], path)

    rebuilt = TinyStudent(config, seed=0, cache_dir=tmp_path)
    rebuilt.load_base("copy", make_examples)
    assert len(calls) == 2
    assert all(torch.equal(v, rebuilt.base_state[k]) for k, v in good.items())
    TinyStudent(config, seed=0, cache_dir=tmp_path).load_base("copy", never_called)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind


def test_base_needs_loading_and_examples(tmp_path: Path) -> None:
    s = TinyStudent(SMALL, seed=0, cache_dir=tmp_path)
    with pytest.raises(StudentError, match="load_base"):
        s.answer(["C ab="])
    with pytest.raises(StudentError, match="no examples"):
        s.load_base("empty", list)


# ---------------------------------------------------------------- learning


def test_student_learns_held_out_prompts(trained_base: Path) -> None:
    s = student(trained_base, dataclasses.replace(SMALL, max_train_steps=100))
    # The base learned to copy from scratch in 300 steps and generalises to unseen words.
    assert accuracy(s, copy_task(HELD_OUT)) >= 0.8
    # Upper-casing is new to it; 100 fine-tuning steps teach it, again for unseen words.
    assert accuracy(s, upper_task(HELD_OUT)) < 0.1
    result = s.fine_tune(upper_task(TRAIN), seed=0)
    assert accuracy(s, upper_task(HELD_OUT), result.state) >= 0.7


# ---------------------------------------------------------------- LoRA


def test_lora_trains_only_the_adapters(trained_base: Path) -> None:
    pytest.importorskip("peft")
    s = student(trained_base, dataclasses.replace(SMALL, lora_r=4, lr=1e-2))
    examples = reverse_task(TRAIN[:200])
    result = s.fine_tune(examples, seed=0)

    assert result.state.keys() == s.base_state.keys()  # merged back into a plain model
    changed = {k for k, v in result.state.items() if not torch.equal(v, s.base_state[k])}
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert changed == {k for k in result.state if k.split(".")[-2] in linear}
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5
    answers = s.answer([p for p, _ in reverse_task(HELD_OUT)], result.state)
    assert len(answers) == len(HELD_OUT) and all(isinstance(a, str) for a in answers)
    again = s.fine_tune(examples, seed=0)
    assert all(torch.equal(v, again.state[k]) for k, v in result.state.items())


def test_lora_without_peft_names_the_extra(
    trained_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail
    s = student(trained_base, dataclasses.replace(SMALL, lora_r=4))
    with pytest.raises(MissingExtraError, match=r"dataeng-gym\[lora\]"):
        s.fine_tune(reverse_task(TRAIN[:10]), seed=0)


# ---------------------------------------------------------------- torch.compile

# torch's own compile machinery calls the deprecated torch.jit.script_method; not ours to fix.
_TORCH_JIT_WARNING = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(_TORCH_JIT_WARNING)
def test_compiled_fine_tune_matches_eager_is_deterministic_and_pickles(
    trained_base: Path,
) -> None:
    from torch._dynamo.utils import counters

    examples = reverse_task(TRAIN[:200])
    prompts = [p for p, _ in reverse_task(HELD_OUT)]
    s = student(trained_base, dataclasses.replace(SMALL, compile=True))
    graphs = counters["stats"]["unique_graphs"]
    a = s.fine_tune(examples, seed=7)
    assert counters["stats"]["unique_graphs"] > graphs  # the decoder really ran compiled
    b = s.fine_tune(examples, seed=7)
    eager = student(trained_base).fine_tune(examples, seed=7)

    assert a.losses == b.losses
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert a.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-5)
    assert all(torch.allclose(a.state[k], eager.state[k], atol=1e-4) for k in a.state)
    assert s.answer(prompts, a.state) == s.answer(prompts, eager.state)
    assert a.state.keys() == s.base_state.keys()  # compiling renames no weight

    copy = pickle.loads(pickle.dumps(s))  # the compiled decoder is rebuilt, not pickled
    c = copy.fine_tune(examples, seed=7)
    assert c.losses == a.losses


@pytest.mark.filterwarnings(_TORCH_JIT_WARNING)
def test_compile_failure_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.config as inductor

    # A width no other test compiles, and an empty kernel cache: the compiler must be called.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    monkeypatch.setattr(inductor.cpp, "cxx", ("no-such-c++-compiler",))
    config = dataclasses.replace(SMALL, compile=True, hidden_size=40, base_steps=2)
    s = TinyStudent(config, cache_dir=tmp_path)
    s.load_base("copy", lambda: copy_task(TRAIN[:50]))
    with pytest.raises(StudentError, match=r"C\+\+ compiler .* or set StudentConfig.compile=False"):
        s.fine_tune(reverse_task(TRAIN[:10]), seed=0)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bad",
    [
        {"num_heads": 5},
        {"hidden_size": 36, "num_heads": 12},  # odd head size: RoPE needs pairs
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"base_lr": 0.0},
        {"hidden_size": 0},
        {"batch_size": 0},
        {"epochs": 0},
        {"max_length": 2},
        {"max_new_tokens": 0},
        {"warmup_ratio": 1.0},
        {"weight_decay": -0.1},
        {"lora_r": -1},
        {"dropout": 1.0},
        {"base_steps": -1},
        {"num_layers": 2.5},
        {"batch_size": True},
        {"compile": 1},
        {"compile": True, "lora_r": 4},  # LoRA rebuilds its model per TRAIN: no compiling
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="StudentConfig"):
        StudentConfig(**bad)


def test_default_config_is_valid_and_counts_parameters(tmp_path: Path) -> None:
    c = StudentConfig()
    vocab, h, i = 99, c.hidden_size, c.intermediate_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # attention, SwiGLU MLP, two RMSNorms
    expected = 2 * vocab * h + c.num_layers * per_layer + h  # untied embeddings, final norm
    assert TinyStudent(cache_dir=tmp_path).num_parameters() == expected == 144_064
