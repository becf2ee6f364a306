"""The ``dataeng-gym`` command line: ``domains``, ``run``, ``compare``, ``replay``, ``report``.

Options for the env are generated from the fields of :class:`EnvConfig` that are plain
numbers or (optional) strings, so every documented config field can be set from the command
line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataeng_gym.errors import DataEngError


def _config_options(parser: argparse.ArgumentParser) -> None:
    from dataeng_gym.envs.config import EnvConfig

    hints = typing.get_type_hints(EnvConfig)
    group = parser.add_argument_group("environment (EnvConfig fields)")
    for f in dataclasses.fields(EnvConfig):
        kind = hints[f.name]
        options = typing.get_args(kind)
        if len(options) == 2 and type(None) in options:  # str | None: the option gives a str
            kind = next(o for o in options if o is not type(None))
        if f.name == "domain" or kind not in (int, float, str):
            continue
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            default=None,
            dest=f"cfg_{f.name}",
            help=f"default: {f.default}",
        )


def cmd_domains(args: argparse.Namespace) -> int:
    from dataeng_gym.envs.domains import DOMAINS, make_domain

    for name in DOMAINS:
        d = make_domain(name)
        print(f"{name}: {len(d.public)} public / {len(d.private)} private items")
        for skill in d.skills:
            print(f"  - {skill.name}: {skill.description}")
        if args.verbose:
            print("  " + d.description.replace("\n", "\n  "))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from dataeng_gym.envs.config import FAST, EnvConfig
    from dataeng_gym.envs.domains import DOMAINS
    from dataeng_gym.episode import run_episode
    from dataeng_gym.io import keep_earlier, write_json
    from dataeng_gym.policies import POLICIES, make_policy

    if args.domain is not None and args.domain not in DOMAINS:
        raise DataEngError(f"unknown domain {args.domain!r}; choose one of: {', '.join(DOMAINS)}")
    if args.policy not in POLICIES and not args.policy.startswith(("ppo:", "bc:")):
        raise DataEngError(f"unknown policy {args.policy!r}; choose one of: {', '.join(POLICIES)}")
    base = FAST if args.fast else EnvConfig()
    changes: dict[str, Any] = {
        k.removeprefix("cfg_"): v
        for k, v in vars(args).items()
        if k.startswith("cfg_") and v is not None
    }
    if args.domain:
        changes["domain"] = args.domain
    if args.hf_model:
        from dataeng_gym.envs.hf_student import HFStudentConfig

        changes["hf_student"] = HFStudentConfig(model=args.hf_model)
        changes.setdefault("student_kind", "hf")
    config = base.replace(**changes)
    env_id = "dataeng_gym/DataEngFast-v1" if args.fast else "dataeng_gym/DataEng-v1"
    kwargs: dict[str, Any] = {}
    if args.policy == "llm":  # an LLM acts in the text twin (with --fast: on the FAST config)
        from dataeng_gym.policies.llm import backend_from_args, settings_from_args

        env_id = "dataeng_gym/DataEngText-v1"
        kwargs = {"backend": backend_from_args(args), "settings": settings_from_args(args)}
    from dataeng_gym.envs.llm_teacher import teacher_from_args

    teacher = teacher_from_args(args)  # None: the procedural teacher
    extra = {"teacher": teacher} if teacher is not None else {}
    env = gym.make(env_id, config=config, max_episode_steps=config.max_steps, **extra)
    policy = make_policy(args.policy, config, seed=args.seed, **kwargs)
    out = args.out
    if out:
        kept = keep_earlier(
            Path(out) / name for name in ("config.json", "episode.jsonl", "summary.json")
        )
        if kept:  # a rerun into the same --out loses nothing, even if it then fails
            print(
                f"kept the earlier run's files: {', '.join(p.name for p in kept)}", file=sys.stderr
            )
        write_json(
            f"{out}/config.json",
            {
                "env": env_id,
                "policy": args.policy,
                "seed": args.seed,
                "config": dataclasses.asdict(config),
                **(
                    {
                        "backend": kwargs["backend"].name,
                        "llm": dataclasses.asdict(kwargs["settings"]),
                    }
                    if kwargs
                    else {}
                ),
            },
        )
    print(
        f"{env_id} domain={config.domain} policy={args.policy} seed={args.seed} "
        f"(first use of a domain trains and caches its base student)",
        file=sys.stderr,
    )
    start = time.perf_counter()

    def show(r: dict[str, Any]) -> None:
        act = r["action"] or {"op": "?"}
        args_text = " ".join(f"{k}={v}" for k, v in act.items() if k != "op")
        status = f"INVALID ({r['invalid_action']})" if r["invalid_action"] else _brief(r["result"])
        print(
            f"[{time.perf_counter() - start:6.1f}s] step {r['step']:>2} {act['op']:<13} "
            f"{args_text:<38} "
            f"pool={r['pool']['size']:<5} public={100 * r['public']:5.1f} "
            f"best={100 * r['best_public']:5.1f} teacher_left={r['teacher_left']:<5} "
            f"reward={r['reward']:+.4f} {status}",
            file=sys.stderr,
        )

    summary = run_episode(env, policy, seed=args.seed, domain=config.domain, out=out, on_step=show)
    summary["policy"] = args.policy
    if teacher is not None:
        summary["teacher_stats"] = teacher.stats
    if out:
        write_json(f"{out}/summary.json", summary)
    print(_table(summary))
    if out:
        print(f"\nwrote {out}/episode.jsonl and {out}/summary.json")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from dataeng_gym.envs.calibrate import calibrate, main_progress
    from dataeng_gym.envs.config import FAST, EnvConfig

    config = (FAST if args.fast else EnvConfig()).replace(domain=args.domain)
    report = calibrate(
        config,
        args.pools,
        args.out,
        seed=args.seed,
        policies=tuple(args.policies),
        policy_episodes=args.policy_episodes,
        explore=args.explore,
        progress=main_progress,
    )
    print(json.dumps(report, indent=2))
    return 0


def cmd_train_policy(args: argparse.Namespace) -> int:
    from dataeng_gym.training.cli import train_policy

    return train_policy(args)


def _brief(result: dict[str, Any]) -> str:
    keep = {k: v for k, v in result.items() if k not in ("per_skill", "gate")}
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in keep.items())


def _table(s: dict[str, Any]) -> str:
    rows = [
        ("domain / policy / seed", f"{s['domain']} / {s['policy']} / {s['seed']}"),
        ("public accuracy", f"{100 * s['base_public']:.1f}% -> {100 * s['final_public']:.1f}%"),
        ("private accuracy", f"{100 * s['base_private']:.1f}% -> {100 * s['final_private']:.1f}%"),
        ("private gain", f"{100 * s['gain_abs']:+.1f} points ({s['gain_rel']:+.1f}% relative)"),
        ("public - private gap", f"{100 * s['public_private_gap']:+.1f} points"),
        ("teacher samples", str(s["teacher_samples"])),
        ("TRAIN runs", str(s["train_runs"])),
        ("invalid actions", str(s["invalid_actions"])),
        ("contaminated items removed", str(s["contaminated_removed"])),
        ("student seconds / wall seconds", f"{s['student_seconds']:.1f} / {s['wall_seconds']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_protocol(args: argparse.Namespace) -> int:
    from dataeng_gym.policies.protocols import run_from_args

    s = run_from_args(args)
    mats = "n/a (no valid submission)" if s["mats"] is None else f"{s['mats']:.2f}"
    print(f"{s['protocol']} on {s['domain']} (seed {s['seed']}) with {s['backend']}")
    print(f"attempts {s['attempts']}, valid {s['successes']}, MATS {mats}")
    print("failures: " + ", ".join(f"{k}={v}" for k, v in s["failures"].items()))
    print(
        f"private {100 * s['base_private']:.1f}% -> {100 * s['final_private']:.1f}% "
        f"({s['gain_rel']:+.1f}% relative); stages: {' '.join(s['stages'])}"
    )
    if args.out:
        print(f"wrote {args.out}/nodes.jsonl and {args.out}/summary.json")
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    from dataeng_gym.policies.compare_agents import config_from_args, run_compare

    records = run_compare(config_from_args(args), args.out)
    print((Path(args.out) / "table.md").read_text())
    failed = sum(r["status"] == "failed" for r in records)
    print(
        f"{len(records)} runs ({failed} failed); wrote {args.out}/results.jsonl, table.md, "
        "table.csv and curves_DOMAIN.png"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dataeng_gym.compare import run_compare

    changes = {
        k.removeprefix("cfg_"): v
        for k, v in vars(args).items()
        if k.startswith("cfg_") and v is not None
    }
    return run_compare(args, changes)


def cmd_replay(args: argparse.Namespace) -> int:
    from dataeng_gym.replay import find_episode_dir, replay

    result = replay(find_episode_dir(args.path, args.key))
    for i, (a, b) in enumerate(zip(result.recorded, result.replayed), start=1):
        print(f"step {i:>3}  recorded {a:+.6f}  replayed {b:+.6f}  {'' if a == b else 'DIFFERENT'}")
    same = "identical" if result.identical else f"different (max |diff| {result.max_abs_diff:.3g})"
    print(f"{result.episode_dir} on {result.env_id}: {len(result.replayed)} steps, rewards {same}")
    return 0 if result.identical else 1


def cmd_report(args: argparse.Namespace) -> int:
    from dataeng_gym.report import write_report

    for path in write_report(args.run_dir).values():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dataeng-gym", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("domains", help="list the built-in domains and their skills")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    p.set_defaults(func=cmd_domains)
    p = sub.add_parser("run", help="run one episode of a policy and write its log and summary")
    p.add_argument("--domain", default=None, help="domain name (default: science)")
    p.add_argument(
        "--policy",
        default="weakest-skill",
        help="random | uniform | weakest-skill | llm | ppo:PATH | bc:PATH",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for episode.jsonl and summary.json")
    p.add_argument("--fast", action="store_true", help="use the small, deterministic fast twin")
    p.add_argument(
        "--hf-model",
        default=None,
        help="fine-tune this Hugging Face model (directory or hub id) with LoRA: the hf student",
    )
    _config_options(p)
    from dataeng_gym.policies.llm import add_llm_options

    add_llm_options(p)
    from dataeng_gym.envs.llm_teacher import add_teacher_options

    add_teacher_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("protocol", help="run the paper's One-Shot or Iterative LLM protocol")
    p.add_argument("--domain", default=None, help="domain name (default: science)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for nodes.jsonl and summary.json")
    p.add_argument("--fast", action="store_true", help="use the small, deterministic fast twin")
    from dataeng_gym.policies.protocols import add_protocol_args

    add_protocol_args(p)
    add_llm_options(p, policy=False)
    p.set_defaults(func=cmd_protocol)
    p = sub.add_parser("calibrate", help="record real TRAINs, fit the surrogate")
    p.add_argument("--domain", default="code", help="domain name (default: code)")
    p.add_argument("--pools", type=int, default=120, help="real TRAIN outcomes to record")
    p.add_argument("--out", required=True, help="directory for records.jsonl and surrogate.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="calibrate the fast twin's micro student")
    p.add_argument("--policies", nargs="*", default=[], help="also record these policies' TRAINs")
    p.add_argument("--policy-episodes", type=int, default=0, help="episodes per --policies entry")
    p.add_argument("--explore", type=float, default=0.1, help="random-action rate in them")
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("train-policy", help="train a curation policy (PPO or behaviour cloning)")
    p.add_argument("--algo", choices=("ppo", "bc"), default="ppo")
    p.add_argument("--student", choices=("tiny", "simulated"), default="simulated")
    p.add_argument("--simulator", default=None, help="surrogate.json (default: the shipped one)")
    p.add_argument("--domains", nargs="+", default=["code"])
    p.add_argument("--iterations", type=int, default=20, help="PPO iterations / BC epochs")
    p.add_argument("--workers", type=int, default=1, help="RLlib env runners")
    p.add_argument("--batch-size", type=int, default=2000, help="env steps per PPO iteration")
    p.add_argument("--episodes", nargs="*", default=[], help="BC: episode.jsonl files or dirs")
    p.add_argument("--init-from", default=None, help="PPO: a BC checkpoint to start from")
    p.add_argument("--fast", action="store_true", help="the fast twin's budgets and student")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--track", action="store_true", help="log to W&B (offline by default)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_policy)
    p = sub.add_parser(
        "agents", help="compare agents x domains x protocols x seeds: Table 1 and Figure 3"
    )
    from dataeng_gym.policies.compare_agents import add_compare_args

    add_compare_args(p)
    p.set_defaults(func=cmd_agents)
    p = sub.add_parser("compare", help="run policies x domains x seeds (Ray optional) and report")
    from dataeng_gym.compare import add_arguments

    add_arguments(p)
    _config_options(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("replay", help="re-execute a recorded episode and compare its rewards")
    p.add_argument("path", help="an episode directory, or a run directory with --key")
    p.add_argument("--key", default=None, help="policy/domain/seed of a record in the run")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("report", help="write report.md, report.csv and plots for a run directory")
    p.add_argument("run_dir", help="a directory written by compare (holds results.jsonl)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataEngError, ValueError) as exc:
        print(f"dataeng-gym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
