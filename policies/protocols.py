"""The paper's two agent protocols, One-Shot and Iterative, over the text twin.

In arXiv 2605.30407 an agent writes a whole data-curation program; the platform runs it, checks
the submission (at least 1,000 valid items), trains the student on it and scores it. Here a
program is a *plan*, a JSON list of curation actions; a *submission* runs the plan on a fresh
episode (same seed, full per-episode budgets: the paper's per-iteration limit), then TRAINs the
student on the pool and SUBMITs. The submission is valid when that TRAIN is accepted (at least
``min_train_items`` usable items: the paper's validity rule). A plan that asks for more teacher
samples than are left is stopped there, as the paper's platform kills a run over its API budget.

- **One-Shot** (paper section 2.4): one prompt, one whole plan; up to ``max_attempts`` (8)
  independent attempts; the first valid submission ends the run.
- **Iterative** (AIDE-style): *Draft* a plan; *Debug* when the reply could not be used (no JSON,
  cut off, schema errors); *Repair* when the submission failed validation; *Improve* the node
  with the best public score so far, shown with its plan, per-skill scores and bad cases. After
  ``max_repairs`` (3) consecutive Debug/Repair steps the loop starts again from Draft; at most
  ``max_iterations`` (30) model calls. The result is the best-public valid node.

Both record every node (plan, validity, failure category, public and private scores, model
cost), MATS (attempts per valid submission; None when none was valid) and the failure counts
in the categories of :data:`~dataeng_gym.policies.llm.FAILURES`. Private scores are recorded
for the paper's per-iteration curves and never shown to the agent. With an output directory,
``nodes.jsonl`` grows as nodes finish, and a run cut off (a crash, a dead endpoint, Ctrl-C)
resumes from its last node when run again with the same settings (``run.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dataeng_gym.envs.actions import MAX_PLAN, action_json, plan_schema, validate_action
from dataeng_gym.envs.data_env import Action, Op
from dataeng_gym.envs.text import DataEngTextEnv, render_state
from dataeng_gym.errors import ProviderError
from dataeng_gym.io import (
    append_jsonl,
    changed_fields,
    keep_earlier,
    read_jsonl,
    write_json,
    write_jsonl,
)
from dataeng_gym.llm import ChatBackend, Message
from dataeng_gym.policies.llm import FAILURES, LLMPolicy, LLMPolicyConfig

PROTOCOLS = ("one-shot", "iterative")

SYSTEM_PROMPT = """\
You are an autonomous data engineer. A small student model must get better at a target domain.
You write a data-curation plan: a JSON list of actions that asks a fixed teacher model for
training items (only the teacher can add data) and cleans, mixes and orders them. The platform
runs your plan on an empty pool, fine-tunes the student on the result and scores it on a public
test split. The submission is valid only if enough usable items remain after your plan.
Reply with the JSON list only, no prose."""


def plan_request(max_plan: int) -> str:
    """The closing instructions of every protocol prompt."""
    return (
        f"## Your plan\nReply with a JSON list of at most {max_plan} actions, run in order on "
        "an empty pool. Do not include train or submit: the platform trains the student on "
        "the pool after your plan, and the run is stopped where a step asks for more teacher "
        "samples than are left. Your list is validated against this JSON schema:"
    )


@dataclass(frozen=True)
class ProtocolConfig:
    """Caps and sampling of the paper's protocols."""

    max_attempts: int = 8
    """One-Shot: independent attempts; the first valid submission ends the run (paper: 8)."""
    max_iterations: int = 30
    """Iterative: model calls, each one a Draft, Debug, Repair or Improve (paper: 30)."""
    max_repairs: int = 3
    """Iterative: consecutive Debug/Repair steps before a new Draft (paper: 3)."""
    max_tokens: int = 2048
    """Largest reply, in tokens; a longer one is cut and counts as ``truncated``."""
    temperature: float = 0.7
    """Sampling temperature: independent attempts should differ."""
    structured: bool = True
    """Pass the plan's JSON schema to the backend (used by vLLM and servers that support it)."""
    echo_chars: int = 4000
    """Characters of a failed reply shown back to the model in a Debug prompt."""

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_iterations", "max_repairs", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProtocolConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError("ProtocolConfig.temperature must be >= 0")


LLM_COUNTS = ("calls", "prompt_tokens", "completion_tokens", "seconds", "retries")
"""What a node keeps of its model calls; a resumed run adds them back into the totals."""


@dataclass
class Node:
    """One model call of a protocol and, when its reply was a plan, the submission it made."""

    index: int
    stage: str
    """``attempt`` (One-Shot), or ``draft``, ``debug``, ``repair``, ``improve`` (Iterative)."""
    parent: int | None
    """The node a Debug, Repair or Improve started from."""
    reply: str
    plan: list[dict[str, Any]] | None = None
    valid: bool = False
    failure: str | None = None
    """One of :data:`FAILURES`, or None for a valid submission."""
    error: str | None = None
    """What went wrong, in words the model is shown."""
    public: float | None = None
    """Public accuracy of the student trained on the submission."""
    private: float | None = None
    """Private accuracy the env reports for the submission's episode: its TRAIN's student, or
    the base student when that TRAIN did not beat the base on public. Never shown to the agent."""
    gain_rel: float | None = None
    teacher_samples: int = 0
    invalid_steps: list[str] = field(default_factory=list)
    """Env-rejected plan steps that did not stop the run (e.g. DEDUP of an empty pool)."""
    llm: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    """The rendered state after the submission's TRAIN: what Repair and Improve show."""
    seconds: float = 0.0


def execute(env: DataEngTextEnv, plan: list[Action], seed: int) -> dict[str, Any]:
    """Run a plan as one submission on a fresh episode; return its outcome.

    TRAIN and SUBMIT inside a plan are skipped (the platform trains once, after the plan).
    """
    env.reset(seed=seed)
    invalid: list[str] = []
    failure = error = None
    for a in plan:
        if a.op in (Op.TRAIN, Op.SUBMIT):
            continue
        _, _, terminated, truncated, info = env.step(json.dumps(action_json(a)))
        reason = info["invalid_action"]
        if reason and "left" in reason and "teacher samples" in reason:
            failure, error = "budget_exhausted", f"run stopped at {action_json(a)}: {reason}"
            break
        if reason:
            invalid.append(f"{action_json(a)}: {reason}")
        if terminated or truncated:
            failure, error = "budget_exhausted", "the plan used every step of the episode"
            break
    public = None
    if failure is None:
        _, _, terminated, _, info = env.step('{"op": "train"}')
        reason = info["invalid_action"]
        if reason:
            failure = "insufficient_valid_samples" if "insufficient" in reason else "other"
            error = f"the submission failed validation: {reason}"
        else:
            public = info["public"]
    feedback = render_state(env, ask="")
    final = info if env.done else env.step('{"op": "submit"}')[4]
    return {
        "valid": failure is None,
        "failure": failure,
        "error": error,
        "public": public,
        "private": final["final_private"] if failure is None else None,
        "gain_rel": final["gain_rel"] if failure is None else None,
        "teacher_samples": final["teacher_samples"],
        "invalid_steps": invalid,
        "feedback": feedback,
        "base": {k: final[k] for k in ("base_public", "base_private")},
    }


class ProtocolRun:
    """State shared by both protocols: the env, the asking policy, the nodes, the output."""

    def __init__(
        self,
        env: DataEngTextEnv,
        backend: ChatBackend,
        config: ProtocolConfig,
        *,
        seed: int,
        out: str | Path | None,
        protocol: str,
    ) -> None:
        self.env, self.config, self.seed, self.protocol = env, config, seed, protocol
        self.out = Path(out) if out else None
        self.max_plan = min(MAX_PLAN, env.config.max_steps - 2)
        if self.max_plan < 1:
            raise ValueError("protocols need an env with max_steps >= 3 (a plan, TRAIN, SUBMIT)")
        self.asker = LLMPolicy(
            backend=backend,
            settings=LLMPolicyConfig(
                max_reasks=0,  # a protocol's next step is its re-ask: Debug, or a new attempt
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                max_plan=self.max_plan,
                structured=config.structured,
            ),
        )
        self.nodes: list[Node] = []
        self.base: dict[str, float] = {}
        self.start = time.perf_counter()
        self.kept_seconds = 0.0
        """Seconds the nodes kept from a cut-off run took."""
        _, info = env.reset(seed=seed)
        self.skills = tuple(info["skills"])
        self.task = render_state(env, ask="")  # the task as first seen: empty pool, full budgets
        if self.out is not None:
            self._resume()

    def _resume(self) -> None:
        """Keep the nodes of a cut-off run with the same settings; otherwise start afresh.

        Each node's submission ran on a fresh episode of the same seed, so the kept nodes are
        what the protocol would have; the next model call sees the same context it would have
        seen (the model's reply may differ, as it may on any rerun at temperature > 0).
        """
        assert self.out is not None
        settings = {
            "protocol": self.protocol,
            "seed": self.seed,
            "backend": self.asker.backend.name,
            "config": asdict(self.config),
            "env_config": asdict(self.env.config),
        }
        nodes_path, settings_path = self.out / "nodes.jsonl", self.out / "run.json"
        kept: list[Node] = []
        afresh = False  # over an earlier run that cannot be resumed
        if nodes_path.exists() and nodes_path.stat().st_size:
            afresh = changed_fields(settings_path, settings) != {}
            try:
                kept = [] if afresh else [Node(**r) for r in read_jsonl(nodes_path)]
            except TypeError:  # written by a version with other node fields
                afresh = True
            if [n.index for n in kept] != list(range(len(kept))):
                kept, afresh = [], True  # not one run's nodes in order
        if afresh:  # the earlier run's files are kept, not lost to a rerun that may fail
            keep_earlier(self.out / name for name in ("nodes.jsonl", "run.json", "summary.json"))
        while kept and kept[-1].failure == "other" and not kept[-1].llm.get("calls"):
            kept.pop()  # the endpoint, not the model, failed last: ask those calls again
        write_jsonl(nodes_path, [asdict(node) for node in kept])  # a torn last line is gone
        write_json(settings_path, settings)
        for node in kept:
            if node.plan is not None:  # JSONL sorts keys; prompts show a plan in action order
                node.plan = [_in_action_order(a, self.skills) for a in node.plan]
            self.nodes.append(node)
            self.kept_seconds += node.seconds
            for key, value in node.llm.items():
                self.asker.stats[key] = self.asker.stats.get(key, 0) + value

    def ask_plan(self, stage: str, parent: int | None, context: str) -> Node:
        """One model call for a whole plan, and its submission when the plan parses."""
        start = time.perf_counter()
        schema = json.dumps(plan_schema(self.skills, self.max_plan))  # with its $defs
        prompt = f"{context}\n\n{plan_request(self.max_plan)}\n{schema}"
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        node = Node(len(self.nodes), stage, parent, reply="")
        try:
            actions, step = self.asker.ask(messages, self.skills)
        except ProviderError as exc:
            if not exc.retryable:
                raise
            node.failure, node.error = "other", str(exc)
            return self._record(node, start)
        node.reply = step.get("reply", "")
        node.llm = {k: step.get(k, 0) for k in LLM_COUNTS}
        if actions is None:
            node.failure, node.error = step["failures"][-1], step["errors"][-1]
            return self._record(node, start)
        node.plan = [action_json(a) for a in actions]
        outcome = execute(self.env, actions, self.seed)
        self.base = outcome.pop("base")
        for key, value in outcome.items():
            setattr(node, key, value)
        return self._record(node, start)

    def _record(self, node: Node, start: float) -> Node:
        node.seconds = time.perf_counter() - start
        self.nodes.append(node)
        if self.out is not None:
            append_jsonl(self.out / "nodes.jsonl", asdict(node))
        return node

    def best(self) -> Node | None:
        """The valid node with the best public score (the earliest among ties)."""
        valid = [n for n in self.nodes if n.valid]
        return max(valid, key=lambda n: (n.public, -n.index)) if valid else None

    def base_scores(self) -> dict[str, float]:
        """The base student's public and private scores.

        From the last submission; when no plan ran in this process (none did, or the run
        resumed), scored through the env.
        """
        if not self.base:
            self.env.reset(seed=self.seed)
            final = self.env.step('{"op": "submit"}')[4]
            self.base = {k: final[k] for k in ("base_public", "base_private")}
        return self.base

    def summary(self) -> dict[str, Any]:
        best = self.best()
        attempts = len(self.nodes)
        successes = sum(n.valid for n in self.nodes)
        failures = Counter(n.failure for n in self.nodes if n.failure)
        base = self.base_scores()
        base_public, base_private = base["base_public"], base["base_private"]
        final_private = best.private if best else base_private
        assert final_private is not None
        curve, best_public, best_private = [], base_public, base_private
        for n in self.nodes:
            if n.valid and n.public is not None and n.public > best_public:
                best_public, best_private = n.public, n.private
            curve.append(
                {
                    "node": n.index,
                    "public": n.public,
                    "private": n.private,
                    "best_public": best_public,
                    "final_private": best_private,
                }
            )
        result = {
            "protocol": self.protocol,
            "domain": self.env.domain.name if self.env.domain else None,
            "seed": self.seed,
            "backend": self.asker.backend.name,
            "attempts": attempts,
            "successes": successes,
            "mats": attempts / successes if successes else None,
            "failures": {k: failures.get(k, 0) for k in FAILURES},
            "stages": [n.stage for n in self.nodes],
            "best_node": best.index if best else None,
            "base_public": base_public,
            "base_private": base_private,
            # as the env's SUBMIT: a best TRAIN below the base leaves the base student
            "final_public": max(best.public, base_public) if best else base_public,
            "final_private": final_private,
            "gain_abs": final_private - base_private,
            "gain_rel": best.gain_rel if best else 0.0,
            "teacher_samples": sum(n.teacher_samples for n in self.nodes),
            "llm": {k: v for k, v in self.asker.stats.items() if k != "failures"},
            "curve": curve,
            "config": asdict(self.config),
            "env_config": asdict(self.env.config),
            "wall_seconds": self.kept_seconds + time.perf_counter() - self.start,
        }
        if self.out is not None:
            write_json(self.out / "summary.json", result)
        return result


def _in_action_order(obj: dict[str, Any], skills: tuple[str, ...]) -> dict[str, Any]:
    """A plan step read back from JSONL, its keys in the order :func:`action_json` writes."""
    action, _ = validate_action(obj, skills)
    return action_json(action) if action is not None else obj


def run_one_shot(
    env: DataEngTextEnv,
    backend: ChatBackend,
    config: ProtocolConfig | None = None,
    *,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """One-Shot: independent whole-plan attempts until the first valid submission."""
    config = config or ProtocolConfig()
    run = ProtocolRun(env, backend, config, seed=seed, out=out, protocol="one-shot")
    if not any(n.valid for n in run.nodes):  # a resumed run may be done already
        for _ in range(len(run.nodes), config.max_attempts):
            if run.ask_plan("attempt", None, run.task).valid:
                break
    return run.summary()


def run_iterative(
    env: DataEngTextEnv,
    backend: ChatBackend,
    config: ProtocolConfig | None = None,
    *,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Iterative (AIDE-style): Draft, Debug, Repair and Improve from the best-public node."""
    config = config or ProtocolConfig()
    run = ProtocolRun(env, backend, config, seed=seed, out=out, protocol="iterative")
    last: Node | None = run.nodes[-1] if run.nodes else None  # resumed: the kept nodes' state
    fixes = 0  # consecutive Debug/Repair steps
    for node in reversed(run.nodes):
        if node.stage not in ("debug", "repair"):
            break
        fixes += 1
    for i in range(len(run.nodes), config.max_iterations):
        header = f"## Iteration {i + 1} of {config.max_iterations}"
        best = run.best()
        if last is not None and not last.valid and fixes < config.max_repairs:
            fixes += 1
            if last.plan is None:
                stage = "debug"
                context = (
                    f"{header}: Debug. Your last reply could not be used: {last.error}\n"
                    f"Your last reply was:\n{last.reply[: config.echo_chars]}\n\n{run.task}"
                )
            else:
                stage = "repair"
                context = (
                    f"{header}: Repair. Your plan ran but {last.error}\nYour plan was:\n"
                    f"{json.dumps(last.plan)}\nThe state after it:\n{last.feedback}"
                )
            parent = last.index
        elif best is not None and (last is None or last.valid):
            fixes = 0
            stage, parent = "improve", best.index
            base_public = run.base_scores()["base_public"]
            context = (
                f"{header}: Improve. Your best plan so far scored {100 * best.public:.1f}% on "
                f"public (base student: {100 * base_public:.1f}%). Write a better "
                f"whole plan.\nThe best plan:\n{json.dumps(best.plan)}\n"
                f"The state after it (per-skill scores, pool, bad cases):\n{best.feedback}"
            )
        else:
            fixes = 0
            stage, parent = "draft", None
            context = f"{header}: Draft a new plan.\n\n{run.task}"
        last = run.ask_plan(stage, parent, context)
    return run.summary()


RUNNERS = {"one-shot": run_one_shot, "iterative": run_iterative}


# --------------------------------------------------------------------------- command line


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``dataeng-gym protocol`` (the LLM backend options are shared with ``run``)."""
    parser.add_argument("--protocol", choices=PROTOCOLS, default="iterative")
    parser.add_argument("--max-attempts", type=int, default=8, help="One-Shot attempts")
    parser.add_argument("--max-iterations", type=int, default=30, help="Iterative model calls")
    parser.add_argument("--max-repairs", type=int, default=3, help="Debug/Repair before Draft")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Build the env and backend from the command line and run the chosen protocol."""
    from dataeng_gym.envs.config import FAST, EnvConfig
    from dataeng_gym.policies.llm import backend_from_args

    base = FAST if args.fast else EnvConfig()
    config = base.replace(domain=args.domain) if args.domain else base
    env = DataEngTextEnv(config)
    backend = backend_from_args(args)
    given = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    protocol = ProtocolConfig(
        max_attempts=args.max_attempts,
        max_iterations=args.max_iterations,
        max_repairs=args.max_repairs,
        structured=args.structured,
        **{k: v for k, v in given.items() if v is not None},
    )
    return RUNNERS[args.protocol](env, backend, protocol, seed=args.seed, out=args.out)
