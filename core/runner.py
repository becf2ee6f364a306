"""Run many episodes, serially or in parallel on Ray, with durable, resumable results.

An episode is a pure function of its :class:`EpisodeSpec` (experiment, policy, domain, seed,
env config, fast twin or not), so the ``serial`` and ``ray`` backends give the same results for
the same specs. Each episode writes its files under ``RUN_DIR/<spec.episode_dir>`` (step log,
summary, best pool); only the small record dict travels back to the driver, which appends it to
``RUN_DIR/results.jsonl`` (:mod:`dataeng_gym.results`) the moment it arrives.

On Ray, each episode is one task with declared resources (``num_cpus``, and a fractional
``num_gpus`` so that many small students share one GPU: a tiny student whose device is
``"auto"`` trains on the GPU Ray assigned to its task, and on the CPU when the task has no GPU
share, even where CUDA exists, so CPU episodes never take a GPU by accident). A task whose
worker dies (killed, out of memory, node lost) is retried up to ``max_retries`` times; a Python
error is not retried: the episode is recorded as ``failed`` with its traceback and its siblings
go on, until more than ``max_failures`` episodes have failed, which stops the run with
:class:`FailureBudgetExceeded`. Rerunning the same command then finishes what is left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import socket
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.errors import DataEngError, MissingExtraError
from dataeng_gym.io import append_jsonl, read_jsonl, write_json
from dataeng_gym.results import EpisodeKey, ResultsStore, make_record

BACKENDS = ("serial", "ray")

FAULTS = ("exit-once", "exit", "raise")
"""Kinds of fault injection, for testing the runner itself (see ``EpisodeSpec.fault``)."""

RUN_FILE = "run.json"


class RunnerError(DataEngError):
    """The runner cannot start or go on (bad run directory, Ray not reachable)."""


class FailureBudgetExceeded(RunnerError):
    """More episodes failed than the run's failure budget allows."""


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that determines one episode; small and picklable, so it can travel to a worker."""

    experiment: str
    """Name of the experiment the episode belongs to (part of its results key)."""
    policy: str
    """Policy name (``dataeng_gym.policies.POLICIES``)."""
    domain: str
    """Domain name (``dataeng-gym domains``)."""
    seed: int
    """Episode seed: seeds the env and the policy."""
    config: EnvConfig = FAST
    """Env configuration; its ``domain`` is replaced by ``domain``."""
    fast: bool = True
    """Use the deterministic fast twin (``DataEngFast-v1``) instead of ``DataEng-v1``."""
    fault: str = ""
    """Fault injection for tests of the runner: ``exit-once:MARKER_PATH`` (the worker exits hard
    at step 2 unless the marker file exists, creating it first), ``exit`` (always exits hard at
    step 2), ``raise`` (a Python error at step 2). Empty: no fault."""

    def __post_init__(self) -> None:
        from dataeng_gym.envs.domains import DOMAINS
        from dataeng_gym.policies import POLICIES

        if self.policy == "llm":  # it needs an endpoint, which an episode spec does not carry
            raise ValueError(
                "policy 'llm' cannot run from an EpisodeSpec (compare); compare LLM agents with "
                "`dataeng-gym agents` or run one with `dataeng-gym run --policy llm`"
            )
        if self.policy not in POLICIES:
            runnable = [p for p in POLICIES if p != "llm"]
            raise ValueError(
                f"unknown policy {self.policy!r}; choose one of: {', '.join(runnable)}"
            )
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; choose one of: {', '.join(DOMAINS)}")
        kind, _, arg = self.fault.partition(":")
        if self.fault and (kind not in FAULTS or (kind == "exit-once") != bool(arg)):
            raise ValueError(
                f"EpisodeSpec.fault must be '', 'exit-once:MARKER_PATH', 'exit' or 'raise', "
                f"got {self.fault!r}"
            )

    @property
    def key(self) -> EpisodeKey:
        return EpisodeKey(self.experiment, self.policy, self.domain, self.seed)

    @property
    def episode_dir(self) -> str:
        """The episode's directory, relative to the run directory."""
        return f"episodes/{self.experiment}/{self.policy}/{self.domain}/seed-{self.seed}"

    @property
    def env_id(self) -> str:
        return "dataeng_gym/DataEngFast-v1" if self.fast else "dataeng_gym/DataEng-v1"

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "policy": self.policy,
            "domain": self.domain,
            "seed": self.seed,
            "fast": self.fast,
            "env": self.env_id,
            "config": dataclasses.asdict(self.config.replace(domain=self.domain)),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpisodeSpec:
        return cls(
            experiment=data["experiment"],
            policy=data["policy"],
            domain=data["domain"],
            seed=int(data["seed"]),
            config=config_from_dict(data["config"]),
            fast=bool(data["fast"]),
        )


@dataclass(frozen=True)
class RunnerConfig:
    """How episodes are executed. Changing it never changes an episode's result."""

    backend: str = "serial"
    """``serial`` (in this process, one at a time) or ``ray`` (one Ray task per episode)."""
    workers: int = 1
    """Most episodes in flight at once (``ray`` only; ``serial`` runs one at a time)."""
    cpus_per_episode: float = 1.0
    """Ray ``num_cpus`` of each episode task; with both backends, also the torch thread count
    of an episode (at least 1). One thread is the fastest for small students on shared cores:
    on the project's 2-core box under load, 2 threads made fast-twin episodes 10-25x slower."""
    gpus_per_episode: float = 0.0
    """Ray ``num_gpus`` of each episode task; fractions pack many small students on one GPU.
    With 0, tiny students run on the CPU (see :func:`episode_device`)."""
    ray_address: str | None = None
    """Connect to this Ray cluster (e.g. ``ray://head:10001`` or ``auto``); None starts Ray
    locally. On a cluster, the run directory must be on a filesystem every node can write."""
    max_retries: int = 2
    """Times Ray reruns an episode whose worker died (Python errors are never retried)."""
    max_failures: int = 5
    """The run stops once more than this many episodes have failed in it."""
    export_dataset: bool = False
    """Also save each episode's best pool as a Hugging Face ``datasets`` dataset."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.cpus_per_episode <= 0 or self.gpus_per_episode < 0:
            raise ValueError("cpus_per_episode must be > 0 and gpus_per_episode >= 0")
        if self.gpus_per_episode and self.backend != "ray":
            raise ValueError("gpus_per_episode needs backend='ray' (Ray places tasks on GPUs)")
        if self.ray_address and self.backend != "ray":
            raise ValueError("ray_address needs backend='ray'")
        if self.max_retries < 0 or self.max_failures < 0:
            raise ValueError("max_retries and max_failures must be >= 0")


def config_from_dict(data: dict[str, Any], cls: type = EnvConfig) -> Any:
    """Rebuild a (nested, frozen) config dataclass from its ``asdict`` JSON form."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = config_from_dict(value, type(default))
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def make_specs(
    experiment: str,
    policies: Sequence[str],
    domains: Sequence[str],
    seeds: Iterable[int],
    config: EnvConfig = FAST,
    fast: bool = True,
) -> list[EpisodeSpec]:
    """The grid policy x domain x seed, in a fixed order."""
    seeds = list(seeds)
    return [
        EpisodeSpec(experiment, p, d, s, config, fast)
        for p in policies
        for d in domains
        for s in seeds
    ]


# ---------------------------------------------------------------------------- one episode


def episode_device(requested: str, gpus: float) -> str:
    """The tiny student's ``StudentConfig.device`` for an episode task with ``gpus`` GPUs.

    An explicit "cpu" or "cuda" is kept. "auto" becomes "cpu" when the task holds no GPU
    share, so that an episode never takes a GPU it did not ask for (Ray does not hide GPUs from
    tasks without one); with a share it stays "auto": the GPU Ray assigned (Ray sets
    CUDA_VISIBLE_DEVICES for the task), or the CPU where torch sees none.
    """
    if requested != "auto":
        return requested
    return "auto" if gpus > 0 else "cpu"


def execute_episode(
    spec: EpisodeSpec,
    run_dir: str,
    export_dataset: bool = False,
    threads: int | None = None,
    gpus: float = 0.0,
    call: str = "",
) -> dict[str, Any]:
    """Run one episode and return its results record; a Python error becomes a failed record.

    This is the body of a Ray task and of the serial loop alike. Every start is appended to the
    episode's ``attempts.jsonl`` first, tagged with ``call`` (one per :func:`run_episodes`
    call), so a record can say how many times its worker died in this call, not in earlier ones.
    ``threads`` sets torch's thread count for the episode (restored afterwards). ``gpus`` is
    the task's GPU share, which decides the student's device (:func:`episode_device`); the
    summary's ``student_device`` says where the student ran.
    """
    import gymnasium as gym
    import torch

    from dataeng_gym.episode import run_episode
    from dataeng_gym.export import save_hf_dataset, write_pool_jsonl
    from dataeng_gym.policies import make_policy

    out = Path(run_dir) / spec.episode_dir
    append_jsonl(
        out / "attempts.jsonl",
        {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now(), "call": call},
    )
    attempts = _attempts(out / "attempts.jsonl", call)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        write_json(out / "spec.json", spec.to_json())
        config = spec.config.replace(domain=spec.domain)
        device = episode_device(config.student.device, gpus)
        if device != config.student.device:
            config = config.replace(student=dataclasses.replace(config.student, device=device))
        env = gym.make(spec.env_id, config=config, max_episode_steps=config.max_steps)
        policy = make_policy(spec.policy, config, seed=spec.seed)
        hook = _fault_hook(spec.fault) if spec.fault else None
        summary = run_episode(
            env, policy, seed=spec.seed, domain=spec.domain, out=out, on_step=hook
        )
        samples = env.unwrapped.best_samples
        write_pool_jsonl(out / "best_pool.jsonl", samples, spec.domain)
        if export_dataset:
            save_hf_dataset(out / "best_pool_dataset", samples, spec.domain)
        summary.update(
            experiment=spec.experiment,
            policy=spec.policy,
            env=spec.env_id,
            best_pool_items=len(samples),
            student_device=str(getattr(env.unwrapped.student, "device", "n/a")),
        )
        if gpus > 0:  # the GPUs Ray assigned to the task (empty outside Ray)
            summary["gpu_ids"] = _assigned_gpus()
        write_json(out / "summary.json", summary)
        env.close()
        return make_record(
            spec.key, "ok", summary=summary, attempts=attempts, episode_dir=spec.episode_dir
        )
    except Exception as exc:
        return make_record(
            spec.key,
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            attempts=attempts,
            episode_dir=spec.episode_dir,
        )
    finally:
        torch.set_num_threads(before)


def _assigned_gpus() -> list[str]:
    try:
        import ray

        if ray.is_initialized():
            return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
    except Exception:  # outside a Ray worker, or an older Ray: say nothing rather than fail
        pass
    return []


def _fault_hook(fault: str) -> Callable[[dict[str, Any]], None]:
    kind, _, marker = fault.partition(":")

    def hook(step: dict[str, Any]) -> None:
        if step["step"] != 2:
            return
        if kind == "raise":
            raise RuntimeError("fault injection: a Python error at step 2")
        if kind == "exit" or not Path(marker).exists():
            if kind == "exit-once":
                Path(marker).touch()
            os._exit(1)  # a hard crash: no cleanup, no exception, as when a worker is killed

    return hook


# ---------------------------------------------------------------------------- many episodes


def run_episodes(
    specs: Sequence[EpisodeSpec],
    run_dir: str | Path,
    config: RunnerConfig = RunnerConfig(),
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every spec whose key has no ``ok`` record in ``run_dir`` yet; return all their records.

    Args:
        specs: The episodes; duplicates (same key) run once.
        run_dir: The run directory; created if missing. Its ``run.json`` pins the env
            configuration, so a rerun with another configuration is refused instead of mixed.
        config: Backend, parallelism, retries and failure budget.
        on_result: Called as ``on_result(record, finished, total)`` after each record is stored.

    Returns:
        The record of each spec's key, in the order of ``specs`` (keys without one are left out:
        they were still pending when the failure budget stopped the run).

    Raises:
        FailureBudgetExceeded: More than ``config.max_failures`` episodes failed in this call.
    """
    run_dir = Path(run_dir).resolve()
    unique = list({s.key: s for s in specs}.values())
    pin_run(run_dir, unique)
    if config.export_dataset:
        _require("datasets", "datasets")
    store = ResultsStore(run_dir)
    done = store.done()
    todo = [s for s in unique if s.key not in done]
    state = {"finished": len(unique) - len(todo), "failed": 0}
    call = f"{_now()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def finish(record: dict[str, Any]) -> None:
        if not store.add(record):
            return  # delivered twice: stored once
        state["finished"] += 1
        if on_result is not None:
            on_result(record, state["finished"], len(unique))
        if record["status"] == "failed":
            state["failed"] += 1
            if state["failed"] > config.max_failures:
                raise FailureBudgetExceeded(
                    f"{state['failed']} episodes failed, more than the failure budget of "
                    f"{config.max_failures} (max_failures / --max-failures). Last failure, "
                    f"{EpisodeKey.of(record)}: {record['error']}. Finished episodes are saved "
                    f"in {store.path}; fix the cause and rerun the same command to finish the rest."
                )

    if config.backend == "serial":
        threads = max(1, int(config.cpus_per_episode))
        for spec in todo:
            finish(execute_episode(spec, str(run_dir), config.export_dataset, threads, 0.0, call))
    elif todo:
        _run_ray(todo, run_dir, config, finish, call)
    records = {EpisodeKey.of(r): r for r in store.records()}
    return [records[s.key] for s in unique if s.key in records]


def _run_ray(
    todo: list[EpisodeSpec],
    run_dir: Path,
    config: RunnerConfig,
    finish: Callable[[dict[str, Any]], None],
    call: str,
) -> None:
    ray = _require("ray", "rl")
    started = False
    if not ray.is_initialized():
        try:
            if config.ray_address:
                ray.init(address=config.ray_address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=math.ceil(config.workers * config.cpus_per_episode),
                    include_dashboard=False,
                    log_to_driver=False,
                )
        except Exception as exc:
            where = config.ray_address or "a local instance"
            hint = ""
            if config.ray_address and os.environ.get("RAY_AUTH_MODE") != "token":
                hint = (
                    "; clusters started with `ray start` use token authentication by default "
                    "since Ray 2.59: set RAY_AUTH_MODE=token and give the cluster's token "
                    "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)"
                )
            raise RunnerError(f"could not start or reach Ray ({where}): {exc}{hint}") from exc
        started = True
    task = ray.remote(execute_episode).options(
        num_cpus=config.cpus_per_episode,
        num_gpus=config.gpus_per_episode,
        max_retries=config.max_retries,
        retry_exceptions=False,
    )
    threads = max(1, int(config.cpus_per_episode))
    queue = list(reversed(todo))
    pending: dict[Any, EpisodeSpec] = {}
    try:
        while queue or pending:
            while queue and len(pending) < config.workers:
                spec = queue.pop()
                ref = task.remote(
                    spec,
                    str(run_dir),
                    config.export_dataset,
                    threads,
                    config.gpus_per_episode,
                    call,
                )
                pending[ref] = spec
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # raised outside the episode's try
                    record = _failed(spec, run_dir, exc, str(exc), call)
                except ray.exceptions.RayError as exc:  # the worker died on every attempt
                    record = _failed(spec, run_dir, exc, None, call)
                finish(record)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _attempts(log: Path, call: str) -> int:
    """Starts of one episode in one :func:`run_episodes` call, from its ``attempts.jsonl``."""
    if not log.exists():
        return 0
    return sum(1 for r in read_jsonl(log) if r.get("call", "") == call)


def _failed(
    spec: EpisodeSpec, run_dir: Path, exc: Exception, tb: str | None, call: str
) -> dict[str, Any]:
    attempts = _attempts(run_dir / spec.episode_dir / "attempts.jsonl", call)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return make_record(
        spec.key,
        "failed",
        error=f"{type(exc).__name__} after {attempts} attempt(s): {first}",
        traceback=tb,
        attempts=attempts,
        episode_dir=spec.episode_dir,
    )


def pin_run(run_dir: str | Path, specs: Sequence[EpisodeSpec]) -> None:
    """Write ``run.json`` on first use; refuse a rerun whose env configuration differs.

    The student's device is left out: like the backend, it says where episodes run, not what
    they are (and run directories from before it existed stay resumable). :func:`run_episodes`
    calls it; a caller that starts something first (a W&B run) calls it before that.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunnerError(f"the run directory {run_dir} is a file; give a directory (--out)")
    envs = {}
    for s in specs:
        config = s.to_json()["config"] | {"domain": None}
        config["student"] = {k: v for k, v in config["student"].items() if k != "device"}
        envs[s.experiment] = {"fast": s.fast, "config": config}
    path = run_dir / RUN_FILE
    pinned = json.loads(path.read_text())["experiments"] if path.exists() else {}
    for name, env in envs.items():
        if name in pinned and json.loads(json.dumps(env)) != pinned[name]:
            raise RunnerError(
                f"{run_dir} already holds experiment {name!r} with another env configuration "
                f"(see {path}); use another --out directory or the same configuration"
            )
    if any(name not in pinned for name in envs):
        write_json(path, {"experiments": pinned | envs, "created_at": _now()})


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
