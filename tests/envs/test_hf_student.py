"""Tests of the hf student on CPU: tiny local models built from a config, a tokenizer from code."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import DataEngEnv, Op, evaluate
from dataeng_gym.envs.domains import make_domain
from dataeng_gym.envs.hf_student import (
    HFStudent,
    HFStudentConfig,
    PackedBatch,
    chat_tokenizer,
    encode_chat,
    loss_sum,
    make_batches,
    save_random_model,
)
from dataeng_gym.envs.student import FineTuneResult
from dataeng_gym.episode import FINAL_KEYS
from dataeng_gym.errors import ConfigError, StudentError

ARCHS = {
    "llama": LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "qwen2": Qwen2Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
}

WORDS = ["abc", "hello", "xyz", "qwer", "k", "zzzz", "mnop", "data", "gym", "lora", "pack", "ab"]
REVERSE = [(f"R {w}=", w[::-1]) for w in WORDS]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_models")
    return {name: str(save_random_model(root / name, cfg)) for name, cfg in ARCHS.items()}


def make_student(model_dir: str, **changes) -> HFStudent:
    base = dict(model=model_dir, batch_size=4, cutoff_len=64, micro_batch_tokens=64, lr=1e-2)
    base.update(changes)
    return HFStudent(HFStudentConfig(**base))


# ---------------------------------------------------------------- config


def test_defaults_are_the_papers_recipe():
    cfg = HFStudentConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules) == (
        8,
        16,
        0.0,
        "all-linear",
    )
    assert (cfg.lr, cfg.warmup_ratio, cfg.epochs, cfg.cutoff_len, cfg.batch_size) == (
        1e-4,
        0.1,
        3,
        2048,
        16,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"lora_r": 0},
        {"batch_size": 1.5},
        {"micro_batch_tokens": 100, "cutoff_len": 200},
        {"lr": 0.0},
        {"warmup_ratio": 1.0},
        {"engine": "tgi"},
        {"dtype": "int8"},
        {"loss": "fast"},
        {"max_train_steps": -1},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ConfigError):
        HFStudentConfig(**changes)


def test_student_needs_a_model_and_envconfig_says_so(tmp_path):
    with pytest.raises(ConfigError, match="model is empty"):
        HFStudent(HFStudentConfig())
    with pytest.raises(ValueError, match="hf_student=HFStudentConfig"):
        EnvConfig(student_kind="hf")
    with pytest.raises(ValueError, match="student_kind"):
        EnvConfig(student_kind="huge")
    with pytest.raises(StudentError, match="cannot load"):
        HFStudent(HFStudentConfig(model=str(tmp_path / "missing")))


# ---------------------------------------------------------------- data


def test_only_the_response_carries_loss():
    tok = chat_tokenizer()
    encoded = encode_chat(tok, [("R abc=", "cba"), ("U hi=", "HI")], cutoff_len=64)
    (batch,) = make_batches(encoded, 64, packing=True, pad_id=tok.pad_token_id)
    labelled = batch.labels[0][batch.labels[0] != -100].tolist()
    assert tok.decode(labelled) == "cba<|end|>HI<|end|>"
    # the inputs are the full chat renderings, minus each example's last token
    assert tok.decode(batch.input_ids[0].tolist()) == (
        "<|begin|><|user|>R abc=<|end|><|assistant|>cba<|begin|><|user|>U hi=<|end|><|assistant|>HI"
    )
    assert batch.position_ids[0].tolist() == [*range(13), *range(11)]


def test_cutoff_and_template_errors():
    tok = chat_tokenizer()
    ids, n = encode_chat(tok, [("R abcdef=", "fedcba")], cutoff_len=20)[0]
    assert len(ids) == 20 and n < 20  # the answer lost its end
    with pytest.raises(StudentError, match="cutoff_len"):
        encode_chat(tok, [("R " + "a" * 40 + "=", "a")], cutoff_len=20)
    tok.chat_template = "{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(StudentError, match="prefix"):
        encode_chat(tok, [("R abc=", "cba")], cutoff_len=64)
    tok.chat_template = None
    with pytest.raises(StudentError, match="chat template"):
        encode_chat(tok, [("R abc=", "cba")], cutoff_len=64)


@pytest.mark.parametrize("row_tokens", [None, 32])
def test_micro_batches_respect_the_token_budget(row_tokens):
    tok = chat_tokenizer()
    encoded = encode_chat(tok, REVERSE, cutoff_len=64)
    padded = make_batches(encoded, 64, packing=False, pad_id=tok.pad_token_id)
    packed = make_batches(encoded, 64, True, tok.pad_token_id, row_tokens)
    assert all(b.input_ids.numel() <= 64 for b in padded + packed)
    assert sum(b.tokens for b in padded) == sum(b.tokens for b in packed)
    assert sum(b.tokens for b in packed) == sum(len(ids) - 1 for ids, _ in encoded)
    assert len(packed) < len(padded)
    assert all(b.attention_mask is None for b in packed)
    assert all(b.input_ids.shape[1] <= (row_tokens or 64) for b in packed)
    for b in packed:  # every row is whole examples (then padding), positions restart per example
        for ids, pos in zip(b.input_ids.tolist(), b.position_ids.tolist()):
            starts = [i for i, p in enumerate(pos) if p == 0]
            assert all(ids[i] in (tok.bos_token_id, tok.pad_token_id) for i in starts)


# ---------------------------------------------------------------- training


def test_train_changes_every_adapter_weight_and_logs_a_loss(model_dirs):
    student = make_student(model_dirs["llama"], max_train_steps=3)
    student.reset_adapters(0)
    before = student.adapter_state()
    assert before and all("lora_" in k for k in before)
    result = student.fine_tune(REVERSE, seed=0)
    assert result.steps == 3 and len(result.losses) == 3  # capped (3 epochs would be 9)
    assert result.losses[-1] < result.losses[0]
    assert result.tokens > 0
    assert result.state.keys() == before.keys()
    for name, value in before.items():
        assert not torch.equal(value, result.state[name]), f"{name} did not change"
    # the base weights are untouched: with the adapters off the model is the base
    frozen = [n for n, p in student.model.named_parameters() if not p.requires_grad]
    assert all("lora_" not in n for n in frozen)


def test_same_seed_same_adapters_other_seed_differs(model_dirs):
    student = make_student(model_dirs["llama"], max_train_steps=2)
    a = student.fine_tune(REVERSE, seed=3)
    b = student.fine_tune(REVERSE, seed=3)
    c = student.fine_tune(REVERSE, seed=4)
    assert a.losses == b.losses
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert any(not torch.equal(a.state[k], c.state[k]) for k in a.state)
    with pytest.raises(StudentError, match="no examples"):
        student.fine_tune([], seed=0)


@pytest.mark.parametrize(("arch", "row_tokens"), [("llama", 0), ("llama", 256), ("qwen2", 0)])
def test_packed_and_unpacked_training_match(model_dirs, arch, row_tokens):
    """Same data, same seed: packed rows give the padded rows' losses and adapters."""
    big = dict(micro_batch_tokens=256, row_tokens=row_tokens, batch_size=8)
    packed = make_student(model_dirs[arch], max_train_steps=3, packing=True, **big)
    padded = make_student(model_dirs[arch], max_train_steps=3, packing=False, **big)
    steps, _ = packed.step_batches(REVERSE)
    assert all(b.attention_mask is None for step in steps for b in step)
    rows = [b.input_ids.shape for step in steps for b in step]
    # sdpa packs rows of cutoff_len (64) by default: several rows per micro-batch
    assert max(n for n, _ in rows) == (1 if row_tokens else 2)
    assert max(width for _, width in rows) <= packed.row_tokens()
    a = packed.fine_tune(REVERSE, seed=1)
    b = padded.fine_tune(REVERSE, seed=1)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    for name in a.state:
        # Adam divides by sqrt(v): summation-order noise in tiny gradients shows at ~1e-5
        torch.testing.assert_close(a.state[name], b.state[name], rtol=1e-3, atol=1e-4)


def test_loss_is_transformers_loss_on_the_response(model_dirs):
    """Our summed loss / response tokens equals model(labels=...) with the prompt masked."""
    student = make_student(model_dirs["qwen2"])
    encoded = encode_chat(student.tokenizer, REVERSE[:1], cutoff_len=64)
    (batch,) = make_batches(encoded, 64, packing=True, pad_id=student.tokenizer.pad_token_id)
    ids, n_prompt = encoded[0]
    labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
    with torch.no_grad():
        ours = loss_sum(student.model, batch, "torch") / int((batch.labels != -100).sum())
        reference = student.model(input_ids=torch.tensor([ids]), labels=labels).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_bfloat16_trains_float32_adapters_under_autocast(model_dirs):
    full = make_student(model_dirs["llama"], max_train_steps=2)
    mixed = make_student(model_dirs["llama"], max_train_steps=2, dtype="bfloat16")
    assert mixed.model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    a, b = full.fine_tune(REVERSE, seed=0), mixed.fine_tune(REVERSE, seed=0)
    assert all(v.dtype == torch.float32 for v in b.state.values())
    assert b.losses == pytest.approx(a.losses, rel=5e-2)
    assert len(mixed.answer(["R abc="], b.state)) == 1


def test_gradient_checkpointing_gives_the_same_training(model_dirs):
    plain = make_student(model_dirs["llama"], max_train_steps=2)
    lean = make_student(model_dirs["llama"], max_train_steps=2, gradient_checkpointing=True)
    a, b = plain.fine_tune(REVERSE, seed=2), lean.fine_tune(REVERSE, seed=2)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    for name in a.state:
        torch.testing.assert_close(a.state[name], b.state[name], rtol=1e-4, atol=1e-6)


def test_packed_gradients_match_and_reset_positions_matter(model_dirs):
    student = make_student(model_dirs["llama"])
    student.reset_adapters(5)
    params = [p for p in student.model.parameters() if p.requires_grad]
    # nonzero B, so that the gradients of A are nonzero too
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    encoded = encode_chat(student.tokenizer, REVERSE[:6], cutoff_len=64)
    pad = student.tokenizer.pad_token_id

    def grads(batches):
        student.model.zero_grad()
        total = sum(loss_sum(student.model, b, "torch") for b in batches)
        total.backward()
        return total.item(), [p.grad.clone() for p in params]

    loss_packed, g_packed = grads(make_batches(encoded, 256, packing=True, pad_id=pad))
    loss_padded, g_padded = grads(make_batches(encoded, 256, packing=False, pad_id=pad))
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for x, y in zip(g_packed, g_padded):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
    # without positions restarting per example, examples attend to each other: a different loss
    (row,) = make_batches(encoded, 256, packing=True, pad_id=pad)
    leaky = PackedBatch(
        row.input_ids, row.labels, torch.arange(row.input_ids.shape[1])[None], None, row.tokens
    )
    loss_leaky, _ = grads([leaky])
    assert abs(loss_leaky - loss_packed) > 1e-3 * loss_packed


# ---------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def trained(model_dirs):
    """A student and adapter weights that change its answers (random, not trained: cheaper)."""
    student = make_student(model_dirs["llama"], max_new_tokens=6)
    student.reset_adapters(0)
    gen = torch.Generator().manual_seed(0)
    state = {
        k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in student.adapter_state().items()
    }
    return student, FineTuneResult(state=state, losses=[], steps=0, tokens=0, seconds=0.0)


def test_batched_and_one_at_a_time_answers_match(trained):
    student, result = trained
    prompts = [p for p, _ in REVERSE] + ["R something longer=", "x"]
    batched = student.answer(prompts, result.state)
    base = student.answer(prompts)
    assert batched != base  # the adapters change the answers, and None means the base
    one = dataclasses.replace(student.config, eval_batch_size=1)
    static = dataclasses.replace(student.config, eval_cache="static", eval_batch_size=3)
    student.config = one
    try:
        assert [student.answer([p], result.state)[0] for p in prompts] == batched
        student.config = static
        assert student.answer(prompts, result.state) == batched
    finally:
        student.config = dataclasses.replace(one, eval_batch_size=64)


def test_domain_scores_are_the_same_batched_or_not(trained):
    student, result = trained
    domain = make_domain("code", 0)
    items = domain.public[::40]
    batched = evaluate(domain, student, items, result.state)
    student.config = dataclasses.replace(student.config, eval_batch_size=1)
    try:
        single = evaluate(domain, student, items, result.state)
    finally:
        student.config = dataclasses.replace(student.config, eval_batch_size=64)
    assert batched.score == single.score
    assert batched.per_skill == single.per_skill
    assert [f[1] for f in batched.failures] == [f[1] for f in single.failures]


def test_answer_rejects_foreign_weights(trained):
    student, result = trained
    with pytest.raises(StudentError, match="LoRA adapters"):
        student.answer(["R abc="], {"model.embed_tokens.weight": torch.zeros(1)})


# ---------------------------------------------------------------- the env


def test_fast_env_episode_with_the_hf_student(model_dirs, tmp_path):
    hf = HFStudentConfig(
        model=model_dirs["llama"],
        cutoff_len=64,
        micro_batch_tokens=512,
        max_train_steps=2,
        max_new_tokens=12,
        lr=1e-3,
    )
    config = FAST.replace(student_kind="hf", hf_student=hf, cache_dir=str(tmp_path))
    env = DataEngEnv(config)
    obs, info = env.reset(seed=0)
    assert isinstance(env.student, HFStudent)
    assert env.observation_space.contains(obs)
    n_skills = len(env.domain.skill_names)
    for skill in range(n_skills):
        env.step({"op": int(Op.GENERATE), "skill": skill, "difficulty": 0, "amount": 1, "param": 0})
    obs, reward, terminated, _, info = env.step(
        {"op": int(Op.TRAIN), "skill": 0, "difficulty": 0, "amount": 0, "param": 0}
    )
    assert info["invalid_action"] is None
    assert info["result"]["steps"] == 2
    assert info["result"]["final_loss"] > 0
    assert info["reward_terms"]["train_cost"] < 0
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    obs, reward, terminated, _, info = env.step(
        {"op": int(Op.SUBMIT), "skill": 0, "difficulty": 0, "amount": 0, "param": 0}
    )
    assert terminated
    assert set(FINAL_KEYS) <= set(info)


# ---------------------------------------------------------------- GPU and vLLM


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (none on this machine)")
def test_bf16_packed_matches_padded_on_gpu(model_dirs):
    packed = make_student(model_dirs["llama"], max_train_steps=2, packing=True, device="cuda")
    padded = make_student(model_dirs["llama"], max_train_steps=2, packing=False, device="cuda")
    assert packed.dtype == torch.bfloat16
    a, b = packed.fine_tune(REVERSE, seed=0), padded.fine_tune(REVERSE, seed=0)
    assert a.losses == pytest.approx(b.losses, rel=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available(),
    reason="needs liger-kernel (the gpu extra) and CUDA",
)
def test_liger_loss_matches_torch_loss_on_gpu(model_dirs):
    student = make_student(model_dirs["llama"], device="cuda", dtype="float32")
    student.reset_adapters(0)
    encoded = encode_chat(student.tokenizer, REVERSE, cutoff_len=64)
    batches = make_batches(encoded, 256, True, student.tokenizer.pad_token_id)
    for batch in batches:
        batch = batch.to(student.device)
        torch_loss = loss_sum(student.model, batch, "torch")
        liger_loss = loss_sum(student.model, batch, "liger")
        assert float(liger_loss) == pytest.approx(float(torch_loss), rel=1e-4)


@pytest.mark.vllm
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="needs the vllm extra and CUDA",
)
def test_vllm_and_transformers_give_the_same_answers(model_dirs):
    hf = make_student(model_dirs["llama"], engine="transformers", device="cuda", max_new_tokens=6)
    vl = make_student(model_dirs["llama"], engine="vllm", device="cuda", max_new_tokens=6)
    result = hf.fine_tune(REVERSE, seed=0)
    prompts = [p for p, _ in REVERSE]
    assert vl.answer(prompts, result.state) == hf.answer(prompts, result.state)
    assert vl.answer(prompts) == hf.answer(prompts)
