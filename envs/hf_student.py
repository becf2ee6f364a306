"""The ``hf`` student: any Hugging Face causal LM fine-tuned with PEFT LoRA, the paper's recipe.

The paper (arXiv 2605.30407, App. C.3) fine-tunes Llama-3.1-8B-Instruct with LoRA (rank 8,
alpha 16, dropout 0, all linear layers), AdamW at lr 1e-4 with a cosine schedule and 10% warmup,
3 epochs, bf16, cutoff 2,048 tokens and an effective batch of 16. :class:`HFStudentConfig` holds
that recipe as its defaults and :class:`HFStudent` runs it behind the same contract as the tiny
student (``load_base``, ``cache_path``, ``fine_tune``, ``answer``), so every env, policy and
experiment works with it unchanged.

Each example is rendered with the model's chat template (the prompt as the user turn, the target
as the assistant turn) and only the assistant turn carries loss. Training packs the examples of
a step into few long rows with positions restarting at 0 for every example: transformers then
keeps examples from attending to each other (a block-diagonal mask with SDPA, variable-length
kernels with flash attention), and almost no compute goes to padding (only at row ends, with
rows filled longest-first). The loss of an optimizer step is
the mean over all its response tokens, however the step is split into micro-batches, which makes
packed and padded training the same computation. ``FineTuneResult.state`` holds the LoRA adapter
weights only; the base weights are loaded once and never change.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dataeng_gym.envs.student import FineTuneResult
from dataeng_gym.errors import ConfigError, MissingExtraError, StudentError

__all__ = [
    "loss_sum",
    "render_prompts",
    "train_steps",
    "CHAT_TEMPLATE",
    "HFStudent",
    "HFStudentConfig",
    "PackedBatch",
    "chat_tokenizer",
    "encode_chat",
    "make_batches",
    "save_random_model",
    "set_checkpointing",
]

log = logging.getLogger(__name__)

_IGNORE = -100  # label of positions that carry no loss (prompt, padding)
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class HFStudentConfig:
    """Model and LoRA recipe of the ``hf`` student; the defaults are the paper's (App. C.3).

    Attributes:
        model: Local model directory or hub id (a hub id needs network access). Required by
            HFStudent; empty by default so that an EnvConfig can carry the recipe unused.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).
        lora_dropout: Dropout on the LoRA input.
        target_modules: PEFT ``target_modules``; "all-linear" is every linear layer but the head.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_grad_norm: Clip the gradient to this global norm (0 turns clipping off); 1.0 is the
            transformers Trainer default that LLaMA-Factory runs with.
        warmup_ratio: Fraction of the optimizer steps with linear warmup before cosine decay to 0.
        epochs: Passes over the examples, in the order given.
        max_train_steps: Cap on optimizer steps (0: no cap, the paper's setting).
        batch_size: Examples per optimizer step (the paper: 2 GPUs x 1 x 8 accumulation = 16).
        cutoff_len: Most tokens of a rendered example; longer ones lose their end.
        micro_batch_tokens: Most tokens (padding included) per forward/backward; a step's
            examples are split into as many micro-batches as this needs (gradient accumulation).
            Must be >= cutoff_len.
        packing: Pack a micro-batch's examples into rows with positions restarting per
            example (no padding but at row ends); False pads each example to its own row.
        row_tokens: Most tokens of a packed row. 0: automatic, one row per micro-batch with
            flash attention (variable-length kernels), cutoff_len otherwise (SDPA spends
            row-length-squared work on its block-diagonal mask, so long rows waste compute).
        dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "bfloat16" or "float32": the base
            weights' dtype; with bfloat16, training and generation run under autocast while
            the LoRA weights and AdamW state stay float32 (mixed precision).
        device: "auto" (CUDA when available) or a torch device string.
        attn_implementation: "auto" (flash_attention_2 on CUDA when flash-attn is installed,
            else sdpa) or any transformers attention implementation.
        gradient_checkpointing: Recompute activations in the backward pass (less memory, ~30%
            more compute); needed for long micro-batches of large models.
        loss: "auto" (liger-kernel's fused linear cross-entropy on CUDA when installed, else
            torch), "torch" (logits at response positions only, in float32) or "liger".
        eval_batch_size: Prompts generated together by the transformers engine.
        max_new_tokens: Most tokens generated per answer.
        eval_cache: KV cache of the transformers engine: "dynamic" or "static" (preallocated;
            transformers compiles the decoding step on CUDA; prompts are padded to multiples of
            64 tokens so few shapes occur).
        engine: Evaluation engine: "auto" (vLLM when installed and CUDA is present, else
            transformers), "transformers" or "vllm".
        vllm_gpu_memory_utilization: Share of GPU memory vLLM may take; the training copy of the
            model lives on the same GPU, so this is lower than vLLM's own default.
        system_prompt: System turn put before every prompt ("" for none).
    """

    model: str = ""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.1
    epochs: int = 3
    max_train_steps: int = 0
    batch_size: int = 16
    cutoff_len: int = 2048
    micro_batch_tokens: int = 4096
    packing: bool = True
    row_tokens: int = 0
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str = "auto"
    gradient_checkpointing: bool = False
    loss: str = "auto"
    eval_batch_size: int = 64
    max_new_tokens: int = 64
    eval_cache: str = "dynamic"
    engine: str = "auto"
    vllm_gpu_memory_utilization: float = 0.4
    system_prompt: str = ""

    def __post_init__(self) -> None:
        positive = (
            "lora_r",
            "lora_alpha",
            "epochs",
            "batch_size",
            "cutoff_len",
            "micro_batch_tokens",
            "eval_batch_size",
            "max_new_tokens",
        )
        for name in (*positive, "max_train_steps", "row_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"HFStudentConfig.{name} must be an int, got {value!r}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"HFStudentConfig.{name} must be > 0, got {getattr(self, name)}; "
                    "set it to a positive int"
                )
        if self.max_train_steps < 0:
            raise ConfigError("HFStudentConfig.max_train_steps must be >= 0 (0 = no cap)")
        if self.row_tokens and not self.cutoff_len <= self.row_tokens <= self.micro_batch_tokens:
            raise ConfigError(
                f"HFStudentConfig.row_tokens={self.row_tokens} must be 0 (automatic) or between "
                f"cutoff_len={self.cutoff_len} and micro_batch_tokens={self.micro_batch_tokens}"
            )
        if self.cutoff_len < 2:
            raise ConfigError("HFStudentConfig.cutoff_len must be >= 2 (a prompt and a response)")
        if self.micro_batch_tokens < self.cutoff_len:
            raise ConfigError(
                f"HFStudentConfig.micro_batch_tokens={self.micro_batch_tokens} must be >= "
                f"cutoff_len={self.cutoff_len}, so that the longest example fits a micro-batch"
            )
        if not self.lr > 0:
            raise ConfigError(f"HFStudentConfig.lr must be > 0, got {self.lr}; use e.g. 1e-4")
        if not 0 <= self.weight_decay < math.inf or not 0 <= self.max_grad_norm < math.inf:
            raise ConfigError("HFStudentConfig.weight_decay and max_grad_norm must be >= 0")
        for name in ("warmup_ratio", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(
                    f"HFStudentConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        if not 0 < self.vllm_gpu_memory_utilization < 1:
            raise ConfigError("HFStudentConfig.vllm_gpu_memory_utilization must be in (0, 1)")
        choices = {
            "dtype": ("auto", *_DTYPES),
            "loss": ("auto", "torch", "liger"),
            "eval_cache": ("dynamic", "static"),
            "engine": ("auto", "transformers", "vllm"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"HFStudentConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )


# ---------------------------------------------------------------------- data


@dataclass(frozen=True)
class PackedBatch:
    """One micro-batch, ready for the model.

    Attributes:
        input_ids: [B, T] token ids (B = 1 when packed).
        labels: [B, T] next-token ids at response positions, _IGNORE elsewhere.
        position_ids: [B, T] positions, restarting at 0 for every example.
        attention_mask: [B, T] 1 on real tokens (None when packed: positions mark examples).
        tokens: Real (non-pad) tokens in the micro-batch.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    tokens: int

    def to(self, device: torch.device) -> PackedBatch:
        mask = self.attention_mask
        return PackedBatch(
            self.input_ids.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.position_ids.to(device, non_blocking=True),
            None if mask is None else mask.to(device, non_blocking=True),
            self.tokens,
        )


def _messages(prompt: str, system_prompt: str) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*turns, {"role": "user", "content": prompt}]


def render_prompts(tokenizer: Any, prompts: Sequence[str], system_prompt: str = "") -> list[str]:
    """Prompts as chat-template text that ends where the assistant's answer starts."""
    return [
        tokenizer.apply_chat_template(
            _messages(p, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


def encode_chat(
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    cutoff_len: int,
    system_prompt: str = "",
) -> list[tuple[list[int], int]]:
    """Render (prompt, target) pairs with the chat template and tokenize them.

    Returns one ``(token_ids, prompt_len)`` per example: the first ``prompt_len`` tokens are the
    prompt up to and including the assistant header, the rest the response (with the template's
    end-of-turn tokens), which alone carries loss. Sequences longer than cutoff_len lose their end;
    an example with no response token left is an error, since it would train on nothing.
    """
    if tokenizer.chat_template is None:
        raise StudentError(
            "the student's tokenizer has no chat template; use an instruct model's tokenizer or "
            "set tokenizer.chat_template before training"
        )
    heads = render_prompts(tokenizer, [p for p, _ in examples], system_prompt)
    fulls = [
        tokenizer.apply_chat_template(
            [*_messages(p, system_prompt), {"role": "assistant", "content": t}], tokenize=False
        )
        for p, t in examples
    ]
    head_ids = tokenizer(heads, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    out = []
    for (prompt, _), head, full in zip(examples, head_ids, full_ids, strict=True):
        # The prompt's tokens are those it shares with prompt + answer. A subword tokenizer may
        # merge the last header token with the answer's first characters; then the loss starts
        # one token early, which is harmless. Anything shorter means another template shape.
        shared = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), len(head))
        if shared < len(head) - 1 or shared == 0 or len(full) <= shared:
            raise StudentError(
                "the chat template does not render the prompt as a prefix of prompt + answer "
                f"(prompt {prompt[:60]!r}); the hf student needs a template whose generation "
                "prompt is the start of the assistant turn"
            )
        if shared >= cutoff_len:
            raise StudentError(
                f"a prompt renders to {shared} tokens, which leaves no room for its answer "
                f"within cutoff_len={cutoff_len}; shorten it or raise HFStudentConfig.cutoff_len"
            )
        out.append((full[:cutoff_len], shared))
    cut = sum(len(full) > cutoff_len for full in full_ids)
    if cut:
        log.warning("%d of %d examples lost their end at cutoff_len=%d", cut, len(out), cutoff_len)
    return out


def _shifted(ids: list[int], prompt_len: int) -> tuple[list[int], list[int]]:
    """Inputs (all but the last token) and next-token labels with the prompt masked."""
    labels = ids[1:]
    labels[: prompt_len - 1] = [_IGNORE] * (prompt_len - 1)
    return ids[:-1], labels


def make_batches(
    encoded: Sequence[tuple[list[int], int]],
    max_tokens: int,
    packing: bool,
    pad_id: int,
    row_tokens: int | None = None,
) -> list[PackedBatch]:
    """Split the examples of one optimizer step into micro-batches of at most max_tokens.

    Packed: examples share rows, longest first, each with positions 0..n-1, while a row holds
    at most row_tokens (None: max_tokens and one row per micro-batch, what variable-length flash
    attention wants; SDPA turns packed rows into a dense block-diagonal mask whose cost grows with
    the row length squared, so shorter rows suit it). Not packed: each example has its own row,
    in the order given. Rows are right-padded to the widest row of their
    micro-batch, and rows are added while rows x width stays within max_tokens. Padding of a
    packed row gets positions of its own, so it reads as one more (label-free) sequence.
    """
    seqs = [_shifted(ids, n) for ids, n in encoded]
    rows: list[list[tuple[list[int], list[int]]]] = []
    if packing:
        # First-fit decreasing: the step's loss is a sum over its examples, so their order
        # inside a step does not matter, and longest-first leaves the least padding.
        limit = row_tokens or max_tokens
        for seq in sorted(seqs, key=lambda s: -len(s[0])):
            for row in rows:
                if sum(len(x) for x, _ in row) + len(seq[0]) <= limit:
                    row.append(seq)
                    break
            else:
                rows.append([seq])
    else:
        rows = [[seq] for seq in seqs]
    groups: list[list[list[tuple[list[int], list[int]]]]] = []
    for row in rows:
        if groups and not (packing and row_tokens is None):  # one row: flash's varlen layout
            width = max(sum(len(x) for x, _ in r) for r in [*groups[-1], row])
            if (len(groups[-1]) + 1) * width <= max_tokens:
                groups[-1].append(row)
                continue
        groups.append([row])
    batches = []
    for group in groups:
        width = max(sum(len(x) for x, _ in row) for row in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        labels = torch.full((len(group), width), _IGNORE, dtype=torch.long)
        positions = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for r, row in enumerate(group):
            start = 0
            for x, y in row:
                end = start + len(x)
                ids[r, start:end] = torch.tensor(x)
                labels[r, start:end] = torch.tensor(y)
                positions[r, start:end] = torch.arange(len(x))
                start = end
            mask[r, :start] = 1
            positions[r, start:] = torch.arange(width - start)
        tokens = int(mask.sum())
        batches.append(PackedBatch(ids, labels, positions, None if packing else mask, tokens))
    return batches


# ---------------------------------------------------------------------- loss and training


def _liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def loss_sum(model: torch.nn.Module, batch: PackedBatch, kind: str) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens of one micro-batch.

    The decoder runs on the whole micro-batch, but only the response positions are projected
    onto the vocabulary: ``torch`` computes those logits and takes the loss in float32;
    ``liger`` hands the hidden states to liger-kernel's fused linear cross-entropy, which never
    materialises the logits. A model's ``final_logit_softcapping`` (Gemma) is applied either way.
    """
    target = batch.labels != _IGNORE
    labels = batch.labels[target]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    ).last_hidden_state[target]
    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if kind == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        options: dict[str, Any] = {"reduction": "sum"}
        if cap:
            options["softcap"] = cap
        loss = LigerFusedLinearCrossEntropyLoss(**options)(
            head.weight, hidden, labels, getattr(head, "bias", None)
        )
        return loss[0] if isinstance(loss, tuple) else loss  # (loss, z_loss) in some versions
    logits = head(hidden).float()
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return F.cross_entropy(logits, labels, reduction="sum")


def _lr_scale(step: int, steps: int, warmup_ratio: float) -> float:
    """Linear warmup over ceil(warmup_ratio x steps) steps, then cosine decay to 0."""
    warmup = math.ceil(warmup_ratio * steps)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_steps(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    steps: Iterator[list[PackedBatch]],
    n_steps: int,
    cfg: HFStudentConfig,
    loss_kind: str,
    device: torch.device,
    on_step: Callable[[int, float, int], None] | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[list[float], int]:
    """AdamW over the given optimizer steps; return the loss of every step and tokens seen.

    Each step is a list of micro-batches. Every micro-batch's summed loss is divided by the
    step's response-token count before its backward pass, so the accumulated gradient is that of
    the step's mean token loss, whatever the micro-batch split (packed or padded). With
    ``amp_dtype`` the forward pass runs under autocast to it (mixed precision, as the Trainer's
    ``bf16=True``): the LoRA weights and their optimizer state stay float32, their matmuls and
    the activations saved for backward are bfloat16.
    """
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    losses: list[float] = []
    tokens = 0
    model.train()
    for step, micro in enumerate(steps):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * _lr_scale(step, n_steps, cfg.warmup_ratio)
        count = sum(int((b.labels != _IGNORE).sum()) for b in micro)
        total = torch.zeros((), device=device)
        for batch in micro:
            with _autocast(device, amp_dtype):
                loss = loss_sum(model, batch.to(device), loss_kind) / count
            loss.backward()
            total += loss.detach()
            tokens += batch.tokens
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(total))
        if on_step is not None:
            on_step(step, losses[-1], tokens)
    model.eval()
    return losses, tokens


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_checkpointing(model: Any, on: bool) -> None:
    """Turn activation (gradient) checkpointing of a transformers model on or off.

    transformers 5.2x renamed ``gradient_checkpointing_*`` to ``activation_checkpointing_*``;
    this calls whichever the installed version has. Non-reentrant, so frozen inputs work.
    """
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


# ---------------------------------------------------------------------- the student


class HFStudent:
    """A Hugging Face causal LM whose LoRA adapters each TRAIN action trains afresh.

    The base model is the pretrained checkpoint itself, loaded once; ``load_base`` only records
    the key (there is no base training). Every ``fine_tune`` re-initialises the adapters from its
    seed, so TRAINs do not leak into each other and the reward stays a paired delta.
    Not thread-safe: one instance owns one model whose adapters each call overwrites.
    """

    def __init__(
        self,
        config: HFStudentConfig,
        *,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        """Load the model (or take ``model`` and ``tokenizer`` built in memory) and add LoRA.

        Args:
            config: The recipe; ``config.model`` names the checkpoint to load (when ``model``
                is given it only names it, e.g. in cache keys).
            seed: Seed of the first adapter initialisation (each fine_tune reseeds).
            cache_dir: Where cache_path() points (default: $DATAENG_GYM_CACHE or
                ~/.cache/dataeng_gym); nothing large is written there.
            model: An already built causal LM (benchmarks build random-weight ones in memory).
            tokenizer: Its tokenizer, with a chat template; required with ``model``.
        """
        if not config.model:
            raise ConfigError(
                "HFStudentConfig.model is empty; set it to a local model directory or a hub id"
            )
        if (model is None) != (tokenizer is None):
            raise ConfigError("pass both model and tokenizer to HFStudent, or neither")
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise MissingExtraError("peft", "lora") from exc
        self.config = config
        self.seed = seed
        if cache_dir is None:
            cache_dir = os.environ.get("DATAENG_GYM_CACHE") or Path.home() / ".cache/dataeng_gym"
        self.cache_dir = Path(cache_dir).expanduser()
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu")
            if config.device == "auto"
            else config.device
        )
        if config.dtype == "auto":
            self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = _DTYPES[config.dtype]
        if tokenizer is None:
            tokenizer, model = self._load(config)
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        assert model is not None
        model.to(self.device)
        if config.gradient_checkpointing:
            set_checkpointing(model, True)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(seed)
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            self.model = get_peft_model(model, lora)
        self.model.eval()
        self.loss_kind = config.loss
        if config.loss == "auto":
            self.loss_kind = (
                "liger" if self.device.type == "cuda" and _liger_available() else "torch"
            )
        if self.loss_kind == "liger" and not _liger_available():
            raise MissingExtraError("liger-kernel", "gpu")
        self.engine = config.engine
        if config.engine == "auto":
            has_vllm = importlib.util.find_spec("vllm") is not None
            self.engine = "vllm" if has_vllm and self.device.type == "cuda" else "transformers"
        self._vllm: Any = None
        self._adapter_ids = 0
        self.key = ""

    def _load(self, config: HFStudentConfig) -> tuple[Any, torch.nn.Module]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        attn = config.attn_implementation
        if attn == "auto":
            flash = importlib.util.find_spec("flash_attn") is not None
            attn = "flash_attention_2" if flash and self.device.type == "cuda" else "sdpa"
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.model)
            model = AutoModelForCausalLM.from_pretrained(
                config.model, dtype=self.dtype, attn_implementation=attn
            )
        except (OSError, ValueError) as exc:  # ValueError: a directory without a model config
            raise StudentError(
                f"cannot load the hf student {config.model!r}: {exc}. Pass a local directory "
                "with config.json, weights and a tokenizer, or a hub id with network access"
            ) from exc
        return tokenizer, model

    # ------------------------------------------------------------------ base

    def cache_path(self, key: str) -> Path:
        """A name unique to (model, recipe, key), used to memoise base evaluations."""
        blob = json.dumps({"key": key, "seed": self.seed, "config": asdict(self.config)})
        digest = hashlib.sha256(blob.encode()).hexdigest()[:24]
        return self.cache_dir / "students" / f"hf-base-{digest}"

    def load_base(self, key: str, make_examples: Callable[[], Sequence[tuple[str, str]]]) -> None:
        """Record the base key; the pretrained model is the base, so make_examples is unused."""
        del make_examples
        self.key = key

    def num_parameters(self) -> int:
        """Weights of the base model (adapters excluded)."""
        return sum(p.numel() for n, p in self.model.named_parameters() if "lora_" not in n)

    # ------------------------------------------------------------------ training

    def step_batches(
        self, examples: Sequence[tuple[str, str]], packing: bool | None = None
    ) -> tuple[list[list[PackedBatch]], int]:
        """Tokenize and cut the examples into optimizer steps of micro-batches.

        Returns the micro-batches of every step of one epoch and the number of steps to run
        (epochs x steps per epoch, capped by max_train_steps).
        """
        cfg = self.config
        encoded = encode_chat(self.tokenizer, examples, cfg.cutoff_len, cfg.system_prompt)
        pack = cfg.packing if packing is None else packing
        epoch = [
            make_batches(
                encoded[i : i + cfg.batch_size],
                cfg.micro_batch_tokens,
                pack,
                self.tokenizer.pad_token_id,
                self.row_tokens(),
            )
            for i in range(0, len(encoded), cfg.batch_size)
        ]
        steps = cfg.epochs * len(epoch)
        if cfg.max_train_steps:
            steps = min(steps, cfg.max_train_steps)
        return epoch, steps

    def row_tokens(self) -> int | None:
        """Tokens per packed row: config.row_tokens, or the automatic choice (see the config)."""
        attn = getattr(self.model.config, "_attn_implementation", None) or ""
        if "flash" in attn:
            if self.config.row_tokens:  # transformers reads packing from one row only
                raise ConfigError(
                    f"HFStudentConfig.row_tokens must be 0 with {attn}: its variable-length "
                    "kernels need each micro-batch packed into a single row"
                )
            return None
        return self.config.row_tokens or self.config.cutoff_len

    def reset_adapters(self, seed: int) -> None:
        """Re-initialise every LoRA adapter from seed (A random, B zero: the base model)."""
        from peft.tuners.lora import LoraLayer

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    module.reset_lora_parameters("default", True)

    def fine_tune(
        self,
        examples: Sequence[tuple[str, str]],
        *,
        seed: int,
        on_step: Callable[[int, float, int], None] | None = None,
    ) -> FineTuneResult:
        """Train fresh LoRA adapters on examples; return their weights.

        Consecutive examples form the optimizer steps, in the order given, so the caller's
        ordering (a curriculum, say) is what the student sees; epochs repeat that order.

        Args:
            examples: (prompt, target) pairs; loss is on the rendered assistant turn only.
            seed: Seeds the adapter initialisation (and dropout, if any).
            on_step: Called after every optimizer step with (step, loss, tokens so far).
        """
        if not examples:
            raise StudentError("fine_tune() got no examples; curate at least one before TRAIN")
        start = time.perf_counter()
        epoch, n_steps = self.step_batches(examples)
        self.reset_adapters(seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        schedule = (epoch[i % len(epoch)] for i in range(n_steps))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            losses, tokens = train_steps(
                self.model,
                params,
                schedule,
                n_steps,
                self.config,
                self.loss_kind,
                self.device,
                on_step,
                self.dtype,
            )
        if not all(math.isfinite(x) for x in losses):
            raise StudentError(
                f"fine-tuning diverged (loss {losses[-1]}); lower HFStudentConfig.lr or "
                "max_grad_norm"
            )
        return FineTuneResult(
            state=self.adapter_state(),
            losses=losses,
            steps=n_steps,
            tokens=tokens,
            seconds=time.perf_counter() - start,
        )

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The current LoRA weights as CPU tensors (what fine_tune returns as its state)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model)
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def _set_adapters(self, state: Mapping[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        if set(state) != _adapter_keys(self.model):
            raise StudentError(
                "answer() got weights that are not this student's LoRA adapters; pass the state "
                "of a FineTuneResult from an HFStudent with the same model and LoRA config"
            )
        set_peft_model_state_dict(self.model, dict(state))

    # ------------------------------------------------------------------ inference

    def answer(
        self, prompts: Sequence[str], state: Mapping[str, torch.Tensor] | None = None
    ) -> list[str]:
        """Greedy answers to prompts with the given adapters (None: the base model).

        Answers come back in the prompts' order, stripped of the template's special tokens.
        """
        if not prompts:
            return []
        texts = render_prompts(self.tokenizer, prompts, self.config.system_prompt)
        if self.engine == "vllm":
            return self._answer_vllm(texts, state)
        if state is None:
            with self.model.disable_adapter():
                return self._generate(texts)
        self._set_adapters(state)
        return self._generate(texts)

    def _stop_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = list(eos) if isinstance(eos, list) else [] if eos is None else [eos]
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _generate(self, texts: list[str]) -> list[str]:
        """Batched greedy decoding with transformers: length-sorted, left-padded batches."""
        cfg = self.config
        tok = self.tokenizer
        tok.padding_side = "left"
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        answers = [""] * len(ids)
        stop = self._stop_ids()
        extra: dict[str, Any] = {}
        if cfg.eval_cache == "static":
            extra["cache_implementation"] = "static"
        self.model.eval()
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            for start in range(0, len(order), cfg.eval_batch_size):
                chunk = order[start : start + cfg.eval_batch_size]
                batch = tok.pad(
                    {"input_ids": [ids[i] for i in chunk]},
                    return_tensors="pt",
                    pad_to_multiple_of=64 if cfg.eval_cache == "static" else None,
                ).to(self.device)
                out = self.model.generate(
                    **batch,
                    do_sample=False,
                    max_new_tokens=cfg.max_new_tokens,
                    eos_token_id=stop,
                    pad_token_id=tok.pad_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    **extra,
                )
                new = out[:, batch["input_ids"].shape[1] :].tolist()
                for i, row in zip(chunk, new, strict=True):
                    answers[i] = _decode(tok, row, stop)
        return answers

    def _answer_vllm(self, texts: list[str], state: Mapping[str, torch.Tensor] | None) -> list[str]:
        """Greedy decoding with vLLM, the adapters passed as a LoRA request (needs CUDA)."""
        try:
            from vllm import LLM, SamplingParams
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm") from exc
        cfg = self.config
        if self._vllm is None:
            self._vllm = LLM(
                model=cfg.model,
                tokenizer=cfg.model,
                enable_lora=True,
                max_lora_rank=max(8, cfg.lora_r),
                max_loras=1,
                dtype="bfloat16" if self.dtype == torch.bfloat16 else "auto",
                gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                max_model_len=cfg.cutoff_len + cfg.max_new_tokens,
                seed=self.seed,
            )
        params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens)
        request = None
        with tempfile.TemporaryDirectory(prefix="dataeng-lora-") as tmp:
            if state is not None:
                self._set_adapters(state)
                self.model.save_pretrained(tmp)
                self._adapter_ids += 1
                request = LoRARequest(f"train{self._adapter_ids}", self._adapter_ids, tmp)
            outputs = self._vllm.generate(
                [
                    {"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]}
                    for t in texts
                ],
                params,
                lora_request=request,
                use_tqdm=False,
            )
        return [o.outputs[0].text.strip() for o in outputs]


def _adapter_keys(model: torch.nn.Module) -> set[str]:
    """Keys of the PEFT model's adapter state dict."""
    from peft import get_peft_model_state_dict

    return set(get_peft_model_state_dict(model))


def _decode(tokenizer: Any, row: list[int], stop: list[int]) -> str:
    for i, t in enumerate(row):
        if t in stop:
            row = row[:i]
            break
    return tokenizer.decode(row, skip_special_tokens=True).strip()


# ---------------------------------------------------------------------- local models


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""The chat template of :func:`chat_tokenizer`: ``<|role|>content<|end|>`` turns."""

_SPECIAL = ("<|pad|>", "<|begin|>", "<|end|>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>")


@functools.cache
def _char_vocab() -> dict[str, int]:
    vocab = {t: i for i, t in enumerate(_SPECIAL)}
    for c in ["\n", *map(chr, range(32, 127))]:
        vocab[c] = len(vocab)
    return vocab


def chat_tokenizer(vocab_size: int | None = None) -> Any:
    """A character-level tokenizer with a chat template, made in code (no download).

    One token per printable ASCII character and newline, plus special tokens for the template's
    turns. ``vocab_size`` pads the vocabulary with unused tokens to match a model's embedding
    size (e.g. Llama-3's 128,256 for benchmarks with that architecture's cost).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(_char_vocab())
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ConfigError(f"vocab_size must be >= {len(vocab)}, got {vocab_size}")
        for i in range(len(vocab), vocab_size):
            vocab[f"<|unused{i}|>"] = i
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<unk>",
        additional_special_tokens=list(_SPECIAL[4:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_random_model(path: str | Path, config: Any, seed: int = 0) -> Path:
    """Save a random-weight causal LM built from ``config`` with :func:`chat_tokenizer`.

    A local model directory that HFStudentConfig(model=path) loads offline: for tests, CPU
    trials of the hf student, and benchmarks of an architecture without its weights.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tokenizer = chat_tokenizer(config.vocab_size)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
