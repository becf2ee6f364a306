"""The text twin's action language: one JSON object per action, or a JSON list of them (a plan).

The language is a pydantic schema per domain (the ``skill`` field is an enum of the domain's
skills); its JSON schema is printed in the prompt and given to backends with structured
outputs. Parsing never raises on any text: it returns ``(None, reason)``, and the reason names
the field and the values it allows, so it can be sent back to a model as is.
"""

# no `from __future__ import annotations`: pydantic resolves the models' annotations eagerly

import json
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dataeng_gym.envs.data_env import Action, Op
from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.pool import ORDERS

MAX_AMOUNT = 1000
"""Largest ``amount`` one text action may ask for."""

MAX_PLAN = 60
"""Most actions one plan may hold."""

_MAX_JSON_STARTS = 64
"""Most ``{``/``[`` positions of one reply segment that extract_json tries to decode from."""

OPS = tuple(op.name.lower() for op in Op)
"""The ``op`` values, in :class:`Op` order."""


def _rules(skills: tuple[str, ...]) -> dict[str, str]:
    """What each field allows, in the words error messages use."""
    lo, hi = DIFFICULTIES[0], DIFFICULTIES[-1]
    return {
        "op": f"one of {list(OPS)}",
        "skill": f"one of {list(skills)}",
        "difficulty": f"an integer in {lo}..{hi}",
        "amount": f"an integer in 1..{MAX_AMOUNT}",
        "threshold": "a number in 0.0..1.0",
        "weight": "a number in 0.0..2.0",
        "strategy": f"one of {list(ORDERS)}",
        "instructions": "a string of at most 2000 characters",
    }


@lru_cache(maxsize=32)
def action_models(skills: tuple[str, ...]) -> dict[str, type[BaseModel]]:
    """The pydantic model of each op's action for a domain with ``skills``."""
    Skill = Literal[skills]  # type: ignore[valid-type]  # noqa: N806
    Strategy = Literal[ORDERS]  # type: ignore[valid-type]  # noqa: N806
    lo, hi = DIFFICULTIES[0], DIFFICULTIES[-1]
    strict = ConfigDict(strict=True, extra="ignore")

    class Generate(BaseModel):
        """Ask the teacher for new items of one skill and difficulty (1 sample each)."""

        model_config = strict
        op: Literal["generate"]
        skill: Skill  # type: ignore[valid-type]
        difficulty: int = Field(ge=lo, le=hi)
        amount: int = Field(ge=1, le=MAX_AMOUNT)
        instructions: str = Field("", max_length=2000, description="free text for the teacher")

    class Verify(BaseModel):
        """Check up to `amount` unverified items with the solver (1 teacher sample each)."""

        model_config = strict
        op: Literal["verify"]
        amount: int = Field(ge=1, le=MAX_AMOUNT)

    class Filter(BaseModel):
        """Drop malformed, off-skill, verified-wrong and below-`threshold` quality items."""

        model_config = strict
        op: Literal["filter"]
        threshold: float = Field(ge=0.0, le=1.0)

    class Dedup(BaseModel):
        """Drop exact and near duplicates."""

        model_config = strict
        op: Literal["dedup"]

    class Decontaminate(BaseModel):
        """Drop items that overlap the evaluation sets."""

        model_config = strict
        op: Literal["decontaminate"]

    class Mix(BaseModel):
        """Weight a skill in training: 0 drops it, 0.5 halves it, 2 repeats it."""

        model_config = strict
        op: Literal["mix"]
        skill: Skill  # type: ignore[valid-type]
        weight: float = Field(ge=0.0, le=2.0)

    class Order(BaseModel):
        """Set the training order."""

        model_config = strict
        op: Literal["order"]
        strategy: Strategy  # type: ignore[valid-type]

    class Train(BaseModel):
        """Fine-tune the student on the pool and score it on the public split."""

        model_config = strict
        op: Literal["train"]

    class Submit(BaseModel):
        """End: the best TRAIN is scored on hidden data."""

        model_config = strict
        op: Literal["submit"]

    models = (Generate, Verify, Filter, Dedup, Decontaminate, Mix, Order, Train, Submit)
    return {name: model for name, model in zip(OPS, models)}


def _union(skills: tuple[str, ...]) -> Any:
    models = tuple(action_models(skills).values())
    return Annotated[Union[models], Field(discriminator="op")]  # noqa: UP007


def _untitled(schema: Any) -> Any:
    """The schema without pydantic's ``title`` keys (noise in a prompt)."""
    if isinstance(schema, dict):
        return {
            k: _untitled(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


@lru_cache(maxsize=32)
def action_schema(skills: tuple[str, ...]) -> dict[str, Any]:
    """JSON schema of one action."""
    return _untitled(TypeAdapter(_union(skills)).json_schema())


@lru_cache(maxsize=32)
def plan_schema(skills: tuple[str, ...], max_len: int = MAX_PLAN) -> dict[str, Any]:
    """JSON schema of a plan: a list of 1 to ``max_len`` actions."""
    plan = Annotated[list[_union(skills)], Field(min_length=1, max_length=max_len)]
    return _untitled(TypeAdapter(plan).json_schema())


@lru_cache(maxsize=32)
def reply_schema(skills: tuple[str, ...], max_len: int = MAX_PLAN) -> dict[str, Any]:
    """JSON schema of a reply that is one action or a plan."""
    plan = Annotated[list[_union(skills)], Field(min_length=1, max_length=max_len)]
    return _untitled(TypeAdapter(Union[_union(skills), plan]).json_schema())  # noqa: UP007


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was.

    Error messages and history lines echo agent input, and a text observation has a maximum
    length.
    """
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validate_action(obj: Any, skills: tuple[str, ...]) -> tuple[Action | None, str | None]:
    """Validate one decoded JSON value as an action; ``(None, reason)`` when it is not one."""
    if not isinstance(obj, dict):
        return None, f"an action must be a JSON object, got {type(obj).__name__}"
    rules = _rules(skills)
    op = obj.get("op")
    if not isinstance(op, str) or op.lower() not in OPS:
        return None, f"field 'op' must be {rules['op']}, got {op!r}"
    op = op.lower()
    model = action_models(skills)[op]
    try:
        valid = model.model_validate({**obj, "op": op})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "op"
        rule = rules.get(name, "valid")
        if err["type"] == "missing":
            return None, f"field {name!r} is required for op {op!r}: {rule}"
        return None, f"field {name!r} must be {rule}, got {clip(repr(err.get('input')))}"
    fields = valid.model_dump()
    fields["op"] = Op[op.upper()]
    if "strategy" in fields:
        fields["order"] = fields.pop("strategy")
    return Action(**fields), None


def _loads(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"the reply is not valid JSON ({exc.__class__.__name__}: {exc})"


def parse_action(text: str, skills: tuple[str, ...]) -> tuple[Action | None, str | None]:
    """Parse one JSON action; on any problem return ``(None, reason)``, never raise."""
    obj, error = _loads(text)
    if error is not None:
        return None, error
    return validate_action(obj, skills)


def parse_reply(
    text: str, skills: tuple[str, ...], max_len: int = MAX_PLAN
) -> tuple[list[Action] | None, str | None]:
    """Parse one action or a plan (a JSON list) into a list of actions; never raises."""
    obj, error = _loads(text)
    if error is not None:
        return None, error
    if not isinstance(obj, list):
        action, error = validate_action(obj, skills)
        return ([action] if action is not None else None), error
    if not 1 <= len(obj) <= max_len:
        return None, f"a plan must hold 1..{max_len} actions, got {len(obj)}"
    actions = []
    for i, item in enumerate(obj):
        action, error = validate_action(item, skills)
        if action is None:
            return None, f"plan item {i} (counting from 0): {error}"
        actions.append(action)
    return actions, None


def extract_json(text: str) -> str:
    """The JSON part of a model reply: the first object, or list of objects, that decodes.

    Models wrap JSON in fences and prose, and the prose may hold brackets ("skills [a, b]") or
    a fence of plain text may come first; so each fenced block, then the whole reply, is tried
    from every ``{`` and ``[`` in turn. Never raises. When nothing decodes, the first fenced
    block (or the reply) is returned from its first ``{``/``[`` on, stripped, for the parser to
    reject with its reason.
    """
    blocks = [b.removeprefix("json").removeprefix("JSON") for b in text.split("```")[1::2]]
    decoder = json.JSONDecoder()
    for segment in (*blocks, text):
        starts = [i for i, ch in enumerate(segment) if ch in "{["][:_MAX_JSON_STARTS]
        skip_to = 0
        for start in starts:
            if start < skip_to:
                continue  # inside a bracket that did not decode: a cut or broken plan's item
            try:
                value, end = decoder.raw_decode(segment, start)
            except (json.JSONDecodeError, RecursionError):
                skip_to = _bracket_end(segment, start)
                continue
            if isinstance(value, dict) or (
                isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
            ):
                return segment[start:end]
            skip_to = end
    segment = blocks[0] if blocks else text
    starts = [i for i in (segment.find("{"), segment.find("[")) if i >= 0]
    return segment[min(starts, default=0) :].strip()


def _bracket_end(text: str, start: int) -> int:
    """Where the bracket opened at ``start`` closes (JSON strings skipped); the end if never.

    Prose such as "skills [a, b]" closes soon, so the JSON after it is still tried; a plan cut
    at the token limit never closes, so no item of it is taken for the whole reply.
    """
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def action_json(action: Action) -> dict[str, Any]:
    """The JSON object of an action, as the text twin reads it (only its op's fields)."""
    out: dict[str, Any] = {"op": action.op.name.lower()}
    if action.op in (Op.GENERATE, Op.MIX):
        out["skill"] = action.skill
    if action.op == Op.GENERATE:
        out["difficulty"] = action.difficulty
    if action.op in (Op.GENERATE, Op.VERIFY):
        out["amount"] = action.amount
    if action.op == Op.GENERATE and action.instructions:
        out["instructions"] = action.instructions
    if action.op == Op.FILTER:
        out["threshold"] = action.threshold
    if action.op == Op.MIX:
        out["weight"] = action.weight
    if action.op == Op.ORDER:
        out["strategy"] = action.order
    return out
