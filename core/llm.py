"""Chat backends for LLM agents and teachers, behind one small protocol.

Three backends, one call: ``complete(messages, *, json_schema, max_tokens, temperature)``.

- ``openai``: the official ``openai`` client against any OpenAI-compatible endpoint
  (``vllm serve``, ``transformers serve``, OpenAI, ...). The client retries 408/409/429/5xx,
  timeouts and refused connections with exponential backoff (honouring ``Retry-After``), up to
  ``max_retries`` times; any other 4xx is not retried. Either way a failure that is left is
  raised as :class:`~dataeng_gym.errors.ProviderError` saying what to fix.
- ``transformers``: in-process generation from a local model directory with its chat template
  (no constrained decoding: ``json_schema`` is ignored, so the text may not parse).
- ``vllm``: in-process ``vllm.LLM``; with ``json_schema`` the output is constrained to the
  schema (structured outputs), so every reply parses.

Model text is returned as it came; judging it is the caller's job (see ``LLMPolicy``).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from dataeng_gym.errors import ConfigError, MissingExtraError, ProviderError

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

BACKENDS = ("openai", "transformers", "vllm")
"""Backend kinds :func:`make_backend` builds."""


@dataclass(frozen=True)
class Completion:
    """One model reply and what it cost."""

    text: str
    """The reply text ("" when the model returned none)."""
    prompt_tokens: int
    """Tokens of the prompt, as the backend counted them (0 when a server reports no usage)."""
    completion_tokens: int
    """Tokens of the reply."""
    seconds: float
    """Wall time of the call, retries included."""
    finish_reason: str
    """``"stop"`` (the model ended its reply), ``"length"`` (cut at ``max_tokens``), or other."""
    retries: int = 0
    """Transport retries the call needed (openai backend; 0 for in-process backends)."""


class ChatBackend(Protocol):
    """Anything that completes a chat: a remote endpoint or an in-process model."""

    name: str
    """Short description for logs, e.g. ``"openai:http://127.0.0.1:8000/v1:my-model"``."""

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> Completion:
        """Reply to ``messages``; ``json_schema`` constrains the reply where the backend can."""
        ...


class OpenAIBackend:
    """An OpenAI-compatible chat endpoint through the official ``openai`` client.

    Args:
        model: Model name the server knows (for ``transformers serve``, the served path).
        base_url: Endpoint root, e.g. ``http://127.0.0.1:8000/v1`` (None: OpenAI's).
        api_key_env: Environment variable holding the API key; when unset, a dummy key is
            sent, which local servers accept.
        max_retries: Retries of 408/409/429/5xx responses, timeouts and connection errors.
        timeout: Seconds one HTTP request may take before it counts as a timeout.
        structured: Send ``json_schema`` as ``response_format`` (for servers that support it,
            e.g. vLLM and OpenAI); off by default because not every server accepts it.
        seed: Sampling seed: request k (counting from 0) sends ``seed + k``, so repeated asks
            at a temperature above 0 can differ and a run's sequence is still reproducible
            (servers may ignore it).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_retries: int = 3,
        timeout: float = 120.0,
        structured: bool = False,
        seed: int | None = None,
    ) -> None:
        if max_retries < 0 or timeout <= 0:
            raise ConfigError("OpenAIBackend needs max_retries >= 0 and timeout > 0")
        try:
            import openai
        except ImportError as exc:
            raise MissingExtraError("openai", "llm") from exc
        self._openai = openai
        self.model, self.base_url, self.structured, self.seed = model, base_url, structured, seed
        self._calls = itertools.count()  # next() is atomic: an LLM teacher calls from threads
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "not-needed-for-local-servers",
            max_retries=max_retries,
            timeout=timeout,
        )
        self.name = f"openai:{base_url or 'api.openai.com'}:{model}"

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> Completion:
        openai = self._openai
        extra: dict[str, Any] = {}
        if self.structured and json_schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": json_schema},
            }
        call = next(self._calls)
        if self.seed is not None:
            extra["seed"] = self.seed + call
        start = time.perf_counter()
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                **extra,
            )
        except openai.APIStatusError as exc:
            code = exc.status_code
            retryable = code in (408, 409, 429) or code >= 500
            fix = (
                "the server kept failing after the client's retries; try again later or raise "
                "max_retries"
                if retryable
                else "the request was refused and not retried; check the model name, the "
                "base URL and the API key"
            )
            raise ProviderError(
                f"{self.name}: HTTP {code}: {_detail(exc)}; {fix}", code, retryable
            ) from exc
        except openai.APITimeoutError as exc:
            raise ProviderError(
                f"{self.name}: timed out after {self.client.timeout}s and "
                f"{self.client.max_retries} retries; raise timeout or check the server",
                None,
                True,
            ) from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(
                f"{self.name}: cannot connect ({exc}); is the server running at {self.base_url}?",
                None,
                True,
            ) from exc
        try:
            response = raw.parse()
        except (ValueError, openai.APIError) as exc:  # a 200 whose body is not a completion
            raise ProviderError(
                f"{self.name}: malformed response ({exc.__class__.__name__}: {exc}); "
                "is this an OpenAI-compatible chat endpoint?",
                200,
            ) from exc
        seconds = time.perf_counter() - start
        if not getattr(response, "choices", None):
            shown = repr(response)[:300]
            raise ProviderError(f"{self.name}: the response has no choices: {shown}", 200)
        choice = response.choices[0]
        text = _message_text(getattr(choice, "message", None))
        if text is None:
            raise ProviderError(
                f"{self.name}: malformed response, its first choice has no message text: "
                f"{repr(choice)[:300]}; is this an OpenAI-compatible chat endpoint?",
                200,
            )
        usage = response.usage
        return Completion(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=seconds,
            finish_reason=getattr(choice, "finish_reason", None) or "unknown",
            retries=raw.retries_taken,
        )


def _message_text(message: Any) -> str | None:
    """A chat message's text: a string, or text parts joined; None when it has neither.

    Servers differ: content may be null (an empty reply), a string, or a list of parts.
    """
    if message is None or not hasattr(message, "content"):
        return None
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = (
            p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content
        )
        return "".join(p for p in parts if isinstance(p, str))
    return None


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or inner)
        return str(inner)
    return str(getattr(exc, "message", exc))


class TransformersBackend:
    """In-process generation from a local model directory, with its chat template.

    Args:
        model: Path of a directory ``AutoModelForCausalLM`` and ``AutoTokenizer`` load; the
            tokenizer must have a chat template.
        device: Torch device.
        seed: Seed of sampling (used when ``temperature > 0``): call k (counting from 0) samples
            with ``seed + k``, so repeated asks differ and a run's sequence is reproducible.
    """

    def __init__(self, model: str, *, device: str = "cpu", seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not os.path.isdir(model):
            raise ConfigError(
                f"TransformersBackend loads a local model directory; {model!r} is not one"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if not self.tokenizer.chat_template:
            raise ConfigError(f"the tokenizer in {model!r} has no chat template; add one")
        self.model = AutoModelForCausalLM.from_pretrained(model).to(device).eval()
        self.device, self.seed, self._calls = device, seed, itertools.count()
        self._torch = torch
        self.name = f"transformers:{model}"

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> Completion:
        torch = self._torch
        start = time.perf_counter()
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        n_prompt = int(inputs["input_ids"].shape[1])
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        )
        torch.manual_seed(self.seed + next(self._calls))
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **({"do_sample": False} | sampling),
            )
        new = out[0, n_prompt:]
        eos = self.tokenizer.eos_token_id
        ended = eos is not None and len(new) > 0 and int(new[-1]) == eos
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            prompt_tokens=n_prompt,
            completion_tokens=int(len(new)),
            seconds=time.perf_counter() - start,
            finish_reason="stop" if ended or len(new) < max_tokens else "length",
        )


class VLLMBackend:
    """In-process ``vllm.LLM``; ``json_schema`` turns on structured outputs.

    Args:
        model: Local model directory (or a name vLLM can load).
        seed: Engine seed.
        **engine: Further ``vllm.LLM`` arguments (``max_model_len``, ``dtype``, ...).
    """

    def __init__(self, model: str, *, seed: int = 0, **engine: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm") from exc
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as exc:
            raise ConfigError(
                f"vllm {vllm.__version__} has no StructuredOutputsParams (structured outputs); "
                "upgrade vllm"
            ) from exc
        self._vllm, self._structured = vllm, StructuredOutputsParams
        self.llm = vllm.LLM(model=model, seed=seed, **engine)
        self.name = f"vllm:{model}"

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> Completion:
        params = self._vllm.SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            structured_outputs=(
                self._structured(json=json_schema) if json_schema is not None else None
            ),
        )
        start = time.perf_counter()
        result = self.llm.chat([messages], sampling_params=params, use_tqdm=False)[0]
        out = result.outputs[0]
        return Completion(
            text=out.text,
            prompt_tokens=len(result.prompt_token_ids or ()),
            completion_tokens=len(out.token_ids),
            seconds=time.perf_counter() - start,
            finish_reason=out.finish_reason or "unknown",
        )


def make_backend(kind: str, model: str, base_url: str | None = None, **options: Any) -> ChatBackend:
    """Build a backend by kind (one of :data:`BACKENDS`); ``options`` go to its constructor."""
    if kind == "openai":
        return OpenAIBackend(model, base_url, **options)
    if base_url is not None:
        raise ConfigError(f"base_url is only for the openai backend, not {kind!r}")
    if kind == "transformers":
        return TransformersBackend(model, **options)
    if kind == "vllm":
        return VLLMBackend(model, **options)
    raise ConfigError(f"unknown backend {kind!r}; choose one of: {', '.join(BACKENDS)}")
