"""Benchmark the paper-scale hf student: a plain transformers + peft loop and ours, side by side.

Run on one H100 (about 15 minutes; weights are random, built from each architecture's config, so
nothing is downloaded: the speed of a training step does not depend on the weight values):

    python experiments/bench_student_gpu.py --out runs/bench_student_gpu

For each architecture (Llama-3.1-8B, Qwen2.5-1.5B) it trains LoRA (the paper's recipe: r 8 on all
linear layers, bf16, effective batch 16) on the same synthetic examples two ways:

* ``plain``: what a straightforward script does: micro-batches of ``plain_batch`` examples padded
  to the longest, ``model(..., labels=...)`` (full-vocabulary logits), gradient accumulation.
* ``ours``: ``HFStudent``'s loop: examples packed into rows of ``micro_batch_tokens`` with positions
  restarting per example (no padding, no cross-example attention), logits only at response tokens,
  liger-kernel's fused linear cross-entropy when installed; optionally gradient checkpointing.

and reports trained (non-pad) tokens/s, MFU, peak GPU memory, evaluation items/s (greedy, batched
transformers generation, dynamic and static cache; vLLM when installed), and the minutes one
paper-size iteration would take (2,000 examples x 3 epochs + the public split), extrapolated from
the measured rates. MFU counts 4 x parameters FLOPs per trained token (forward 2N, backward through
the frozen weights 2N; LoRA's own FLOPs and attention are left out), the convention of the issue,
against ``peak_tflops`` (989 for H100 SXM bf16 dense).
Examples are random characters of a character-level tokenizer padded to the architecture's
vocabulary: prompts of ``prompt_len`` and answers of ``answer_len`` tokens (uniform ranges), so that
the padding a plain loop wastes is that of realistic variable-length data. Random weights never
emit EOS, so every answer runs to ``eval_new_tokens`` (a worst case for evaluation speed).

It writes ``bench_student_gpu.md`` (the table for docs/results.md), ``.csv`` and ``.json`` under
--out: the JSON after every measurement, the table after every architecture, so a failure in the
second keeps the first's; a rerun moves an earlier run's files aside (``*.earlier-<time>.*``).
``--as-test`` runs the same code on CPU with tiny versions of both architectures in about a
minute (its numbers mean nothing; CI runs it to keep the script working).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from dataeng_gym.envs.hf_student import (
    HFStudent,
    HFStudentConfig,
    chat_tokenizer,
    encode_chat,
    set_checkpointing,
)
from dataeng_gym.io import keep_earlier, write_csv, write_json, write_text

ARCHS: dict[str, Any] = {
    "llama-3.1-8b": lambda: LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        tie_word_embeddings=False,
    ),
    "qwen2.5-1.5b": lambda: Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
    ),
}
"""The two students of the paper, as configs (the public config.json values, no weights)."""

TINY: dict[str, Any] = {
    "llama-3.1-8b": lambda: LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    ),
    "qwen2.5-1.5b": lambda: Qwen2Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
}
"""Tiny versions of the same architectures, for --as-test on CPU."""


@dataclass
class Args:
    out: str = "runs/bench_student_gpu"
    """Directory for bench_student_gpu.md, .csv and .json."""
    archs: list[str] = field(default_factory=lambda: list(ARCHS))
    """Architectures to benchmark."""
    seed: int = 0
    """Seed of the weights, the data and the adapters."""
    steps: int = 8
    """Timed optimizer steps per training variant (after warmup_steps untimed ones)."""
    warmup_steps: int = 2
    """Untimed optimizer steps first (kernel selection, allocator warm-up)."""
    batch_size: int = 16
    """Examples per optimizer step (the paper's effective batch)."""
    plain_batch: int = 4
    """Examples per micro-batch of the plain loop (the issue's plain loop ran 4 x 1,024)."""
    micro_batch_tokens: list[int] = field(default_factory=lambda: [4096, 8192])
    """Packed tokens per micro-batch for ``ours`` (one variant each)."""
    checkpointing_tokens: int = 16384
    """Packed tokens per micro-batch of an extra ``ours`` variant with gradient checkpointing
    (0: skip it)."""
    prompt_len: tuple[int, int] = (50, 400)
    """Prompt length range in tokens (uniform)."""
    answer_len: tuple[int, int] = (100, 800)
    """Answer length range in tokens (uniform)."""
    eval_items: int = 256
    """Prompts per evaluation measurement (ours)."""
    plain_eval_items: int = 8
    """Prompts for the plain, one-at-a-time evaluation (its rate is extrapolated per item)."""
    eval_new_tokens: int = 256
    """Tokens generated per evaluation answer."""
    eval_batch_size: int = 128
    """Prompts per batch of our transformers evaluation."""
    paper_examples: int = 2000
    """Examples of a paper-size TRAIN (the paper's dataset_size)."""
    paper_epochs: int = 3
    """Epochs of a paper-size TRAIN."""
    public_items: int = 329
    """Items of the public split evaluated per iteration (the paper's largest, Code, estimated)."""
    paper_iteration: bool = False
    """Also run one whole paper-size iteration with the fastest settings and time it (the
    issue's target: at most 10 minutes on one GPU), instead of only extrapolating."""
    vllm: bool = False
    """Also time vLLM evaluation with the LoRA adapters (needs vllm; saves the random-weight
    model under --out, 16 GB for the 8B architecture, since vLLM loads models from disk)."""
    peak_tflops: float = 989.0
    """Peak dense bf16 TFLOP/s of the device, the MFU denominator (H100 SXM: 989)."""
    as_test: bool = False
    """Tiny architectures on CPU, a few steps: checks the script end to end in about a minute."""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(Args(), f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        elif isinstance(default, list | tuple):
            kind = type(default[0]) if default else str
            p.add_argument(flag, nargs="+", type=kind, default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)
    args = Args(**vars(p.parse_args()))
    for name in ("prompt_len", "answer_len"):
        value = tuple(getattr(args, name))
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            p.error(f"--{name.replace('_', '-')} takes two lengths LOW HIGH, got {value}")
        setattr(args, name, value)
    if args.warmup_steps < 1 or args.steps < 1:
        p.error("--warmup-steps and --steps must be >= 1 (timing starts after a warmup step)")
    unknown = set(args.archs) - set(ARCHS)
    if unknown:
        p.error(f"unknown --archs {sorted(unknown)}; choose from {list(ARCHS)}")
    return args


# ---------------------------------------------------------------------------- data


def make_examples(args: Args, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Random printable strings; the character tokenizer makes one token per character."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789 "))
    out = []
    for _ in range(n):
        p = int(rng.integers(args.prompt_len[0], args.prompt_len[1] + 1))
        a = int(rng.integers(args.answer_len[0], args.answer_len[1] + 1))
        out.append(("".join(rng.choice(letters, p)), "".join(rng.choice(letters, a))))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------- training


def plain_train(student: HFStudent, examples: list[tuple[str, str]], args: Args) -> dict[str, Any]:
    """The plain loop: padded micro-batches, model(labels=...), accumulation to batch_size,
    autocast to bfloat16 on GPU (what transformers' Trainer does with bf16=True)."""
    device = student.device
    model = student.model
    encoded = encode_chat(student.tokenizer, examples, student.config.cutoff_len)
    pad = student.tokenizer.pad_token_id
    student.reset_adapters(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=student.config.lr)
    accum = math.ceil(args.batch_size / args.plain_batch)
    n_steps = args.warmup_steps + args.steps
    amp = student.dtype != torch.float32  # mixed precision, as the Trainer's bf16=True
    model.train()
    reset_peak(device)
    tokens = padded = 0
    start = 0.0
    first_loss = None
    for step in range(n_steps):
        if step == args.warmup_steps:
            sync(device)
            start, tokens, padded = time.perf_counter(), 0, 0
        total = torch.zeros((), device=device)
        for k in range(accum):
            i = (step * args.batch_size + k * args.plain_batch) % len(encoded)
            rows = encoded[i : i + args.plain_batch]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for r, (seq, n_prompt) in enumerate(rows):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
                labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
            with torch.autocast(device.type, student.dtype, enabled=amp):
                out = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    labels=labels.to(device),
                    use_cache=False,
                )
            (out.loss / accum).backward()
            total += out.loss.detach() / accum
            tokens += int(mask.sum())
            padded += ids.numel()
        torch.nn.utils.clip_grad_norm_(params, student.config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        first_loss = float(total) if first_loss is None else first_loss  # syncs once a step
    sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "tokens_per_s": tokens / seconds,
        "padding": 1 - tokens / padded,
        "peak_gib": peak_gib(device),
        "first_loss": first_loss,
    }


def ours_train(
    student: HFStudent,
    examples: list[tuple[str, str]],
    args: Args,
    tokens_per_micro: int,
    row_tokens: int = 0,
) -> dict[str, Any]:
    """HFStudent.fine_tune itself, timed from its step callback after the warmup steps."""
    device = student.device
    student.config = dataclasses.replace(
        student.config,
        micro_batch_tokens=tokens_per_micro,
        row_tokens=row_tokens,
        max_train_steps=args.warmup_steps + args.steps,
        batch_size=args.batch_size,
    )
    marks: dict[int, tuple[float, int]] = {}

    def on_step(step: int, loss: float, tokens: int) -> None:
        marks[step] = (time.perf_counter(), tokens)  # loss is a float: the step has synced

    reset_peak(device)
    result = student.fine_tune(examples, seed=args.seed, on_step=on_step)
    (t0, n0), (t1, n1) = marks[args.warmup_steps - 1], marks[result.steps - 1]
    return {
        "tokens_per_s": (n1 - n0) / (t1 - t0),
        "padding": 0.0,
        "peak_gib": peak_gib(device),
        "first_loss": result.losses[0],
    }


def guarded(fn: Any, *a: Any) -> dict[str, Any]:
    """Run one measurement; a CUDA out-of-memory is a result ("OOM"), not a crash."""
    try:
        return fn(*a)
    except torch.OutOfMemoryError:
        a[0].model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"tokens_per_s": None, "error": "OOM"}


# ---------------------------------------------------------------------------- evaluation


def eval_rate(student: HFStudent, prompts: list[str], state: Any, **changes: Any) -> dict[str, Any]:
    saved = student.config
    student.config = dataclasses.replace(saved, max_new_tokens=changes.pop("new_tokens"))
    engine = student.engine
    student.engine = changes.pop("engine", "transformers")
    student.config = dataclasses.replace(student.config, **changes)
    try:
        reset_peak(student.device)
        student.answer(prompts[:2], state)  # warm-up (compilation for the static cache)
        sync(student.device)
        start = time.perf_counter()
        student.answer(prompts, state)
        sync(student.device)
        seconds = time.perf_counter() - start
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"items_per_s": None, "error": "OOM"}
    finally:
        student.config, student.engine = saved, engine
    return {"items_per_s": len(prompts) / seconds, "peak_gib": peak_gib(student.device)}


def paper_iteration(
    student: HFStudent,
    args: Args,
    rng: np.random.Generator,
    tokens: int,
    row_tokens: int,
    checkpointing: bool,
    cache: str,
) -> dict[str, Any]:
    """Time one whole paper-size iteration: fine_tune on paper_examples x paper_epochs, then
    answer public_items prompts, exactly as a TRAIN action does."""
    examples = make_examples(args, args.paper_examples, rng)
    public = [p for p, _ in make_examples(args, args.public_items, rng)]
    saved = student.config
    student.config = dataclasses.replace(
        saved,
        micro_batch_tokens=tokens,
        row_tokens=row_tokens,
        max_train_steps=0,
        epochs=args.paper_epochs,
        batch_size=args.batch_size,
        max_new_tokens=args.eval_new_tokens,
        eval_cache=cache if cache in ("dynamic", "static") else saved.eval_cache,
    )
    engine = student.engine
    student.engine = "vllm" if cache == "vllm" else "transformers"
    set_checkpointing(student.model.get_base_model(), checkpointing)
    try:
        reset_peak(student.device)
        start = time.perf_counter()
        result = student.fine_tune(examples, seed=args.seed)
        sync(student.device)
        train_s = time.perf_counter() - start
        student.answer(public, result.state)
        sync(student.device)
        total_s = time.perf_counter() - start
    except torch.OutOfMemoryError:
        student.model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"error": "OOM"}
    finally:
        set_checkpointing(student.model.get_base_model(), False)
        student.config, student.engine = saved, engine
    return {
        "steps": result.steps,
        "train_min": train_s / 60,
        "eval_min": (total_s - train_s) / 60,
        "total_min": total_s / 60,
        "tokens_per_s": result.tokens / train_s,
        "peak_gib": peak_gib(student.device),
    }


# ---------------------------------------------------------------------------- main


def build(arch: str, args: Args, device: torch.device) -> HFStudent:
    config = (TINY if args.as_test else ARCHS)[arch]()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn = "sdpa"
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        attn = "flash_attention_2"
    tokenizer = chat_tokenizer(config.vocab_size)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    torch.manual_seed(args.seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    cfg = HFStudentConfig(
        model=arch,
        device=str(device),
        batch_size=args.batch_size,
        cutoff_len=128 if args.as_test else 2048,
        eval_batch_size=args.eval_batch_size,
        engine="transformers",
    )
    return HFStudent(cfg, seed=args.seed, model=model, tokenizer=tokenizer)


def main() -> int:
    args = parse_args()
    if args.as_test:
        args.steps, args.warmup_steps, args.batch_size, args.plain_batch = 2, 1, 4, 2
        args.micro_batch_tokens, args.checkpointing_tokens = [256], 512
        args.prompt_len, args.answer_len = (8, 40), (8, 60)
        args.eval_items, args.plain_eval_items, args.eval_new_tokens = 8, 2, 4
        args.eval_batch_size = 4
        args.paper_examples, args.paper_epochs, args.public_items = 8, 1, 4
        args.paper_iteration = True
    device = torch.device("cuda" if torch.cuda.is_available() and not args.as_test else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a GPU run is too scarce to lose to a rerun that then fails: keep the earlier one's files
    for moved in keep_earlier(out / f"bench_student_gpu.{x}" for x in ("json", "md", "csv")):
        print(f"kept the earlier run's file as {moved.name}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    n_train = args.batch_size * (args.warmup_steps + args.steps)
    examples = make_examples(args, n_train, rng)
    prompts = [p for p, _ in make_examples(args, args.eval_items, rng)]
    rows: list[dict[str, Any]] = []

    def record(arch: str, what: str, result: dict[str, Any]) -> None:
        rows.append({"arch": arch, "what": what, **result})
        print(f"{arch:14} {what:32} {json.dumps(result, default=str)}", file=sys.stderr)
        write_json(out / "bench_student_gpu.json", {"args": dataclasses.asdict(args), "rows": rows})

    summary = []
    iterations: list[tuple[str, str, str, dict[str, Any]]] = []
    report = ""
    for arch in args.archs:
        student = build(arch, args, device)
        n_params = student.num_parameters()
        mean_tokens = float(
            np.mean(
                [
                    len(ids)
                    for ids, _ in encode_chat(
                        student.tokenizer, examples, student.config.cutoff_len
                    )
                ]
            )
        )
        record(
            arch,
            "model",
            {"params": n_params, "loss": student.loss_kind, "mean_tokens": mean_tokens},
        )
        train: dict[str, dict[str, Any]] = {}
        train["plain"] = guarded(plain_train, student, examples, args)
        record(arch, f"train plain {args.plain_batch}/micro", train["plain"])
        # (name, tokens per micro-batch, tokens per packed row (0: automatic), checkpointing)
        variants = [(f"ours packed {t}", t, 0, False) for t in args.micro_batch_tokens]
        if student.row_tokens() is not None:  # sdpa: also one long row, to show its T^2 cost
            t = args.micro_batch_tokens[0]
            variants.append((f"ours packed {t} in one row", t, t, False))
        if args.checkpointing_tokens:
            t = args.checkpointing_tokens
            variants.append((f"ours packed {t} + checkpointing", t, 0, True))
        settings = {name: rest for name, *rest in variants}
        for name, tokens, row_tokens, checkpointing in variants:
            set_checkpointing(student.model.get_base_model(), checkpointing)
            train[name] = guarded(ours_train, student, examples, args, tokens, row_tokens)
            set_checkpointing(student.model.get_base_model(), False)
            record(arch, "train " + name, train[name])
        state = student.adapter_state()
        evals: dict[str, dict[str, Any]] = {}
        evals["plain"] = eval_rate(
            student,
            prompts[: args.plain_eval_items],
            state,
            new_tokens=args.eval_new_tokens,
            eval_batch_size=1,
        )
        record(arch, "eval plain batch 1", evals["plain"])
        for cache in ("dynamic", "static"):
            evals[cache] = eval_rate(
                student, prompts, state, new_tokens=args.eval_new_tokens, eval_cache=cache
            )
            record(arch, f"eval ours batch {args.eval_batch_size} {cache}", evals[cache])
        if args.vllm:
            model_dir = out / f"model-{arch}"
            student.model.get_base_model().save_pretrained(model_dir)
            student.tokenizer.save_pretrained(model_dir)
            student.config = dataclasses.replace(student.config, model=str(model_dir))
            evals["vllm"] = eval_rate(
                student, prompts, state, new_tokens=args.eval_new_tokens, engine="vllm"
            )
            record(arch, "eval ours vllm", evals["vllm"])
        ok_train = {k: v for k, v in train.items() if v.get("tokens_per_s")}
        best_name = max(
            (k for k in ok_train if k != "plain"),
            key=lambda k: ok_train[k]["tokens_per_s"],
            default=None,
        )
        ok_eval = {k: v for k, v in evals.items() if k != "plain" and v.get("items_per_s")}
        best_eval = max(ok_eval, key=lambda k: ok_eval[k]["items_per_s"], default=None)
        paper_tokens = args.paper_examples * args.paper_epochs * mean_tokens
        if args.paper_iteration and best_name and best_eval:
            tokens, row_tokens, checkpointing = settings[best_name]
            measured = paper_iteration(
                student, args, rng, tokens, row_tokens, checkpointing, best_eval
            )
            record(arch, f"paper iteration ({best_name}, {best_eval})", measured)
            iterations.append((arch, best_name, best_eval, measured))

        for name, result in train.items():
            tok_s = result.get("tokens_per_s")
            mfu = 4 * n_params * tok_s / (args.peak_tflops * 1e12) if tok_s else None
            items_s = evals["plain" if name == "plain" else (best_eval or "dynamic")].get(
                "items_per_s"
            )
            summary.append(
                {
                    "arch": arch,
                    "variant": name,
                    "tokens_per_s": tok_s,
                    "mfu": mfu,
                    "padding": result.get("padding"),
                    "peak_gib": result.get("peak_gib"),
                    "eval_items_per_s": items_s,
                    "iteration_min": (paper_tokens / tok_s + args.public_items / items_s) / 60
                    if tok_s and items_s
                    else None,
                    "error": result.get("error", ""),
                    "best": name == best_name,
                }
            )
        del student
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # after every architecture: a failure in the next one keeps this one's table
        report = write_report(out, args, device, summary, iterations)

    print(report)
    return 0


def write_report(
    out: Path,
    args: Args,
    device: torch.device,
    summary: list[dict[str, Any]],
    iterations: list[tuple[str, str, str, dict[str, Any]]],
) -> str:
    """Write ``bench_student_gpu.md`` and ``.csv`` (atomically) for the rows so far."""
    write_csv(out / "bench_student_gpu.csv", summary, list(summary[0]))
    device_name = (
        torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU"
    )
    lines = [
        "## Paper-scale student benchmark (`experiments/bench_student_gpu.py`)",
        "",
        f"Command: `python experiments/bench_student_gpu.py {' '.join(sys.argv[1:])}`; device: "
        f"{device_name}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {_version('peft')}, liger-kernel {_version('liger_kernel')}, "
        f"flash-attn {_version('flash_attn')}, vllm {_version('vllm')}.",
        "",
        "| arch | variant | tokens/s | MFU (4N) | padding | peak GiB | eval items/s | "
        "paper iteration (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['arch']} | {r['variant']}{' (best)' if r['best'] else ''} | "
            f"{_fmt(r['tokens_per_s'], '{:,.0f}') if not r['error'] else r['error']} | "
            f"{_fmt(r['mfu'], '{:.1%}')} | {_fmt(r['padding'], '{:.0%}')} | "
            f"{_fmt(r['peak_gib'], '{:.1f}')} | {_fmt(r['eval_items_per_s'], '{:.1f}')} | "
            f"{_fmt(r['iteration_min'], '{:.1f}')} |"
        )
    lines += [
        "",
        f"Tokens/s counts trained (non-pad) tokens; MFU = 4 x params x tokens/s / "
        f"{args.peak_tflops:g} TFLOP/s. Evaluation: {args.eval_new_tokens} new tokens per item "
        f"(random weights never stop early); plain = one prompt at a time, ours = batches of "
        f"{args.eval_batch_size}, best of dynamic/static cache. Paper iteration = "
        f"{args.paper_examples:,} examples x {args.paper_epochs} epochs x their mean length "
        f"plus {args.public_items} public items, at the measured rates.",
    ]
    for arch, train_name, eval_name, m in iterations:
        lines += [
            "",
            f"Measured paper-size iteration, {arch} ({train_name}; evaluation {eval_name}): ",
        ]
        lines[-1] += (
            "OOM"
            if "error" in m
            else f"{m['steps']} steps in {m['train_min']:.1f} min ({m['tokens_per_s']:,.0f} "
            f"tokens/s) + evaluation {m['eval_min']:.1f} min = **{m['total_min']:.1f} min**."
        )
    text = "\n".join(lines) + "\n"
    write_text(out / "bench_student_gpu.md", text)
    return text


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    from importlib.metadata import PackageNotFoundError, version

    name = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn"}.get(module, module)
    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"


if __name__ == "__main__":
    raise SystemExit(main())
