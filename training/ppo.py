"""PPO on DataEng-v1 with Ray RLlib's new API stack, and the policy it produces.

The Dict observation, with the last op added (:mod:`~dataeng_gym.training.observation`), is
flattened by RLlib's ``FlattenObservations`` env-to-module connector;
the Dict action space is kept as it is (RLlib's default module samples each component from its
own categorical). Env runners are the parallel workers; ``sample_timeout_s`` is raised because a
real TRAIN takes seconds and RLlib otherwise returns empty batches and drops the runner. The
learner uses the GPU when there is one. Each iteration's metrics go to ``metrics.jsonl`` (and
W&B with ``track``); a checkpoint is written every ``checkpoint_every`` iterations and at the end.

``PPOPolicy(path)`` loads the trained RLModule from a checkpoint and acts greedily; it is the
``ppo:PATH`` policy of ``make_policy`` and ``dataeng-gym run --policy ppo:PATH``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.errors import DataEngError, MissingExtraError
from dataeng_gym.io import append_jsonl, changed_fields, read_jsonl, write_json, write_jsonl

ENV_NAME = "dataeng_gym_rllib"


@dataclass(frozen=True)
class PPOSettings:
    """What a PPO run trains on and how long."""

    env: EnvConfig
    """The episode configuration (``student_kind`` picks the tiny or the simulated student)."""
    domains: tuple[str, ...] = ("code",)
    """Domains; each episode draws one at random."""
    iterations: int = 20
    """PPO iterations (``Algorithm.train()`` calls)."""
    workers: int = 1
    """Env runners (parallel workers); 0 samples in the driver process."""
    batch_size: int = 2000
    """Env steps per iteration (``train_batch_size_per_learner``)."""
    minibatch_size: int = 250
    """SGD minibatch size."""
    epochs: int = 6
    """SGD passes over each batch."""
    lr: float = 3e-4
    """Adam learning rate."""
    entropy_coeff: float = 0.01
    """Entropy bonus (keeps the five action components exploring)."""
    gamma: float = 0.99
    """Discount."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layers of the policy and value MLPs."""
    sample_timeout_s: float = 600.0
    """Seconds an env runner may take for one sample() (a real TRAIN takes seconds)."""
    seed: int = 0
    """Seed of the algorithm and its env runners."""
    checkpoint_every: int = 10
    """Write a checkpoint every this-many iterations (and always at the end)."""
    track: bool = False
    """Log to W&B (offline unless WANDB_MODE says otherwise)."""
    init_from: str | None = None
    """A behaviour-cloning checkpoint (``training.bc``) to start the policy network from."""
    step_cost: float = 0.0
    """Subtracted from every step's reward while training (0: the env's reward as it is). A
    margin for the real student: on the simulator a policy loses nothing by using its last
    spare steps, and on the real student those are the steps its last TRAIN needed."""

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("PPOSettings.domains must name at least one domain")
        for name in ("iterations", "batch_size", "minibatch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError("PPOSettings.workers must be >= 0 (0 samples in the driver)")
        if self.minibatch_size > self.batch_size:
            raise ValueError("PPOSettings.minibatch_size must be <= batch_size")
        if self.step_cost < 0:
            raise ValueError(f"PPOSettings.step_cost must be >= 0, got {self.step_cost}")


def _require_rllib() -> None:
    try:
        import ray  # noqa: F401
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("ray[rllib]", "rl") from exc


def make_training_env(env_config: dict[str, Any]) -> Any:
    """RLlib's env creator: DataEng-v1 (real or simulated) drawing a domain per episode.

    Its observations carry the last op, as the learned policies see them when they act, and
    its rewards lose ``env_config["step_cost"]`` per step (training shaping, see
    :attr:`PPOSettings.step_cost`).
    """
    import gymnasium as gym

    from dataeng_gym.envs.simulated import make_data_env
    from dataeng_gym.training.observation import LastOpObservation

    config: EnvConfig = env_config["config"]
    domains: Sequence[str] = env_config["domains"]

    class _Domains(gym.Wrapper):
        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            elif not hasattr(self, "_rng"):
                self._rng = np.random.default_rng(config.student_seed)
            domain = domains[int(self._rng.integers(len(domains)))]
            return self.env.reset(seed=seed, options={**(options or {}), "domain": domain})

    env: gym.Env = LastOpObservation(_Domains(make_data_env(config)))
    step_cost = float(env_config.get("step_cost", 0.0))
    if step_cost:
        env = gym.wrappers.TransformReward(env, lambda r: r - step_cost)
    return env


def build_algorithm(settings: PPOSettings) -> Any:
    """The RLlib PPO algorithm for ``settings`` (new API stack)."""
    _require_rllib()
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import FlattenObservations
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    if not ray.is_initialized():
        ray.init(
            num_cpus=max(2, settings.workers + 1), include_dashboard=False, log_to_driver=False
        )
    register_env(ENV_NAME, make_training_env)
    gpu = 1 if torch.cuda.is_available() else 0
    config = (
        PPOConfig()
        .environment(
            ENV_NAME,
            env_config={
                "config": settings.env,
                "domains": list(settings.domains),
                "step_cost": settings.step_cost,
            },
        )
        .env_runners(
            num_env_runners=settings.workers,
            num_envs_per_env_runner=1,
            sample_timeout_s=settings.sample_timeout_s,
            env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations(),
            rollout_fragment_length="auto",
        )
        .learners(num_learners=0, num_gpus_per_learner=gpu)
        .training(
            train_batch_size_per_learner=settings.batch_size,
            minibatch_size=settings.minibatch_size,
            num_epochs=settings.epochs,
            lr=settings.lr,
            entropy_coeff=settings.entropy_coeff,
            gamma=settings.gamma,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(settings.hidden), vf_share_layers=False
            )
        )
        .debugging(seed=settings.seed)
    )
    return config.build_algo()


def _scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_LEN_MEAN,
        EPISODE_RETURN_MEAN,
        LEARNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
        NUM_EPISODES_LIFETIME,
    )

    runners = result.get(ENV_RUNNER_RESULTS, {})
    learner = result.get(LEARNER_RESULTS, {}).get("default_policy", {})
    out = {
        "episode_return_mean": runners.get(EPISODE_RETURN_MEAN),
        "episode_len_mean": runners.get(EPISODE_LEN_MEAN),
        "episodes": runners.get(NUM_EPISODES_LIFETIME),
        "env_steps": result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
        or runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME),
    }
    for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss"):
        if key in learner:
            out[key] = learner[key]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float | np.floating)}


def train_ppo(
    settings: PPOSettings,
    out: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train PPO; write ``metrics.jsonl``, ``checkpoint/`` and ``summary.json`` under ``out``.

    A run cut off (a crash, Ctrl-C, a lost machine) resumes from its last checkpoint when called
    again with the same settings (``iterations`` may grow, ``track`` may change): the algorithm's
    weights, optimizer and counters come back, the metrics of iterations after the checkpoint
    are dropped and trained again. Environment sampling does not continue the exact random
    stream of the cut-off run. Other settings start over.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resume_at = _resume_point(out, settings)
    if not resume_at:  # an earlier run's marker must not make its checkpoint look like ours
        (out / "checkpoint" / PROGRESS_FILE).unlink(missing_ok=True)
    write_json(out / "settings.json", dataclasses.asdict(settings))
    run = None
    if settings.track:
        try:
            import wandb
        except ImportError as exc:
            raise MissingExtraError("wandb", "wandb") from exc
        run = wandb.init(
            project="dataeng-gym",
            dir=str(out),
            config=dataclasses.asdict(settings),
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            job_type="train-ppo",
        )
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # small MLPs: extra threads only add contention on a busy CPU
    algo = build_algorithm(settings)
    metrics_path = out / "metrics.jsonl"
    kept: list[dict[str, Any]] = []
    if resume_at:
        algo.restore_from_path(str((out / "checkpoint").resolve()))
        kept = [r for r in read_jsonl(metrics_path) if r["iteration"] <= resume_at]
        if [r["iteration"] for r in kept] != list(range(1, resume_at + 1)):
            kept = []  # metrics lost or torn: the checkpoint still resumes, the log restarts
        if progress:
            progress(f"resuming from the checkpoint of iteration {resume_at}")
    elif settings.init_from:
        from dataeng_gym.training.bc import warm_start

        warm_start(algo, settings.init_from)
    write_jsonl(metrics_path, kept)
    offset = kept[-1]["seconds"] if kept else 0.0
    start = time.perf_counter()
    last: dict[str, float] = kept[-1] if kept else {}
    try:
        for i in range(resume_at + 1, settings.iterations + 1):
            result = algo.train()
            last = {
                "iteration": i,
                "seconds": offset + time.perf_counter() - start,
                **_scalar_metrics(result),
            }
            append_jsonl(metrics_path, last)
            if run is not None:
                run.log(last, step=i)
            if progress:
                ret = last.get("episode_return_mean", float("nan"))
                progress(
                    f"[{last['seconds']:6.0f}s] iteration {i}/{settings.iterations} "
                    f"return {ret:+.4f} episodes {last.get('episodes', 0):.0f} "
                    f"steps {last.get('env_steps', 0):.0f}"
                )
            if i % settings.checkpoint_every == 0 or i == settings.iterations:
                # the marker goes first and comes back last: a save cut off halfway leaves no
                # marker, so the next call starts over instead of restoring half a checkpoint
                (out / "checkpoint" / PROGRESS_FILE).unlink(missing_ok=True)
                save_policy(algo, out / "checkpoint", settings)
                write_json(out / "checkpoint" / PROGRESS_FILE, {"iteration": i})
    finally:
        algo.stop()
        if run is not None:
            run.finish()
    summary = {"checkpoint": str(out / "checkpoint"), **last}
    write_json(out / "summary.json", summary)
    return summary


PROGRESS_FILE = "progress.json"
"""In ``checkpoint/``: the iteration the checkpoint was saved at, written after the save."""

RESUME_MAY_CHANGE = ("iterations", "track")
"""Settings a resumed run may change: train for longer, log or not."""


def _resume_point(out: Path, settings: PPOSettings) -> int:
    """The iteration to resume after: that of the checkpoint in ``out``, or 0 to start over."""
    marker = out / "checkpoint" / PROGRESS_FILE
    changed = changed_fields(out / "settings.json", dataclasses.asdict(settings), RESUME_MAY_CHANGE)
    if not marker.exists() or changed is None or changed:
        return 0
    iteration = int(json.loads(marker.read_text())["iteration"])
    return iteration if iteration <= settings.iterations else 0


def save_policy(algo: Any, path: Path, settings: PPOSettings) -> None:
    """Save the algorithm checkpoint plus ``policy.json`` (what the policy loader needs)."""
    from dataeng_gym.training.observation import LAST_OP

    algo.save_to_path(str(path.resolve()))
    write_json(
        path / "policy.json",
        {
            "kind": "ppo",
            "amounts": list(settings.env.amounts),
            "domains": list(settings.domains),
            LAST_OP: True,  # its input includes the last op
        },
    )


def _module_path(path: Path) -> Path:
    from ray.rllib.core import (
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )

    return (
        path
        / COMPONENT_LEARNER_GROUP
        / COMPONENT_LEARNER
        / COMPONENT_RL_MODULE
        / (DEFAULT_MODULE_ID)
    )


class PPOPolicy:
    """A PPO checkpoint as a policy: flatten the observation, take the most likely action.

    The op goes through :class:`~dataeng_gym.training.bc.OpMemory` (no repeats of an op in a
    state it did not change), as for the behaviour-cloned policy: without it, a greedy policy
    that learned from sampled episodes can loop on a no-op until the step budget ends.
    """

    def __init__(
        self, path: str | Path, config: EnvConfig | None = None, seed: int | None = None
    ) -> None:
        _require_rllib()
        from ray.rllib.core.rl_module.rl_module import RLModule
        from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

        root = Path(path)
        if (root / "checkpoint" / "policy.json").is_file():
            root = root / "checkpoint"
        meta_path = root / "policy.json"
        if not meta_path.is_file():
            raise DataEngError(
                f"no PPO checkpoint at {str(path)!r} (expected {meta_path}); train one with "
                "`dataeng-gym train-policy --algo ppo --out DIR` and pass DIR"
            )
        meta = json.loads(meta_path.read_text())
        from dataeng_gym.training.observation import (
            LastOp,
            policy_observation_space,
            require_last_op,
        )

        require_last_op(meta, "PPO", path)
        self.amounts = tuple(meta["amounts"])
        if config is not None and tuple(config.amounts) != tuple(meta["amounts"]):
            raise DataEngError(
                f"the PPO policy at {str(path)!r} was trained with amounts {meta['amounts']}, "
                f"the env uses {list(config.amounts)}; evaluate it on the config it was trained on"
            )
        self.module = RLModule.from_checkpoint(str(_module_path(root).resolve()))
        self.module.eval()
        from dataeng_gym.training.bc import HEADS, OpMemory, head_sizes

        space = policy_observation_space(EnvConfig(amounts=self.amounts))
        self.struct = get_base_struct_from_space(space)
        sizes = head_sizes(EnvConfig(amounts=self.amounts))
        start = sum(sizes[h] for h in HEADS[: HEADS.index("op")])
        self.op_logits = slice(start, start + sizes["op"])  # the op's among all heads' logits
        self.dist_cls = self.module.get_inference_action_dist_cls()
        self.memory = OpMemory()
        self.last = LastOp()

    def reset(self, seed: int | None = None) -> None:
        """Forget the last episode (its last op, the ops tried in its final state)."""
        self.memory.reset()
        self.last.reset()

    def flatten(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The observation as the FlattenObservations connector feeds it to the module."""
        from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor

        return flatten_inputs_to_1d_tensor(
            observation, spaces_struct=self.struct, batch_axis=False
        ).astype(np.float32)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, int]:
        import torch
        from ray.rllib.core import Columns

        obs = torch.from_numpy(self.flatten(self.last.observe(observation))[None])
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: obs})
        logits = out[Columns.ACTION_DIST_INPUTS]
        dist = self.dist_cls.from_logits(logits).to_deterministic()
        action = {k: int(v[0]) for k, v in dist.sample().items()}
        action["op"] = self.memory.choose(logits[0, self.op_logits], observation)
        return self.last.took(action)
