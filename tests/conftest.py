import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_and_cached(tmp_path_factory):
    """Tests run offline, with W&B disabled and base checkpoints cached for this session only."""
    os.environ.setdefault("DATAENG_GYM_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


# real OpenAI-compatible servers on loopback, for the LLM tests (tests/llm_servers.py)
pytest_plugins = ["llm_servers"]
