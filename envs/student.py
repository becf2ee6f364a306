"""The tiny student: a character-level Llama that the agent's curated data fine-tunes.

Every TRAIN action fine-tunes a fresh copy of one cached *base* student, so the reward measures
what the curated data added and not what earlier actions left behind. Everything runs in float32
and, on CPU, is deterministic: the same examples and seed give bitwise the same weights. On a
GPU (``StudentConfig.device``) the same code runs there, without a host sync per training step,
so that many tiny students can share one GPU; its results match the CPU's closely, not bitwise.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

from dataeng_gym.errors import ConfigError, MissingExtraError, StudentError

__all__ = [
    "BOS_ID",
    "DEVICES",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "VOCAB_SIZE",
    "FineTuneResult",
    "StudentConfig",
    "TinyStudent",
    "char_tokenizer",
    "resolve_device",
]

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
VOCAB_SIZE = len(SPECIAL_TOKENS) + 95  # printable ASCII 32..126, one token each
_IGNORE = -100  # label of positions that carry no loss (prompt, BOS, padding)
_CACHE_FORMAT = 1  # bump when the checkpoint layout or base training recipe changes
DEVICES = ("auto", "cpu", "cuda")
"""Values of StudentConfig.device."""

# Fields that change the base checkpoint; the cache key hashes exactly these.
_BASE_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_length",
    "dropout",
    "warmup_ratio",
    "base_lr",
    "base_steps",
    "base_batch_size",
)


@functools.cache
def char_tokenizer() -> Tokenizer:
    """The shared character-level tokenizer: one token per printable ASCII character.

    The special tokens live in the vocabulary but are not registered as added tokens, so text
    such as ``"[PAD]"`` encodes as five characters and every printable string round-trips.
    Characters outside printable ASCII become ``[UNK]``.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({chr(c): len(SPECIAL_TOKENS) + c - 32 for c in range(32, 127)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()  # join characters without inserting spaces
    return tokenizer


@dataclass(frozen=True)
class StudentConfig:
    """Architecture and training recipe of the student.

    Attributes:
        hidden_size: Width of the residual stream.
        num_layers: Number of decoder layers.
        num_heads: Attention heads; must divide hidden_size into an even head size (RoPE).
        intermediate_size: Width of the SwiGLU MLP.
        max_length: Most tokens of BOS+prompt+target+EOS. Longer training examples lose the
            start of their prompt (its end, next to the answer, matters most); an example whose
            target alone does not fit is rejected with StudentError. Prompts given to answer()
            keep their last max_length - 2 characters.
        lr: Peak AdamW learning rate for fine-tuning.
        weight_decay: AdamW weight decay for fine-tuning.
        batch_size: Examples per fine-tuning step.
        epochs: Passes over the curated pool (the paper trains for 3) ...
        max_train_steps: ... capped at this many optimizer steps, so that a TRAIN action has a
            bounded cost whatever the pool size.
        warmup_ratio: Fraction of steps of linear warmup before cosine decay to 0.
        base_lr: Peak learning rate for training the base checkpoint.
        base_steps: Optimizer steps for the base checkpoint (trained once, then cached).
        base_batch_size: Examples per base training step.
        eval_batch_size: Prompts decoded together by answer().
        max_new_tokens: Most tokens answer() generates per prompt.
        lora_r: 0 fine-tunes every weight; > 0 trains PEFT LoRA adapters of this rank on all
            linear layers (except the output head) and merges them (needs the ``lora`` extra).
        lora_alpha: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).
        dropout: Dropout on the token embeddings while training. It is the randomness that
            the fine-tuning seed drives; 0 makes the seed irrelevant for full fine-tuning.
        compile: torch.compile the decoder layers for full fine-tuning (inductor, which needs a
            C++ compiler on CPU), with math attention in place of SDPA (also in answer()).
            Faster TRAINs after a first one per process that spends ~20-60 s compiling
            (docs/results.md, "torch.compile"): worth it for long-lived workers (PPO on the
            real student, many episodes), not for one short episode. Its weights match eager
            fine-tuning closely, not bitwise, and are deterministic on CPU. The base
            checkpoint is trained eager, so the base cache is shared.
        device: Where the student trains and answers: "auto" (CUDA when torch sees a GPU,
            else CPU; the CPU in a Ray worker without a GPU share), "cpu", or "cuda" (an
            error where there is none). Checked where the
            student is built, which may be a Ray worker on another machine. Results on a GPU
            match the CPU's closely but not bitwise (and dropout masks differ), so a GPU base
            checkpoint is cached apart from the CPU one.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_length: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 3
    max_train_steps: int = 150
    warmup_ratio: float = 0.1
    base_lr: float = 3e-3
    base_steps: int = 1000
    base_batch_size: int = 64
    eval_batch_size: int = 512
    max_new_tokens: int = 12
    lora_r: int = 0
    lora_alpha: int = 16
    dropout: float = 0.1
    compile: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        positive = (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "batch_size",
            "epochs",
            "max_train_steps",
            "base_batch_size",
            "eval_batch_size",
            "max_new_tokens",
            "lora_alpha",
        )
        for name in (*positive, "base_steps", "lora_r", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"StudentConfig.{name} must be an int, got {value!r}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"StudentConfig.{name} must be > 0, got {getattr(self, name)}; "
                    "set it to a positive int"
                )
        for name in ("base_steps", "lora_r"):
            if getattr(self, name) < 0:
                raise ConfigError(f"StudentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_length < 3:
            raise ConfigError(
                f"StudentConfig.max_length must be >= 3 (BOS, one character, EOS), "
                f"got {self.max_length}"
            )
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(
                f"StudentConfig.num_heads={self.num_heads} must divide hidden_size="
                f"{self.hidden_size} into an even head size (RoPE rotates pairs); "
                "pick num_heads so that hidden_size / num_heads is an even int"
            )
        for name in ("lr", "base_lr"):
            if not getattr(self, name) > 0:  # also rejects NaN
                raise ConfigError(
                    f"StudentConfig.{name} must be > 0, got {getattr(self, name)}; use e.g. 3e-3"
                )
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(
                f"StudentConfig.weight_decay must be finite and >= 0, got {self.weight_decay}"
            )
        for name in ("warmup_ratio", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(
                    f"StudentConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        if not isinstance(self.compile, bool):
            raise ConfigError(f"StudentConfig.compile must be a bool, got {self.compile!r}")
        if self.compile and self.lora_r:
            raise ConfigError(
                "StudentConfig.compile applies to full fine-tuning only: every LoRA TRAIN wraps "
                "a new model, which would recompile each time; set lora_r=0 or compile=False"
            )
        if self.device not in DEVICES:
            raise ConfigError(
                f"StudentConfig.device must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )


def resolve_device(device: str) -> torch.device:
    """The torch device for a StudentConfig.device value, as seen by this process.

    "auto" is the CPU inside a Ray task or actor that holds no GPU share (an RLlib env runner,
    say), even where torch sees a GPU: Ray does not hide GPUs from such workers, and a student
    there would take GPU memory and time that Ray never accounted for.

    Raises:
        StudentError: "cuda" was asked for but torch sees no GPU here.
    """
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise StudentError(
            "StudentConfig.device='cuda' but torch sees no CUDA GPU in this process "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use device='auto' to fall back "
            "to the CPU, or run where a GPU is visible (on Ray: num_gpus > 0)"
        )
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if device == "auto" and in_ray_worker_without_gpu():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def in_ray_worker_without_gpu() -> bool:
    """Whether this process is a Ray worker (task or actor) that Ray gave no GPU share."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is None or not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver: not placed by Ray
        return False
    return not context.get_accelerator_ids().get("GPU")


@dataclass(frozen=True)
class FineTuneResult:
    """What one fine-tuning run produced.

    Attributes:
        state: Trained weights: the full state dict of the (merged) model as CPU tensors, ready
            for TinyStudent.answer(prompts, state).
        losses: Training loss of every optimizer step, in order.
        steps: Optimizer steps taken.
        tokens: Non-pad input tokens processed, summed over steps.
        seconds: Wall time of the run.
    """

    state: dict[str, torch.Tensor]
    losses: list[float]
    steps: int
    tokens: int
    seconds: float


@dataclass(frozen=True)
class _Encoded:
    """Examples tokenized once into right-padded tensors, so training steps only slice.

    Attributes:
        inputs: [N, L] token ids BOS+prompt+target (the sequence minus its last token), PAD after.
        labels: [N, L] next-token ids on target+EOS positions, _IGNORE elsewhere.
        lengths: [N] non-pad tokens per row of inputs.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor


class TinyStudent:
    """A small Llama trained from scratch once (the base) and fine-tuned per TRAIN action.

    Not thread-safe: one instance owns one model whose weights each call overwrites.

    Attributes:
        device: Where it trains and answers (config.device resolved in this process).
    """

    def __init__(
        self,
        config: StudentConfig = StudentConfig(),  # noqa: B008 (frozen, so sharing is safe)
        *,
        seed: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        if cache_dir is None:
            cache_dir = os.environ.get("DATAENG_GYM_CACHE") or Path.home() / ".cache/dataeng_gym"
        self.cache_dir = Path(cache_dir).expanduser()
        self.device = resolve_device(config.device)
        self._llama_config = LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_length,  # RoPE computes any position on the fly
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._model = LlamaForCausalLM(copy.deepcopy(self._llama_config)).float()
        if config.compile:
            # Compiled, HF's plain (math) attention fuses into inductor's kernels and beats
            # SDPA's flash kernel at this head size; eager, SDPA is the faster one. The base
            # trains from self._llama_config, so it stays SDPA either way.
            self._model.set_attn_implementation("eager")
        self._model.to(self.device)
        self._base: dict[str, torch.Tensor] | None = None
        # Shares self._model's decoder weights; answer() and state_dict() keep using the eager one.
        self._compiled: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A compiled decoder does not pickle; the copy compiles its own on its first TRAIN.
        return self.__dict__ | {"_compiled": None}

    # ------------------------------------------------------------------ base checkpoint

    def cache_path(self, key: str) -> Path:
        """Where the base checkpoint for ``key`` lives; the name hashes all that shapes it."""
        fields = {name: getattr(self.config, name) for name in _BASE_FIELDS}
        blob = json.dumps(
            {
                "format": _CACHE_FORMAT,
                "key": key,
                "seed": self.seed,
                "vocab": char_tokenizer().get_vocab(),
                "config": fields,
            }
            # a GPU-trained base differs from the CPU's in its last bits: cache them apart
            | ({"device": self.device.type} if self.device.type != "cpu" else {}),
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:24]
        return self.cache_dir / "students" / f"base-{digest}.pt"

    def load_base(self, key: str, make_examples: Callable[[], Sequence[tuple[str, str]]]) -> None:
        """Load the cached base checkpoint, or train and cache it on first use.

        Args:
            key: Names the base training data (e.g. the domain); part of the cache key.
            make_examples: Returns the base training examples; called only on a cache miss.
        """
        path = self.cache_path(key)
        state = self._read_checkpoint(path)
        if state is None:
            examples = list(make_examples())
            if not examples:
                raise StudentError(f"make_examples() for base {key!r} returned no examples")
            state = self._train_base(examples)
            self._write_checkpoint(path, state)
        self._base = state

    @property
    def base_state(self) -> dict[str, torch.Tensor]:
        """Weights of the base checkpoint (read-only by convention: do not modify in place)."""
        if self._base is None:
            raise StudentError("the base student is not loaded; call load_base(key, ...) first")
        return self._base

    def _read_checkpoint(self, path: Path) -> dict[str, torch.Tensor] | None:
        """Return the checkpoint at path, or None if it is missing or unusable (then rebuilt)."""
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is rebuilt, whatever the reason
            log.warning("rebuilding unreadable student checkpoint %s: %s", path, exc)
            return None
        expected = self._model.state_dict()
        ok = (
            isinstance(state, dict)
            and state.keys() == expected.keys()
            and all(
                isinstance(state[k], torch.Tensor)
                and state[k].shape == v.shape
                and state[k].dtype == v.dtype
                and bool(torch.isfinite(state[k]).all())
                for k, v in expected.items()
            )
        )
        if not ok:
            log.warning("rebuilding student checkpoint %s: wrong keys, shapes or values", path)
            return None
        return state

    @staticmethod
    def _write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> None:
        """Write atomically, so concurrent workers never read half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _train_base(self, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Train from a seeded random init on shuffled batches, so the base is reproducible."""
        cfg = self.config
        data = self._encode_examples(examples)
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(self.seed)
            model = LlamaForCausalLM(self._llama_config).float()  # fresh init from the seed
            model.to(self.device)
            order = _shuffled_batches(len(examples), cfg.base_batch_size, cfg.base_steps)
            _train(model, model.parameters(), data, order, cfg.base_steps, cfg.base_lr, 0.0, cfg)
        return _detached(model.state_dict())

    # ------------------------------------------------------------------ fine-tuning

    def fine_tune(self, examples: Sequence[tuple[str, str]], *, seed: int) -> FineTuneResult:
        """Fine-tune a fresh copy of the base on examples, in the order given.

        Epochs repeat the same order and batches are consecutive slices, so the caller's
        ordering (a curriculum, say) is what the student sees.

        Args:
            examples: (prompt, target) pairs; loss is on target + EOS only.
            seed: Drives dropout masks (and LoRA initialisation); same seed, same weights.
        """
        cfg = self.config
        if not examples:
            raise StudentError("fine_tune() got no examples; curate at least one before TRAIN")
        start = time.perf_counter()
        data = self._encode_examples(examples)
        n_batches = math.ceil(len(examples) / cfg.batch_size)
        steps = fine_tune_steps(len(examples), cfg.batch_size, cfg.epochs, cfg.max_train_steps)
        batches = (
            slice((i % n_batches) * cfg.batch_size, (i % n_batches + 1) * cfg.batch_size)
            for i in range(steps)
        )
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(seed)
            if cfg.lora_r:
                model, params = self._lora_model()
            else:
                model = self._model
                model.load_state_dict(self.base_state)
                params = list(model.parameters())
            losses, tokens = _train(
                model,
                params,
                data,
                batches,
                steps,
                cfg.lr,
                cfg.weight_decay,
                cfg,
                decoder=self._compiled_decoder() if cfg.compile else None,
            )
        if cfg.lora_r:
            model = model.merge_and_unload()  # type: ignore[operator]
        return FineTuneResult(
            state=_detached(model.state_dict()),
            losses=losses,
            steps=steps,
            tokens=tokens,
            seconds=time.perf_counter() - start,
        )

    def _compiled_decoder(self) -> Callable[..., Any]:
        """The decoder stack under torch.compile, built once; its first call compiles."""
        if self._compiled is None:
            decoder = torch.compile(_llama(self._model).model, dynamic=True)

            def run(**kwargs: Any) -> Any:
                try:
                    return decoder(**kwargs)
                except torch._dynamo.exc.BackendCompilerFailed as e:  # e.g. no C++ compiler
                    raise StudentError(
                        f"torch.compile of the student failed ({type(e.inner_exception).__name__}"
                        f": {str(e.inner_exception).splitlines()[0][:300]}); install what it "
                        "lacks (a C++ compiler such as g++ on CPU, Triton on a GPU) or set "
                        "StudentConfig.compile=False"
                    ) from e

            self._compiled = run
        return self._compiled

    def _lora_model(self) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
        """A PEFT-wrapped fresh copy of the base whose only trainable weights are adapters."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise MissingExtraError("peft", "lora") from exc
        base = LlamaForCausalLM(self._llama_config).float()
        base.load_state_dict(self.base_state)
        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
        with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            model = get_peft_model(base, lora)
        model.to(self.device)
        return model, [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ inference

    def answer(
        self, prompts: Sequence[str], state: Mapping[str, torch.Tensor] | None = None
    ) -> list[str]:
        """Greedy answers to prompts, decoded with the given weights (None: the base).

        Prompts are sorted by length and decoded in big left-padded batches with a KV cache;
        decoding stops at EOS or max_new_tokens. Answers come back in the prompts' order.
        """
        cfg = self.config
        if not prompts:
            return []
        model = self._model
        try:
            model.load_state_dict(self.base_state if state is None else state)
        except RuntimeError as exc:
            raise StudentError(
                "answer() got weights that do not fit this student's architecture; pass the "
                f"state of a FineTuneResult from a student with the same config: {exc}"
            ) from exc
        model.eval()
        keep = cfg.max_length - 2
        encoded = char_tokenizer().encode_batch([p[-keep:] for p in prompts])
        ids = [[BOS_ID, *e.ids] for e in encoded]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        answers: list[str] = [""] * len(ids)
        with torch.inference_mode():
            for start in range(0, len(order), cfg.eval_batch_size):
                chunk = order[start : start + cfg.eval_batch_size]
                texts = _greedy(model, [ids[i] for i in chunk], cfg.max_new_tokens, self.device)
                for i, text in zip(chunk, texts, strict=True):
                    answers[i] = text
        return answers

    @property
    def max_target_chars(self) -> int:
        """Longest target fine_tune accepts (one token per character, plus BOS and EOS)."""
        return self.config.max_length - 2

    def num_parameters(self) -> int:
        """Total number of weights of the student (all of them, trainable or not)."""
        return sum(p.numel() for p in self._model.parameters())

    # ------------------------------------------------------------------ helpers

    def _encode_examples(self, examples: Sequence[tuple[str, str]]) -> _Encoded:
        """Tokenize once into padded tensors; left-truncate prompts to fit max_length."""
        tokenizer = char_tokenizer()
        prompts = tokenizer.encode_batch([p for p, _ in examples])
        targets = tokenizer.encode_batch([t for _, t in examples])
        limit = self.config.max_length
        rows: list[tuple[list[int], int]] = []
        for (_, target), p, t in zip(examples, prompts, targets, strict=True):
            room = limit - 2 - len(t.ids)
            if room < 0:
                raise StudentError(
                    f"target {target!r} has {len(t.ids)} characters but max_length={limit} "
                    f"leaves room for {limit - 2}; shorten it or raise StudentConfig.max_length"
                )
            p_ids = p.ids[len(p.ids) - room :] if len(p.ids) > room else p.ids
            rows.append(([BOS_ID, *p_ids, *t.ids, EOS_ID], len(p_ids) + 1))
        width = max(len(seq) for seq, _ in rows) - 1
        inputs = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        labels = torch.full((len(rows), width), _IGNORE, dtype=torch.long)
        lengths = torch.empty(len(rows), dtype=torch.long)
        for i, (seq, prefix) in enumerate(rows):
            n = len(seq) - 1
            inputs[i, :n] = torch.tensor(seq[:-1])
            labels[i, prefix - 1 : n] = torch.tensor(seq[prefix:])
            lengths[i] = n
        return _Encoded(inputs, labels, lengths)


def fine_tune_steps(examples: float, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps of :meth:`TinyStudent.fine_tune`: ``epochs`` passes in batches, capped.

    Shared with the surrogate, whose ``steps_frac`` feature must count what the student does.
    """
    return min(max_steps, epochs * math.ceil(examples / batch_size))


def _shuffled_batches(n: int, batch_size: int, steps: int) -> Iterator[torch.Tensor]:
    """Index batches that walk through fresh random permutations (for base training)."""
    pool = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(pool) < batch_size:
            pool = torch.cat([pool, torch.randperm(n)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


def _train(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter] | Iterator[torch.nn.Parameter],
    data: _Encoded,
    batches: Iterator[slice] | Iterator[torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float,
    cfg: StudentConfig,
    *,
    decoder: Callable[..., Any] | None = None,
) -> tuple[list[float], int]:
    """Run AdamW with linear warmup and cosine decay; return per-step losses and tokens seen.

    ``decoder`` replaces the model's decoder stack in the forward pass (a compiled one that
    shares its weights); the embedding dropout and output head stay eager around it.

    The batch is right-padded with no attention mask: under the causal mask, real tokens never
    see the trailing pads, and SDPA keeps its fast is_causal path. Logits are computed only at
    labelled positions, which skips the output head for prompts and padding. Losses stay on the
    device until the end and batches are prepared on the host first, so a GPU step never
    waits for the host (see _batches_on).
    """
    core = _llama(model)
    params = list(params)
    device = params[0].device if params else torch.device("cpu")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    warmup = math.ceil(cfg.warmup_ratio * steps)
    losses: list[torch.Tensor] = []
    tokens = 0
    model.train()
    for step, (x, flat, y, n_tokens) in enumerate(_batches_on(device, _batches(data, batches))):
        if step < warmup:
            scale = (step + 1) / warmup
        else:
            scale = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        embeds = F.dropout(core.model.embed_tokens(x), cfg.dropout, training=cfg.dropout > 0)
        hidden = (decoder or core.model)(inputs_embeds=embeds, use_cache=False).last_hidden_state
        logits = core.lm_head(hidden.reshape(-1, hidden.shape[-1])[flat])
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        tokens += n_tokens
    model.eval()
    return (torch.stack(losses).tolist() if losses else []), tokens


_Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


def _batches(data: _Encoded, batches: Iterator[slice] | Iterator[torch.Tensor]) -> Iterator[_Batch]:
    """Per step, computed on the host: inputs, labelled positions, their labels, token count.

    Inputs are [B, W], cut to the longest row; the labelled positions are flat indices into
    [B * W], which a GPU gathers without the host sync that a boolean mask costs.
    """
    for index in batches:
        lengths = data.lengths[index]
        width = int(lengths.max())
        labels = data.labels[index, :width].reshape(-1)
        flat = (labels >= 0).nonzero().squeeze(1)
        yield data.inputs[index, :width], flat, labels[flat], int(lengths.sum())


def _batches_on(device: torch.device, batches: Iterator[_Batch]) -> Iterator[_Batch]:
    """The batches on device: on CPU as they come, on a GPU all of them in one copy."""
    return batches if device.type == "cpu" else _packed(device, batches)


def _packed(device: torch.device, batches: Iterator[_Batch]) -> Iterator[_Batch]:
    """Every step's tensors in one pinned, asynchronous copy, yielded as views of it.

    A whole TRAIN's batches are a few MB, so no step of the loop waits on a transfer.
    """
    steps = list(batches)
    if not steps:
        return
    host = torch.cat([t.reshape(-1) for x, flat, y, _ in steps for t in (x, flat, y)])
    if device.type == "cuda":
        host = host.pin_memory()
    buffer = host.to(device, non_blocking=True)
    offset = 0
    for x, flat, y, n_tokens in steps:
        views = []
        for t in (x, flat, y):
            views.append(buffer[offset : offset + t.numel()].view(t.shape))
            offset += t.numel()
        yield views[0], views[1], views[2], n_tokens


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG a seeded block must fork (dropout runs there)."""
    return [device.index if device.index is not None else 0] if device.type == "cuda" else []


def _greedy(
    model: LlamaForCausalLM,
    prompts: list[list[int]],
    max_new_tokens: int,
    device: torch.device = torch.device("cpu"),  # noqa: B008 (immutable)
) -> list[str]:
    """Greedy-decode one batch of token-id prompts with left padding and a KV cache."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(1) - 1).clamp_(min=0)
    ids, mask, positions = (t.to(device) for t in (ids, mask, positions))
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    cache = out.past_key_values
    next_pos = positions[:, -1:] + 1
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    generated = [token]
    done = token == EOS_ID
    for _ in range(max_new_tokens - 1):
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        out = model(
            input_ids=token,
            attention_mask=mask,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        next_pos = next_pos + 1
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        generated.append(token)
        done |= token == EOS_ID
    rows = torch.cat(generated, dim=1).tolist()
    cleaned = []
    for row in rows:
        if EOS_ID in row:
            row = row[: row.index(EOS_ID)]
        cleaned.append([t for t in row if t > UNK_ID])
    return char_tokenizer().decode_batch(cleaned)


def _llama(model: torch.nn.Module) -> LlamaForCausalLM:
    """The LlamaForCausalLM inside model, which may be a PEFT wrapper.

    PEFT injects its LoRA layers in place, so calling the inner modules runs the adapters too.
    """
    return model if isinstance(model, LlamaForCausalLM) else model.get_base_model()


def _detached(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
