"""The Policy protocol every curation policy implements, whether hand-written, learned or an LLM."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Policy(Protocol):
    """Chooses the next action from an observation; ``reset`` starts a new episode."""

    def reset(self, seed: int | None = None) -> None:
        """Forget the last episode; seed any randomness the policy has."""
        ...

    def act(self, observation: Any, info: dict[str, Any]) -> Any:
        """The next action for the env that produced ``observation`` and ``info``."""
        ...
