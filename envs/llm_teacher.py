"""An LLM as the teacher: generation requests become Alpaca-style items through a chat backend.

Each item costs one prompt (the budget is counted per prompt, as the env already charges one
teacher sample per requested item). A prompt shows the domain, the skill, the difficulty, an
example question of that skill and difficulty and the answer format, and asks for one JSON
object ``{"instruction", "input", "output"}`` (the paper's submission format). The question is
``instruction`` (plus ``input`` on a new line) and the answer is ``output``. A reply that does not
parse is rejected and its reason counted; what parses becomes a :class:`Sample` that goes
through the same ledger, pool, filters and decontamination gate as a procedural one.

Prompts run concurrently (threads, ``concurrency`` at a time; the paper used 80). Every reply
is stored in a content-addressed cache (the key hashes the model name, the messages, the
sampling settings and the episode seed, so each seed samples the teacher afresh), so a recorded
run replays identically without the model: build the teacher with ``backend=None``, the same
``cache_dir`` and the recorded ``model_id`` (the model name).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dataeng_gym.envs.actions import extract_json
from dataeng_gym.envs.domains import DIFFICULTIES, Domain
from dataeng_gym.envs.teacher import GenerationRequest, Sample
from dataeng_gym.errors import ConfigError, DataEngError
from dataeng_gym.io import write_json
from dataeng_gym.llm import ChatBackend, Completion, Message

SYSTEM_PROMPT = """\
You write training data for a small model. Reply with one JSON object only:
{"instruction": "the question", "input": "optional context, or empty", "output": "the answer"}"""

LLM_QUALITY = 0.5
"""Quality score of an LLM item: the teacher reports no confidence, so a neutral one."""

REJECTIONS = ("unparseable", "truncated", "missing_fields", "empty_output")
"""Why a reply gave no item."""


def item_prompt(domain: Domain, request: GenerationRequest, index: int) -> list[Message]:
    """The Alpaca-style prompt of the ``index``-th item of a request (pure function)."""
    skill = domain.skill(request.skill)
    d = request.difficulty
    rng = np.random.default_rng([domain.seed, 5, DIFFICULTIES.index(d), index])
    example = domain.sample(skill.name, d, rng)
    lines = [
        f"Domain: {domain.name}.",
        domain.description,
        f"Skill: {skill.name} ({skill.description}). Difficulty {d} of {DIFFICULTIES[-1]}.",
        "Write one NEW question of this skill and difficulty, in exactly the style of this "
        f"example, with its correct answer:\nQuestion: {example.question}\n"
        f"Answer: {example.answer}",
        f"The answer must match the regular expression {skill.answer_pattern!r}.",
    ]
    if request.instructions:
        lines.append(f"Instructions from the data engineer: {request.instructions}")
    lines.append(f"This is item {index + 1} of {request.count} of request {request.request_id}.")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


def parse_item(text: str, finish_reason: str) -> tuple[tuple[str, str] | None, str | None]:
    """``((question, answer), None)`` from a reply, or ``(None, rejection)``; never raises."""
    try:
        obj = json.loads(extract_json(text))
    except (json.JSONDecodeError, RecursionError):
        return None, "truncated" if finish_reason == "length" else "unparseable"
    if not isinstance(obj, dict):
        return None, "missing_fields"
    fields = {k: obj.get(k) for k in ("instruction", "input", "output")}
    for k, v in fields.items():  # "input": null means no context; a number is its digits
        if v is None:
            fields[k] = ""
        elif isinstance(v, int | float) and not isinstance(v, bool):
            fields[k] = str(v)
        elif not isinstance(v, str):
            return None, "missing_fields"
    instruction, extra, output = (fields[k].strip() for k in ("instruction", "input", "output"))
    if not instruction or "output" not in obj:
        return None, "missing_fields"
    if not output:
        return None, "empty_output"
    question = f"{instruction}\n{extra}" if extra else instruction
    return (question, output), None


class LLMTeacher:
    """The :class:`~dataeng_gym.envs.teacher.Teacher` protocol over a chat backend.

    Args:
        backend: Where prompts go; None replays from ``cache_dir`` only.
        concurrency: Prompts in flight at once.
        cache_dir: Content-addressed reply cache (None: no cache).
        max_tokens: Largest reply, in tokens.
        temperature: Sampling temperature of the teacher.
        model_id: Identity of the model in cache keys (default: ``backend.name``); needed to
            replay without a backend.
    """

    name = "llm"

    def __init__(
        self,
        backend: ChatBackend | None,
        *,
        concurrency: int = 8,
        cache_dir: str | Path | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        model_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"LLMTeacher concurrency must be >= 1, got {concurrency}")
        if backend is None and (cache_dir is None or model_id is None):
            raise ConfigError(
                "LLMTeacher needs a backend, or a cache_dir and the model_id to replay from"
            )
        self.backend, self.concurrency = backend, concurrency
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_tokens, self.temperature = max_tokens, temperature
        # the model, not the endpoint: the same model served elsewhere replays the same cache
        self.model_id = model_id or (
            getattr(backend, "model", None) or backend.name if backend is not None else ""
        )
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {
            "prompts": 0,
            "calls": 0,
            "cache_hits": 0,
            "items": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "seconds": 0.0,
            "rejected": dict.fromkeys(REJECTIONS, 0),
        }

    def generate(self, domain: Domain, request: GenerationRequest) -> list[Sample]:
        prompts = [item_prompt(domain, request, i) for i in range(request.count)]
        seed = request.episode_seed
        # threads, not asyncio.run: generate may be called from a running event loop (Jupyter)
        with ThreadPoolExecutor(self.concurrency) as pool:
            replies = list(pool.map(lambda m: self._complete(m, seed), prompts))
        samples, rejected = [], Counter[str]()
        for reply in replies:
            parsed, reason = parse_item(reply["text"], reply["finish_reason"])
            if parsed is None:
                rejected[str(reason)] += 1
                continue
            question, answer = parsed
            samples.append(
                Sample(
                    question=question,
                    answer=answer,
                    skill=request.skill,
                    difficulty=request.difficulty,
                    request_id=request.request_id,
                    teacher=self.name,
                    quality=LLM_QUALITY,
                    noise="unknown",
                )
            )
        self.stats["prompts"] += len(prompts)
        self.stats["items"] += len(samples)
        for reason, n in rejected.items():
            self.stats["rejected"][reason] += n
        return samples

    def cache_key(self, messages: list[Message], episode_seed: int = 0) -> str:
        """Content address of a prompt: model, messages, sampling settings and episode seed."""
        blob = json.dumps(
            {
                "model": self.model_id,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "episode_seed": episode_seed,
            },
            sort_keys=True,
        )
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    def _complete(self, messages: list[Message], episode_seed: int) -> dict[str, Any]:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.cache_key(messages, episode_seed)}.json"
            if path.exists():
                with self._lock:
                    self.stats["cache_hits"] += 1
                return json.loads(path.read_text())
        if self.backend is None:
            raise DataEngError(
                f"LLMTeacher replay: no cached reply for a prompt in {self.cache_dir}; the "
                "recorded run differs (domain, request or settings), or give a backend"
            )
        c: Completion = self.backend.complete(
            messages, max_tokens=self.max_tokens, temperature=self.temperature
        )
        with self._lock:
            self.stats["calls"] += 1
            self.stats["prompt_tokens"] += c.prompt_tokens
            self.stats["completion_tokens"] += c.completion_tokens
            self.stats["seconds"] += c.seconds
        reply = {"text": c.text, "finish_reason": c.finish_reason}
        if path is not None:
            write_json(path, reply)
        return reply


def add_teacher_options(parser: Any) -> None:
    """``--teacher-*`` options: an LLM teacher behind an OpenAI-compatible endpoint."""
    g = parser.add_argument_group("LLM teacher (default: the procedural teacher)")
    g.add_argument("--teacher-model", default=None, help="use an LLM teacher with this model")
    g.add_argument("--teacher-base-url", default=None, help="its OpenAI-compatible endpoint")
    g.add_argument("--teacher-concurrency", type=int, default=8, help="prompts in flight")
    g.add_argument("--teacher-cache", default=None, help="reply cache directory (replayable)")


def teacher_from_args(args: Any) -> LLMTeacher | None:
    """The LLM teacher the ``--teacher-*`` options describe, or None for the procedural one."""
    if args.teacher_model is None:
        for option in ("base_url", "cache"):
            if getattr(args, f"teacher_{option}") is not None:
                raise ConfigError(f"--teacher-{option.replace('_', '-')} needs --teacher-model")
        return None
    from dataeng_gym.llm import make_backend

    backend = make_backend("openai", args.teacher_model, args.teacher_base_url)
    return LLMTeacher(backend, concurrency=args.teacher_concurrency, cache_dir=args.teacher_cache)
