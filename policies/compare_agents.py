"""Compare agents: baselines and LLM endpoints x domains x protocols x seeds (the paper's Table 1).

An *agent* is given as a spec string:

- ``random``, ``uniform``, ``weakest-skill``: a baseline policy, run as one plain episode of
  the Dict-space env (protocol ``episode``).
- ``llm:BACKEND:MODEL[@BASE_URL]``, e.g. ``llm:openai:qwen3-8b@http://127.0.0.1:8000/v1``: an
  LLM, run under each requested protocol (``one-shot``, ``iterative``; see
  :mod:`dataeng_gym.policies.protocols`).
- ``NAME=SPEC`` names an agent in the tables (default: the spec itself).

Each run's result is appended to ``OUT/results.jsonl`` as soon as it is produced, keyed by
(agent, protocol, domain, seed); a rerun skips every key whose latest record is ``ok`` and
retries failed ones (a provider outage should not count as a result). A rerun must keep the
settings that change what a run measures (:data:`RESULT_FIELDS`); agents, domains, protocols
and seeds may be added. A run that raises, or an LLM run whose endpoint never answered, is
recorded as ``failed`` with its error; the others go on.
From the results come ``table.md`` / ``table.csv`` (relative private gain per domain, mean over
seeds, the domain average and, for LLM agents, MATS) and one ``curves_DOMAIN.png`` per domain
(best-so-far public and the private of that best node, per iteration, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dataeng_gym.errors import ConfigError
from dataeng_gym.io import (
    append_jsonl,
    json_changes,
    read_jsonl,
    write_csv,
    write_figure,
    write_json,
    write_text,
)

BASELINES = ("random", "uniform", "weakest-skill")
EPISODE = "episode"
"""The protocol name of a baseline's run: one plain episode."""


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a comparison, parsed from its spec string."""

    name: str
    """Its row label in the tables."""
    policy: str
    """A baseline policy name, or ``llm``."""
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None

    @property
    def is_llm(self) -> bool:
        """Whether the agent runs under the LLM protocols."""
        return self.policy == "llm"


def parse_agent(spec: str) -> AgentSpec:
    """Parse ``[NAME=]random|uniform|weakest-skill|llm:BACKEND:MODEL[@BASE_URL]``."""
    from dataeng_gym.llm import BACKENDS

    name, sep, body = spec.partition("=")
    if not sep:
        name, body = spec, spec
    name, body = name.strip(), body.strip()
    if body in BASELINES:
        return AgentSpec(name=name, policy=body)
    if body.startswith("llm:"):
        backend, _, rest = body.removeprefix("llm:").partition(":")
        model, _, base_url = rest.partition("@")
        if backend not in BACKENDS or not model:
            raise ConfigError(
                f"bad LLM agent {spec!r}: write llm:BACKEND:MODEL[@BASE_URL] with BACKEND one "
                f"of {', '.join(BACKENDS)}, e.g. llm:openai:my-model@http://127.0.0.1:8000/v1"
            )
        return AgentSpec(name, "llm", backend, model, base_url or None)
    raise ConfigError(
        f"unknown agent {spec!r}; use one of {', '.join(BASELINES)} or llm:BACKEND:MODEL[@URL]"
    )


@dataclass(frozen=True)
class CompareConfig:
    """What to compare and how hard each run may try."""

    agents: tuple[str, ...] = ("weakest-skill",)
    """Agent specs (see :func:`parse_agent`)."""
    domains: tuple[str, ...] = ("science", "code", "finance")
    """Domains, in table column order."""
    protocols: tuple[str, ...] = ("one-shot", "iterative")
    """LLM protocols; baselines always run as one plain episode."""
    seeds: int = 2
    """Seeds 0..seeds-1 per (agent, protocol, domain) (the paper: mean of 2 runs)."""
    fast: bool = False
    """Use the fast twin (micro student, tiny budgets) instead of the default env."""
    max_attempts: int = 8
    """One-Shot attempts (paper: 8)."""
    max_iterations: int = 30
    """Iterative model calls (paper: 30)."""
    max_repairs: int = 3
    """Iterative: consecutive Debug/Repair steps before a new Draft (paper: 3)."""
    max_tokens: int = 2048
    """Largest LLM reply, in tokens."""
    temperature: float = 0.7
    """LLM sampling temperature."""
    max_retries: int = 3
    """Transport retries per LLM request (openai backend)."""
    request_timeout: float = 120.0
    """Seconds per LLM request (openai backend)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (openai backend)."""

    def __post_init__(self) -> None:
        from dataeng_gym.envs.domains import DOMAINS
        from dataeng_gym.policies.protocols import PROTOCOLS

        if not self.agents:
            raise ValueError("CompareConfig.agents is empty; name at least one agent")
        names = [parse_agent(a).name for a in self.agents]  # raises on a bad spec
        if len(set(names)) != len(names):
            raise ValueError(f"agent names repeat in {names}; give each a NAME=SPEC label")
        dirs = [_slug(n) for n in names]  # two names, one run directory: results would mix
        if len(set(dirs)) != len(dirs):
            raise ValueError(
                f"agent names {names} share a run directory name ({dirs}); name them apart "
                "in letters or digits"
            )
        for d in self.domains:
            if d not in DOMAINS:
                raise ValueError(f"unknown domain {d!r}; choose from: {', '.join(DOMAINS)}")
        for p in self.protocols:
            if p not in PROTOCOLS:
                raise ValueError(f"unknown protocol {p!r}; choose from: {', '.join(PROTOCOLS)}")
        if not self.domains or self.seeds < 1:
            raise ValueError("CompareConfig needs at least one domain and seeds >= 1")


def plan_runs(config: CompareConfig) -> list[tuple[AgentSpec, str, str, int]]:
    """Every (agent, protocol, domain, seed) of the comparison, in running order."""
    runs = []
    for spec in map(parse_agent, config.agents):
        protocols = config.protocols if spec.is_llm else (EPISODE,)
        for protocol in protocols:
            for domain in config.domains:
                runs += [(spec, protocol, domain, seed) for seed in range(config.seeds)]
    return runs


def run_key(agent: str, protocol: str, domain: str, seed: int) -> str:
    """The key a result is stored and resumed under."""
    return f"{agent}|{protocol}|{domain}|{seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "agent"


def load_results(out: str | Path) -> dict[str, dict[str, Any]]:
    """The latest record of every key in ``out/results.jsonl`` (later lines win)."""
    path = Path(out) / "results.jsonl"
    if not path.exists():
        return {}
    return {r["key"]: r for r in read_jsonl(path)}


def run_one(
    spec: AgentSpec, protocol: str, domain: str, seed: int, config: CompareConfig, run_dir: Path
) -> dict[str, Any]:
    """One run; returns its summary (a protocol's or an episode's)."""
    from dataeng_gym.envs.config import FAST, EnvConfig

    env_config = (FAST if config.fast else EnvConfig()).replace(domain=domain)
    if not spec.is_llm:
        import gymnasium as gym

        from dataeng_gym.episode import run_episode
        from dataeng_gym.policies import make_policy

        env_id = "dataeng_gym/DataEngFast-v1" if config.fast else "dataeng_gym/DataEng-v1"
        env = gym.make(env_id, config=env_config, max_episode_steps=env_config.max_steps)
        policy = make_policy(spec.policy, env_config, seed=seed)
        return run_episode(env, policy, seed=seed, domain=domain, out=run_dir)

    from dataeng_gym.envs.text import DataEngTextEnv
    from dataeng_gym.llm import make_backend
    from dataeng_gym.policies.protocols import RUNNERS, ProtocolConfig

    assert spec.backend is not None and spec.model is not None
    options: dict[str, Any] = {"seed": seed}
    if spec.backend == "openai":
        options |= {
            "api_key_env": config.api_key_env,
            "max_retries": config.max_retries,
            "timeout": config.request_timeout,
        }
    backend = make_backend(spec.backend, spec.model, spec.base_url, **options)
    protocol_config = ProtocolConfig(
        max_attempts=config.max_attempts,
        max_iterations=config.max_iterations,
        max_repairs=config.max_repairs,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        structured=False,
    )
    env = DataEngTextEnv(env_config)
    summary = RUNNERS[protocol](env, backend, protocol_config, seed=seed, out=run_dir)
    if summary["llm"].get("calls", 0) == 0:  # every attempt was a provider error
        first = next(read_jsonl(run_dir / "nodes.jsonl"))
        raise RuntimeError(
            f"the endpoint never answered in {summary['attempts']} attempts: {first['error']}"
        )
    return summary


RESULT_FIELDS = (
    "fast",
    "max_attempts",
    "max_iterations",
    "max_repairs",
    "max_tokens",
    "temperature",
)
"""Settings that change what a run measures: a rerun into the same ``out`` must keep them."""
KEEP = ("base_public", "base_private", "final_public", "final_private", "gain_abs", "gain_rel")
KEEP_LLM = ("mats", "attempts", "successes", "failures", "best_node", "stages", "curve")


def run_compare(
    config: CompareConfig, out: str | Path, *, log: Any = sys.stderr
) -> list[dict[str, Any]]:
    """Run every missing (agent, protocol, domain, seed), then write the table and curves.

    Returns the latest record of every run of the comparison, in running order.
    """
    out = Path(out)
    previous = out / "config.json"
    if previous.exists():  # results made under other caps would be mixed into one table
        before = json.loads(previous.read_text())
        changed = [k for k in RESULT_FIELDS if before.get(k) != getattr(config, k)]
        if changed:
            raise ConfigError(
                f"{out} holds results made with other settings ({', '.join(changed)}: "
                f"{[before.get(k) for k in changed]}); use a new --out, or the same settings"
            )
    write_json(previous, asdict(config))
    done = load_results(out)
    records = []
    runs = plan_runs(config)
    for spec in {s.name: s for s, *_ in runs}.values():  # a label may not change its agent
        # where it is served may change (a restarted server on another port), not what it is
        now = asdict(spec)
        before = next((r["spec"] for r in done.values() if r.get("agent") == spec.name), now)
        if json_changes(before, now, ignore=("base_url",)):
            raise ConfigError(
                f"{out} holds runs of agent {spec.name!r} defined as {before}, now {now}; "
                "use a new --out, or give the new agent another NAME="
            )
    for i, (spec, protocol, domain, seed) in enumerate(runs, 1):
        key = run_key(spec.name, protocol, domain, seed)
        prefix = f"[{i}/{len(runs)}] {spec.name} {protocol} {domain} seed={seed}"
        if key in done and done[key]["status"] == "ok":
            print(f"{prefix}: done before, skipped", file=log)
            records.append(done[key])
            continue
        run_dir = out / "runs" / _slug(spec.name) / protocol / domain / f"seed{seed}"
        record: dict[str, Any] = {
            "key": key,
            "agent": spec.name,
            "spec": asdict(spec),
            "protocol": protocol,
            "domain": domain,
            "seed": seed,
            "run_dir": str(run_dir.relative_to(out)),
        }
        start = time.perf_counter()
        try:
            summary = run_one(spec, protocol, domain, seed, config, run_dir)
        except Exception as exc:  # noqa: BLE001 (one failed run must not stop the others)
            record |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            record["traceback"] = traceback.format_exc(limit=8)
            print(f"{prefix}: FAILED: {record['error']}", file=log)
        else:
            record |= {"status": "ok", "error": None, **{k: summary[k] for k in KEEP}}
            if spec.is_llm:
                record |= {k: summary[k] for k in KEEP_LLM}
            mats = record.get("mats")
            print(
                f"{prefix}: gain {summary['gain_rel']:+.1f}% private"
                + (f", MATS {mats:.2f}" if mats is not None else "")
                + (", no valid submission" if spec.is_llm and mats is None else ""),
                file=log,
            )
        record["seconds"] = time.perf_counter() - start
        append_jsonl(out / "results.jsonl", record)
        records.append(record)
    rows = summarize(records, config)
    write_tables(rows, config, out)
    plot_curves(records, config, out)
    return records


# --------------------------------------------------------------------------- table


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(records: list[dict[str, Any]], config: CompareConfig) -> list[dict[str, Any]]:
    """One row per (agent, protocol, domain or ``avg``): means over the ``ok`` seeds.

    ``avg`` is the mean of the domain means, given only when every domain has one.
    """
    rows = []
    order = list(dict.fromkeys((r["agent"], r["protocol"]) for r in records))
    for agent, protocol in order:
        mine = [r for r in records if (r["agent"], r["protocol"]) == (agent, protocol)]
        domain_rows = []
        for domain in config.domains:
            here = [r for r in mine if r["domain"] == domain]
            ok = [r for r in here if r["status"] == "ok"]
            mats = [r["mats"] for r in ok if r.get("mats") is not None]
            domain_rows.append(
                {
                    "agent": agent,
                    "protocol": protocol,
                    "domain": domain,
                    "runs_ok": len(ok),
                    "runs_failed": len(here) - len(ok),
                    "gain_rel": _mean([r["gain_rel"] for r in ok]),
                    "mats": _mean(mats) if protocol != EPISODE else None,
                    "no_valid": sum(r.get("mats") is None for r in ok)
                    if protocol != EPISODE
                    else None,
                    "final_private": _mean([r["final_private"] for r in ok]),
                }
            )
        complete = all(d["gain_rel"] is not None for d in domain_rows)
        mats_all = [d["mats"] for d in domain_rows]
        avg = {
            "agent": agent,
            "protocol": protocol,
            "domain": "avg",
            "runs_ok": sum(d["runs_ok"] for d in domain_rows),
            "runs_failed": sum(d["runs_failed"] for d in domain_rows),
            "gain_rel": _mean([d["gain_rel"] for d in domain_rows]) if complete else None,
            "mats": _mean(mats_all) if all(m is not None for m in mats_all) else None,
            "no_valid": None if protocol == EPISODE else sum(d["no_valid"] for d in domain_rows),
            "final_private": _mean([d["final_private"] for d in domain_rows]) if complete else None,
        }
        rows += domain_rows + [avg]
    return rows


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table_markdown(rows: list[dict[str, Any]], config: CompareConfig) -> str:
    """Table 1's form: one table per protocol, cells ``MATS / Gain%`` (baselines: ``Gain%``)."""
    columns = [*config.domains, "avg"]
    parts = []
    titles = {"one-shot": "One-Shot", "iterative": "Iterative", EPISODE: "Baselines (one episode)"}
    for protocol in [*config.protocols, EPISODE]:
        mine = [r for r in rows if r["protocol"] == protocol]
        if not mine:
            continue
        llm = protocol != EPISODE
        unit = "MATS / Gain% (relative private gain)" if llm else "Gain% (relative private gain)"
        head = ["Agent", *(f"**{c}**" if c == "avg" else c for c in columns)]
        lines = [
            f"**{titles[protocol]}**: {unit}, mean over {config.seeds} seed(s)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for agent in dict.fromkeys(r["agent"] for r in mine):
            cells = []
            for c in columns:
                r = next(x for x in mine if x["agent"] == agent and x["domain"] == c)
                cell = _num(r["gain_rel"], "+.2f")
                if llm:
                    cell = f"{_num(r['mats'], '.2f')} / {cell}"
                if r["runs_failed"]:
                    cell += f" ({r['runs_failed']} failed)"
                cells.append(cell)
            lines.append(f"| {agent} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    notes = (
        "MATS: model calls per valid submission (lower is better), mean over the seeds that "
        "had a valid one; n/a when none did. Gain%: relative gain of the private accuracy of "
        "the submitted student over the base student (higher is better); a run without a "
        "valid submission keeps the base (0%). avg: mean over domains, n/a when a domain has "
        "no successful run. Failed runs (provider errors) are left out of the means."
    )
    return "\n\n".join(parts) + "\n\n" + notes + "\n"


def write_tables(rows: list[dict[str, Any]], config: CompareConfig, out: Path) -> None:
    """``table.md`` (Table 1's form) and ``table.csv`` (one row per agent, protocol, domain)."""
    write_text(out / "table.md", table_markdown(rows, config))
    fields = [
        "agent",
        "protocol",
        "domain",
        "runs_ok",
        "runs_failed",
        "mats",
        "no_valid",
        "gain_rel",
        "final_private",
    ]
    cells = ({k: ("" if r[k] is None else r[k]) for k in fields} for r in rows)
    write_csv(out / "table.csv", cells, fields)


# --------------------------------------------------------------------------- curves


def mean_curve(runs: list[dict[str, Any]], key: str) -> list[float]:
    """Mean over runs of ``curve[i][key]``; a run that stopped early holds its last value."""
    curves = [[p[key] for p in r["curve"]] for r in runs if r.get("curve")]
    length = max((len(c) for c in curves), default=0)
    return [statistics.fmean(c[min(i, len(c) - 1)] for c in curves) for i in range(length)]


def plot_curves(records: list[dict[str, Any]], config: CompareConfig, out: Path) -> list[Path]:
    """One ``curves_DOMAIN.png`` per domain: the paper's Figure 3 for every LLM agent.

    Solid: best public so far; dashed: the private accuracy of that best-public node (what
    greedy selection delivers). Baselines are drawn as dotted lines at their mean private.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    for domain in config.domains:
        ok = [r for r in records if r["domain"] == domain and r["status"] == "ok"]
        if not ok:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        groups = dict.fromkeys((r["agent"], r["protocol"]) for r in ok)
        for n, (agent, protocol) in enumerate(groups):
            runs = [r for r in ok if (r["agent"], r["protocol"]) == (agent, protocol)]
            color = f"C{n % 10}"
            if protocol == EPISODE:
                y = 100 * statistics.fmean(r["final_private"] for r in runs)
                ax.axhline(y, color=color, linestyle=":", label=f"{agent} (private)")
                continue
            public = [100 * v for v in mean_curve(runs, "best_public")]
            private = [100 * v for v in mean_curve(runs, "final_private")]
            x = list(range(1, len(public) + 1))
            label = f"{agent} {protocol}"
            ax.plot(x, public, color=color, marker="o", label=f"{label}: best public")
            ax.plot(
                x, private, color=color, linestyle="--", marker="x", label=f"{label}: its private"
            )
        base = [100 * r["base_private"] for r in ok]
        ax.axhline(statistics.fmean(base), color="gray", linewidth=0.8, label="base (private)")
        ax.set_xlabel("iteration (model call)")
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(
            f"{domain}: best-so-far public and its private, mean of {config.seeds} seed(s)"
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"curves_{domain}.png"
        write_figure(path, fig, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- command line


def _items(values: list[str]) -> tuple[str, ...]:
    """Values given space- or comma-separated (or both)."""
    return tuple(v for value in values for v in value.split(",") if v)


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``dataeng-gym agents`` (and of ``experiments/compare_agents.py``)."""
    d = CompareConfig()
    parser.add_argument(
        "--agents",
        nargs="+",
        required=True,
        help="agent specs, space- or comma-separated: random, uniform, weakest-skill (plain "
        "episodes) or llm:BACKEND:MODEL[@BASE_URL] (run under each protocol), e.g. "
        "llm:openai:qwen3-8b@http://127.0.0.1:8000/v1; NAME=SPEC sets the table label",
    )
    parser.add_argument("--domains", nargs="+", default=list(d.domains), help="default: all")
    parser.add_argument(
        "--protocols", nargs="+", default=list(d.protocols), help="one-shot,iterative (LLMs only)"
    )
    parser.add_argument("--seeds", type=int, default=d.seeds, help="seeds 0..N-1 per cell")
    parser.add_argument("--fast", action="store_true", help="use the small, fast twin")
    parser.add_argument("--out", default="runs/agents", help="results.jsonl, tables, PNGs")
    g = parser.add_argument_group("LLM protocols and transport")
    g.add_argument("--max-attempts", type=int, default=d.max_attempts, help="One-Shot attempts")
    g.add_argument("--max-iterations", type=int, default=d.max_iterations, help="Iterative calls")
    g.add_argument("--max-repairs", type=int, default=d.max_repairs, help="Debug/Repair in a row")
    g.add_argument("--max-tokens", type=int, default=d.max_tokens, help="largest reply")
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--max-retries", type=int, default=d.max_retries, help="transport retries")
    g.add_argument("--request-timeout", type=float, default=d.request_timeout, help="seconds")
    g.add_argument("--api-key-env", default=d.api_key_env, help="env var with the API key")


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The :class:`CompareConfig` the ``add_compare_args`` options describe."""
    return CompareConfig(
        agents=_items(args.agents),
        domains=_items(args.domains),
        protocols=_items(args.protocols),
        seeds=args.seeds,
        fast=args.fast,
        max_attempts=args.max_attempts,
        max_iterations=args.max_iterations,
        max_repairs=args.max_repairs,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        max_retries=args.max_retries,
        request_timeout=args.request_timeout,
        api_key_env=args.api_key_env,
    )
