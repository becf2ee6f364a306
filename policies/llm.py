"""An LLM as a curation policy for the text twin (``dataeng_gym/DataEngText-v1``).

Each turn the model reads the rendered state and replies with JSON: one action, or a list of
actions (a plan, executed in order; the rest of a plan is dropped when the env rejects one of
its actions). A reply that does not parse or validate is re-asked with the validation message,
at most ``max_reasks`` times; then the policy returns its declared ``fallback`` action and says
why in :attr:`LLMPolicy.last_info`. Model text never makes it raise; a provider failure (after
the backend's own retries) does, as :class:`~dataeng_gym.errors.ProviderError`.

Failures are counted in the paper's categories (arXiv 2605.30407, section 4.5), adapted to
actions: ``unparseable`` (not JSON), ``truncated`` (cut at ``max_tokens``), ``invalid_action``
(fails the schema, or the env rejects it), ``insufficient_valid_samples`` (a TRAIN with too few
usable items, the paper's most common failure), ``budget_exhausted`` (not enough teacher samples
or TRAIN runs left), ``other``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from dataeng_gym.envs.actions import (
    MAX_PLAN,
    OPS,
    action_json,
    extract_json,
    parse_reply,
    reply_schema,
)
from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.llm import BACKENDS, ChatBackend, Completion, Message, make_backend

FAILURES = (
    "unparseable",
    "truncated",
    "invalid_action",
    "insufficient_valid_samples",
    "budget_exhausted",
    "other",
)
"""Failure categories, after the paper's (its code-specific ones mapped to actions)."""

SYSTEM_PROMPT = """\
You are an autonomous data engineer. A small student model must get better at a target domain;
you curate its training data through a fixed teacher model (only the teacher can add data),
then fine-tune the student on it. TRAIN fine-tunes the student from its base checkpoint on the
current pool and scores it on the public split; SUBMIT ends the run and scores the student of
your best TRAIN on hidden data. Budgets are limited: plan your teacher samples and TRAIN runs.
Reply with JSON only, no prose: one action object, or a JSON list of action objects (a plan)
that is executed in order until one of its actions is rejected."""


def classify_reply(error: str, finish_reason: str) -> str:
    """The failure category of a reply that did not give a valid action."""
    if finish_reason == "length":
        return "truncated"
    if "not valid JSON" in error:
        return "unparseable"
    return "invalid_action"


def classify_env_error(reason: str) -> str:
    """The failure category of an action the env rejected (``info["invalid_action"]``)."""
    if "insufficient valid samples" in reason:
        return "insufficient_valid_samples"
    if "left" in reason and ("teacher samples" in reason or "TRAIN runs" in reason):
        return "budget_exhausted"
    return "invalid_action"


@dataclass(frozen=True)
class LLMPolicyConfig:
    """How an LLM policy asks, re-asks and falls back."""

    max_reasks: int = 2
    """Re-asks of a reply that does not parse or validate, before the fallback."""
    max_tokens: int = 512
    """Largest reply, in tokens; a longer one is cut and counted as ``truncated``."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy where the backend allows)."""
    fallback: str = '{"op": "submit"}'
    """The action returned when every ask failed (default: end the run, keeping its best)."""
    plans: bool = True
    """Accept a JSON list of actions (a plan) as a reply."""
    max_plan: int = MAX_PLAN
    """Most actions one plan may hold."""
    structured: bool = True
    """Pass the reply's JSON schema to the backend (used by vLLM and servers that support it)."""
    echo_chars: int = 2000
    """Characters of a rejected reply shown back to the model when re-asking."""

    def __post_init__(self) -> None:
        if self.max_reasks < 0:
            raise ValueError(f"LLMPolicyConfig.max_reasks must be >= 0, got {self.max_reasks}")
        if self.max_tokens < 1 or self.max_plan < 1:
            raise ValueError("LLMPolicyConfig.max_tokens and max_plan must be >= 1")
        if self.temperature < 0:
            raise ValueError("LLMPolicyConfig.temperature must be >= 0")
        try:
            obj = json.loads(self.fallback)
        except json.JSONDecodeError as exc:
            raise ValueError(f"LLMPolicyConfig.fallback must be one JSON action: {exc}") from exc
        if not isinstance(obj, dict) or "op" not in obj:
            raise ValueError('LLMPolicyConfig.fallback must be an action object, e.g. {"op": ...}')
        if str(obj["op"]).lower() not in OPS:
            raise ValueError(
                f"LLMPolicyConfig.fallback's op must be one of {list(OPS)}, got {obj['op']!r}"
            )


class LLMPolicy:
    """A chat model choosing text actions, with re-asks, a fallback and full accounting.

    Attributes:
        stats: Totals since ``reset``: calls, tokens, seconds, transport retries, re-asks,
            fallbacks, actions, plans, and ``failures`` per category.
        last_info: What the last ``act`` did: its calls, re-asks, failure categories, whether
            it fell back and why, and whether the action came from a queued plan.
    """

    def __init__(
        self,
        config: EnvConfig | None = None,
        seed: int | None = None,
        *,
        backend: ChatBackend,
        settings: LLMPolicyConfig | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or LLMPolicyConfig()
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.queue: deque[str] = deque()
        self.last_info: dict[str, Any] = {}
        self.failures: Counter[str] = Counter()
        self.stats: dict[str, Any] = {
            "backend": self.backend.name,
            "calls": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "seconds": 0.0,
            "retries": 0,
            "reasks": 0,
            "fallbacks": 0,
            "actions": 0,
            "plans": 0,
            "failures": dict.fromkeys(FAILURES, 0),
        }
        self._own_last = False

    def act(self, observation: str, info: dict[str, Any]) -> str:
        rejected = info.get("invalid_action")
        if rejected and self._own_last:
            self._fail(classify_env_error(rejected))
            self.queue.clear()  # the rest of a plan assumed this action had worked
        self._own_last = True
        self.stats["actions"] += 1
        if self.queue:
            self.last_info = {"from_plan": True, "calls": 0}
            return self.queue.popleft()
        if "skills" not in info:
            raise ValueError(
                "LLMPolicy acts in the text twin (dataeng_gym/DataEngText-v1), whose info "
                "lists the skills an action may name; this env's info has no 'skills'"
            )
        skills = tuple(info["skills"])
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": observation},
        ]
        actions, step = self.ask(messages, skills)
        self.last_info = step
        if actions is None:
            self.stats["fallbacks"] += 1
            return self.settings.fallback
        if len(actions) > 1:
            self.stats["plans"] += 1
        texts = [json.dumps(action_json(a)) for a in actions]
        self.queue.extend(texts[1:])
        return texts[0]

    def ask(
        self, messages: list[Message], skills: tuple[str, ...]
    ) -> tuple[list[Any] | None, dict[str, Any]]:
        """Ask until a reply validates (at most ``1 + max_reasks`` calls); never raises on text.

        Returns the actions (None after the last failed ask) and a record of the asking: calls,
        failure categories, errors, the last raw reply, and ``fallback`` (the reason) on failure.
        """
        s = self.settings
        schema = reply_schema(skills, s.max_plan) if s.structured else None
        messages = list(messages)
        step: dict[str, Any] = {"from_plan": False, "calls": 0, "failures": [], "errors": []}
        for attempt in range(s.max_reasks + 1):
            if attempt:
                self.stats["reasks"] += 1
            c = self.backend.complete(
                messages, json_schema=schema, max_tokens=s.max_tokens, temperature=s.temperature
            )
            self._account(c, step)
            actions, error = parse_reply(extract_json(c.text), skills, s.max_plan)
            if actions is not None and len(actions) > 1 and not s.plans:
                actions, error = None, "reply with one action object, not a list"
            if actions is not None:
                step["reply"] = c.text
                return actions, step
            assert error is not None
            kind = classify_reply(error, c.finish_reason)
            self._fail(kind)
            step["failures"].append(kind)
            step["errors"].append(error)
            step["reply"] = c.text
            if kind == "truncated":
                error = f"your reply was cut at {s.max_tokens} tokens ({error}); reply shorter"
            messages += [
                {"role": "assistant", "content": c.text[: s.echo_chars]},
                {
                    "role": "user",
                    "content": f"Your reply was rejected: {error}. Reply again with JSON only.",
                },
            ]
        step["fallback"] = (
            f"no valid reply in {s.max_reasks + 1} asks; last error: {step['errors'][-1]}"
        )
        return None, step

    def _account(self, c: Completion, step: dict[str, Any]) -> None:
        self.stats["calls"] += 1
        self.stats["prompt_tokens"] += c.prompt_tokens
        self.stats["completion_tokens"] += c.completion_tokens
        self.stats["seconds"] += c.seconds
        self.stats["retries"] += c.retries
        step["calls"] += 1
        for key in ("prompt_tokens", "completion_tokens", "seconds", "retries"):
            step[key] = step.get(key, 0) + getattr(c, key)

    def _fail(self, kind: str) -> None:
        self.stats["failures"][kind] += 1


# --------------------------------------------------------------------------- command line


def add_llm_options(parser: argparse.ArgumentParser, *, policy: bool = True) -> None:
    """The ``--backend/--model/...`` options (``policy``: also the LLMPolicy's own)."""
    g = parser.add_argument_group("LLM backend and sampling")
    g.add_argument("--backend", default="openai", choices=BACKENDS, help="default: openai")
    g.add_argument("--model", default=None, help="model name (openai) or local model directory")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. .../v1")
    g.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="env var with the API key (openai)"
    )
    g.add_argument("--max-retries", type=int, default=3, help="transport retries (openai)")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds (openai)")
    g.add_argument("--structured", action="store_true", help="send the JSON schema (openai)")
    g.add_argument("--max-tokens", type=int, default=None, help="largest reply, in tokens")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    if policy:
        g.add_argument("--max-reasks", type=int, default=2, help="re-asks before the fallback")
        g.add_argument("--fallback", default='{"op": "submit"}', help="action if all asks fail")


def backend_from_args(args: argparse.Namespace) -> ChatBackend:
    """The chat backend the ``add_llm_options`` options describe."""
    if not args.model:
        raise ValueError("--policy llm needs --model (a model name, or a local model directory)")
    options: dict[str, Any] = {}
    if args.backend == "openai":
        options = {
            "api_key_env": args.api_key_env,
            "max_retries": args.max_retries,
            "timeout": args.request_timeout,
            "structured": args.structured,
            "seed": args.seed,
        }
    else:
        options = {"seed": args.seed}
    return make_backend(args.backend, args.model, args.base_url, **options)


def settings_from_args(args: argparse.Namespace) -> LLMPolicyConfig:
    given = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    return LLMPolicyConfig(
        max_reasks=args.max_reasks,
        fallback=args.fallback,
        **{k: v for k, v in given.items() if v is not None},
    )
