"""Real OpenAI-compatible HTTP servers on 127.0.0.1 for the LLM tests (a pytest plugin).

- ``served_tiny_model``: ``transformers serve`` (a subprocess) serving a tiny random Llama that
  the fixture builds from a config, with a character tokenizer and a chat template made in code.
  Fully offline. Its replies are nonsense, which is what exercises re-asks and fallbacks.
- ``scripted_server``: a small stdlib HTTP server that answers ``/v1/chat/completions`` from a
  script of replies: HTTP errors, delays (timeouts), cut-off or malformed text, valid actions.
  It records every request it got, with the client's ``x-stainless-retry-count`` header.
"""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

VLLM_CPU = {"gpu_memory_utilization": 0.1, "enforce_eager": True}
"""vLLM engine options for the tiny test model: on the CPU backend the "GPU" memory fraction
reserves that share of host memory (its default, 0.92, fails on a shared box), and eager mode
skips compilation, which a 2-layer model does not need."""


def build_tiny_chat_model(out: Path, seed: int = 0) -> Path:
    """A random 1-layer Llama with a character tokenizer and a chat template, saved to ``out``."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list(string.printable))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,  # head_dim 64: vLLM's CPU attention has no kernel for 16
        num_key_value_heads=1,
        max_position_embeddings=32768,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))


@pytest.fixture(scope="session")
def served_tiny_model(tiny_model_dir, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """``(base_url, model)`` of ``transformers serve`` serving the tiny model on loopback."""
    pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
    pytest.importorskip("uvicorn", reason="transformers serve needs transformers[serving]")
    exe = Path(sys.executable).parent / "transformers"
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(exe), "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "cpu"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after 240 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Reply:
    """One scripted answer of the fake endpoint."""

    content: str = ""
    status: int = 200
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client timeout: a timeout)."""
    error: str = "scripted error"
    body: bytes | None = None
    """Raw response body sent as is (e.g. JSON cut in the middle), instead of a built one."""


class ScriptedServer:
    """An OpenAI-compatible chat endpoint that answers from a script, on 127.0.0.1.

    ``replies`` is consumed in order; when it is empty, ``default`` answers (by default a 500
    saying the script ran out, so a test that calls too often fails loudly).
    """

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Callable[[dict[str, Any]], Reply] = lambda _req: Reply(
            status=500, error="script exhausted"
        )
        self.requests: list[dict[str, Any]] = []
        self.retry_counts: list[int] = []
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(body)
                    server.retry_counts.append(int(self.headers.get("x-stainless-retry-count", 0)))
                    reply = server.replies.popleft() if server.replies else server.default(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body, reply)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body: dict[str, Any], reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    payload = {"error": {"message": reply.error, "type": "scripted"}}
                else:
                    payload = {
                        "id": f"chatcmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.content},
                                "finish_reason": reply.finish_reason,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": sum(
                                len(m.get("content", "")) for m in body.get("messages", [])
                            ),
                            "completion_tokens": len(reply.content),
                            "total_tokens": 0,
                        },
                    }
                data = json.dumps(payload).encode() if reply.body is None else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a scripted timeout)

        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def push(self, *replies: Reply | str) -> None:
        """Queue replies (a string is a 200 answer with that content)."""
        self.replies.extend(Reply(r) if isinstance(r, str) else r for r in replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()
