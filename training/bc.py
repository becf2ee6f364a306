"""Behaviour cloning of the structured policy from recorded episodes.

A recorded episode (``episode.jsonl`` of ``dataeng-gym run``) holds the decoded actions, not the
observations, so the observations are rebuilt by replaying the actions in an env from the
episode's seed (:func:`demonstrations`; the count-level simulated env does it in milliseconds,
the real env reproduces them exactly at the cost of its TRAINs). A plain torch MLP over the
flattened observation (plus the last op, :mod:`~dataeng_gym.training.observation`) has one
categorical head per action component; the layout (sorted keys, tanh MLP) is RLlib's default
PPO actor, so a BC checkpoint can warm-start PPO (:func:`warm_start`).

Steps the env rejected (``info["invalid_action"]``) are left out of the demonstrations: they
changed nothing, so the clone learns the demonstrator's next, valid action for that state
instead. They are still replayed (an undecodable one as an always-rejected action), so every
later observation's step budget reads as it did. ``weakest-skill`` plans a TRAIN before its
pool holds the 500 usable items a TRAIN needs in its first rounds; a clone of those steps
would waste them too, and on code the 60-step limit then cuts its last TRAIN.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.envs.data_env import Op
from dataeng_gym.envs.domains import DIFFICULTIES
from dataeng_gym.envs.pool import FILTER_THRESHOLDS, MIX_WEIGHTS, ORDERS
from dataeng_gym.errors import DataEngError
from dataeng_gym.io import json_changes, read_jsonl, write_json
from dataeng_gym.training.observation import (
    LAST_OP,
    LastOp,
    flatten_observation,
    require_last_op,
)

HEADS = ("amount", "difficulty", "op", "param", "skill")
"""Action components in RLlib's flattening order (sorted keys of the Dict space)."""


def head_sizes(config: EnvConfig) -> dict[str, int]:
    """Number of choices of each action component."""
    from dataeng_gym.envs.data_env import MAX_SKILLS

    return {
        "amount": len(config.amounts),
        "difficulty": len(DIFFICULTIES),
        "op": len(Op),
        "param": 4,
        "skill": MAX_SKILLS,
    }


def structured_action(record: dict[str, Any], skills: Sequence[str], config: EnvConfig) -> dict:
    """The structured action of a decoded action record (``episode.jsonl``'s ``action``).

    Arguments an op does not read are 0, as the baselines emit them.
    """
    op = Op[record["op"].upper()]
    out = {"op": int(op), "skill": 0, "difficulty": 0, "amount": 0, "param": 0}
    if "skill" in record:
        out["skill"] = list(skills).index(record["skill"])
    if "difficulty" in record:
        out["difficulty"] = DIFFICULTIES.index(record["difficulty"])
    if "amount" in record:
        out["amount"] = list(config.amounts).index(record["amount"])
    if "threshold" in record:
        out["param"] = list(FILTER_THRESHOLDS).index(record["threshold"])
    if "weight" in record:
        out["param"] = list(MIX_WEIGHTS).index(record["weight"])
    if "order" in record:
        out["param"] = list(ORDERS).index(record["order"])
    if op == Op.GENERATE:
        out["difficulty"] = DIFFICULTIES.index(record["difficulty"])
    return out


@dataclass(frozen=True)
class RecordedEpisode:
    """The decoded actions of one recorded episode and where it started."""

    actions: list[dict[str, Any] | None]
    """One per step; None where the env could not decode the action (the step still counted)."""
    seed: int
    domain: str
    config: dict[str, Any] | None = None
    """The EnvConfig it was recorded under, as ``summary.json`` holds it."""
    path: str = ""


REPLAY_FIELDS = (
    "amounts",
    "teacher_budget",
    "train_budget",
    "max_steps",
    "min_train_items",
    "max_train_items",
)
"""Config fields a recorded episode must share with the env that replays it: they decide what
its actions mean and what the budgets in each observation read."""

_UNDECODED = {"op": -1, "skill": 0, "difficulty": 0, "amount": 0, "param": 0}
"""Stands in for a step the env could not decode: rejected again, so the step still counts."""


def load_episodes(paths: Sequence[str | Path]) -> list[RecordedEpisode]:
    """Recorded episodes from run directories (or their ``episode.jsonl`` files)."""
    episodes = []
    for p in paths:
        d = Path(p)
        if d.name == "episode.jsonl":
            d = d.parent
        log, summary = d / "episode.jsonl", d / "summary.json"
        if not log.is_file() or not summary.is_file():
            raise DataEngError(
                f"{str(p)!r} is not a recorded episode: expected {log} and {summary} "
                "(write one with `dataeng-gym run --out DIR`)"
            )
        meta = json.loads(summary.read_text())
        actions = [r["action"] for r in read_jsonl(log)]
        episodes.append(
            RecordedEpisode(actions, int(meta["seed"]), meta["domain"], meta.get("config"), str(d))
        )
    return episodes


def demonstrations(
    env: Any, episodes: Sequence[RecordedEpisode], config: EnvConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Replay each episode's actions from its seed; return observations and action targets.

    Rows are what the learned policy sees (with the last op); rejected steps are left out.
    """
    rows = _Rows()
    for ep in episodes:
        _check_recorded_config(ep, config)
        obs, _ = env.reset(seed=ep.seed, options={"domain": ep.domain})
        rows.last.reset()
        skills = _skills(env)
        for step, record in enumerate(ep.actions, 1):
            try:
                a = _UNDECODED if record is None else structured_action(record, skills, config)
            except (ValueError, KeyError) as exc:
                raise DataEngError(
                    f"{ep.path or 'a recorded episode'}, step {step}: {record} is not one of the "
                    f"structured actions ({exc}); behaviour cloning learns from episodes of the "
                    "structured env (`dataeng-gym run` with a baseline or learned policy)"
                ) from exc
            seen = rows.last.observe(obs)
            obs, _, terminated, truncated, info = env.step(a)
            rows.add(seen, a, info)
            if terminated or truncated:
                break
    return rows.arrays()


def _check_recorded_config(ep: RecordedEpisode, config: EnvConfig) -> None:
    if ep.config is None:
        return
    now = asdict(config)
    changes = json_changes(
        {k: ep.config.get(k) for k in REPLAY_FIELDS}, {k: now[k] for k in REPLAY_FIELDS}
    )
    differ = [f"{k} {before} (now {after})" for k, (before, after) in changes.items()]
    if differ:
        raise DataEngError(
            f"{ep.path or 'a recorded episode'} was recorded under another config: "
            f"{', '.join(differ)}; clone it with the config it was recorded under "
            "(e.g. --fast for `dataeng-gym run --fast` episodes)"
        )


def record_demonstrations(
    env: Any, policy: Any, seeds: Sequence[int], domain: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``policy`` in ``env`` on ``seeds``; keep its (observation, action) pairs.

    As in :func:`demonstrations`: rows carry the last op, rejected steps are left out.
    """
    rows = _Rows()
    for seed in seeds:
        obs, info = env.reset(seed=seed, options={"domain": domain})
        policy.reset(seed)
        rows.last.reset()
        while True:
            a = policy.act(obs, info)
            seen = rows.last.observe(obs)
            obs, _, terminated, truncated, info = env.step(a)
            rows.add(seen, a, info)
            if terminated or truncated:
                break
    return rows.arrays()


class _Rows:
    """Demonstration rows: the observation the clone sees and the action, valid steps only."""

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.targets: dict[str, list[int]] = {h: [] for h in HEADS}
        self.last = LastOp()

    def add(self, seen: dict[str, np.ndarray], action: dict[str, int], info: dict) -> None:
        """Keep the step unless the env rejected it (then the last op stays as it was)."""
        if info.get("invalid_action"):
            return
        self.obs.append(flatten_observation(seen))
        for h in HEADS:
            self.targets[h].append(int(action[h]))
        self.last.took(action)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not self.obs:
            raise DataEngError("the demonstrations hold no valid step to clone")
        return np.stack(self.obs), {h: np.asarray(v) for h, v in self.targets.items()}


def _skills(env: Any) -> list[str]:
    u = env.unwrapped
    return list(u.domain.skill_names) if getattr(u, "domain", None) else list(u.model.skills)


class BCNet(nn.Module):
    """A tanh MLP with one categorical head per action component (logits concatenated)."""

    def __init__(self, obs_dim: int, sizes: dict[str, int], hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, sum(sizes[h] for h in HEADS))
        self.sizes = [sizes[h] for h in HEADS]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(self.head(self.body(x)), self.sizes, dim=-1))


@dataclass(frozen=True)
class BCSettings:
    """Behaviour-cloning hyperparameters."""

    epochs: int = 400
    """Full passes over the demonstrations."""
    lr: float = 1e-2
    """Adam learning rate."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths (match PPOSettings.hidden to warm-start PPO)."""
    seed: int = 0
    """Torch seed of the initialisation."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or not self.lr > 0 or not self.hidden:
            raise ValueError("BCSettings needs epochs >= 1, lr > 0 and at least one hidden layer")


def train_bc(
    obs: np.ndarray,
    targets: dict[str, np.ndarray],
    config: EnvConfig,
    settings: BCSettings,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit the BC net by cross-entropy on every head; report losses and agreement; save it.

    The op head is always trained; an argument head only on the steps whose op reads it
    (the others carry a 0 placeholder that would teach nothing).
    """
    if len(obs) == 0:
        raise DataEngError("behaviour cloning got no demonstrations; record some episodes first")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: threads only add contention
    try:
        return _train_bc(obs, targets, config, settings, out, progress)
    finally:
        torch.set_num_threads(threads)


def _train_bc(
    obs: np.ndarray,
    targets: dict[str, np.ndarray],
    config: EnvConfig,
    settings: BCSettings,
    out: str | Path | None,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    from dataeng_gym.envs.data_env import ARGUMENTS

    torch.manual_seed(settings.seed)
    sizes = head_sizes(config)
    net = BCNet(obs.shape[1], sizes, settings.hidden)
    x = torch.as_tensor(obs)
    ys = [torch.as_tensor(targets[h]) for h in HEADS]
    ops = targets["op"]
    reads = {
        "op": np.ones(len(ops), bool),
        "skill": np.isin(ops, [int(o) for o, a in ARGUMENTS.items() if "skill" in a]),
        "difficulty": ops == int(Op.GENERATE),
        "amount": np.isin(ops, [int(Op.GENERATE), int(Op.VERIFY)]),
        "param": np.isin(ops, [int(Op.FILTER), int(Op.MIX), int(Op.ORDER)]),
    }
    masks = [torch.as_tensor(reads[h], dtype=torch.float32) for h in HEADS]
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    losses = []
    for epoch in range(settings.epochs):
        logits = net(x)
        loss = sum(
            (nn.functional.cross_entropy(lg, y, reduction="none") * m).sum() / m.sum().clamp(min=1)
            for lg, y, m in zip(logits, ys, masks)
        )
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        losses.append(float(loss.item()))  # type: ignore[union-attr]
        if progress and (epoch + 1) % max(1, settings.epochs // 5) == 0:
            progress(f"BC epoch {epoch + 1}/{settings.epochs} loss {losses[-1]:.4f}")
    agreement = action_agreement(net, x, targets, reads)
    report = {
        "examples": len(obs),
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "agreement": agreement,
        "settings": asdict(settings),
    }
    if out is not None:
        save_bc(net, Path(out), config, settings, report)
    return report


def action_agreement(
    net: BCNet, x: torch.Tensor, targets: dict[str, np.ndarray], reads: dict[str, np.ndarray]
) -> float:
    """Fraction of steps where the greedy action equals the demonstrator's on every read field."""
    with torch.no_grad():
        pred = [lg.argmax(-1).numpy() for lg in net(x)]
    ok = np.ones(len(x), bool)
    for h, p in zip(HEADS, pred):
        ok &= ~reads[h] | (p == targets[h])
    return float(ok.mean())


def save_bc(
    net: BCNet, out: Path, config: EnvConfig, settings: BCSettings, report: dict[str, Any]
) -> None:
    """Write ``model.pt`` and ``policy.json`` (layout and the amounts it was trained for)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    write_json(
        out / "policy.json",
        {
            "kind": "bc",
            "obs_dim": net.body[0].in_features,
            LAST_OP: True,
            "hidden": list(settings.hidden),
            "amounts": list(config.amounts),
            "report": report,
        },
    )


def load_bc(path: str | Path) -> tuple[BCNet, dict[str, Any]]:
    """A saved BC net and its metadata."""
    root = Path(path)
    meta_path = root / "policy.json"
    if not meta_path.is_file():
        raise DataEngError(
            f"no BC checkpoint at {str(path)!r} (expected {meta_path}); train one with "
            "`dataeng-gym train-policy --algo bc --episodes DIR... --out DIR`"
        )
    meta = json.loads(meta_path.read_text())
    require_last_op(meta, "BC", path)
    config = EnvConfig(amounts=tuple(meta["amounts"]))
    net = BCNet(meta["obs_dim"], head_sizes(config), meta["hidden"])
    net.load_state_dict(torch.load(root / "model.pt", weights_only=True))
    net.eval()
    return net, meta


class OpMemory:
    """Greedy acting without loops: do not repeat an op in a state it did not change.

    Greedy cloning compounds its errors: an action that changes nothing (an invalid TRAIN, a
    DEDUP of a clean pool) leaves the observation as it was, so a greedy policy would repeat
    it until the step budget ends (a sampling policy escapes by chance). While the pool and
    budgets stay unchanged, the op already taken there is skipped for the next-ranked one.
    Both greedy learned policies (BC and PPO) act through it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the ops tried in the last episode's final state."""
        self.state: bytes = b""
        self.tried: set[int] = set()

    def choose(self, op_logits: torch.Tensor, observation: dict[str, np.ndarray]) -> int:
        """The best-ranked op not yet tried in this state (SUBMIT when all were)."""
        state = observation["pool_counts"].tobytes() + observation["budgets"][:2].tobytes()
        if state != self.state:
            self.state, self.tried = state, set()
        ranked = [int(o) for o in torch.argsort(op_logits.flatten(), descending=True)]
        fresh = [o for o in ranked if o not in self.tried]
        op = fresh[0] if fresh else int(Op.SUBMIT)
        self.tried.add(op)
        return op


class BCPolicy:
    """A behaviour-cloned net as a policy: greedy on each head, ops through :class:`OpMemory`."""

    def __init__(
        self, path: str | Path, config: EnvConfig | None = None, seed: int | None = None
    ) -> None:
        self.net, meta = load_bc(path)
        if config is not None and tuple(config.amounts) != tuple(meta["amounts"]):
            raise DataEngError(
                f"the BC policy at {str(path)!r} was trained with amounts {meta['amounts']}, "
                f"the env uses {list(config.amounts)}"
            )
        self.memory = OpMemory()
        self.last = LastOp()

    def reset(self, seed: int | None = None) -> None:
        """Forget the last episode (its last op, the ops tried in its final state)."""
        self.memory.reset()
        self.last.reset()

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, int]:
        x = torch.as_tensor(flatten_observation(self.last.observe(observation)))[None]
        with torch.no_grad():
            logits = self.net(x)
        action = {h: int(lg[0].argmax()) for h, lg in zip(HEADS, logits)}
        action["op"] = self.memory.choose(logits[HEADS.index("op")], observation)
        return self.last.took(action)


def warm_start(algo: Any, path: str | Path) -> None:
    """Copy a BC net into PPO's actor (encoder MLP and policy head); then sync the runners.

    Needs ``BCSettings.hidden == PPOSettings.hidden``; the value network starts fresh.
    """
    net, _ = load_bc(path)
    source = [p.detach().clone() for p in net.parameters()]

    def copy(learner: Any) -> None:
        module = learner.module["default_policy"]
        names = [n for n, _ in module.named_parameters()]
        actor = [n for n in names if "actor_encoder" in n] + [
            n for n in names if n.startswith("pi.")
        ]
        params = dict(module.named_parameters())
        if [tuple(params[n].shape) for n in actor] != [tuple(p.shape) for p in source]:
            raise DataEngError(
                "the BC net does not match PPO's actor (train BC with the same hidden sizes "
                f"as PPO); PPO actor: {[tuple(params[n].shape) for n in actor]}"
            )
        with torch.no_grad():
            for n, p in zip(actor, source):
                params[n].copy_(p.to(params[n].device))

    algo.learner_group.foreach_learner(copy)
    # A synchronous push to every env runner: ``sync_weights`` sends asynchronously and a
    # remote runner could sample its first batch with the random initial weights.
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    state = algo.learner_group.get_state(
        components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
    )[COMPONENT_LEARNER][COMPONENT_RL_MODULE]
    algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.set_state({COMPONENT_RL_MODULE: state})
    )
