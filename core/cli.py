"""The ``dataeng-gym`` command line: ``domains``, ``run``, ``compare``, ``replay``, ``report``.

Options for the env are generated from the fields of :class:`EnvConfig` that are plain
numbers or strings, so every documented config field can be set from the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from collections.abc import Sequence
from typing import Any

from dataeng_gym.errors import DataEngError


def _config_options(parser: argparse.ArgumentParser) -> None:
    from dataeng_gym.envs.config import EnvConfig

    hints = typing.get_type_hints(EnvConfig)
    group = parser.add_argument_group("environment (EnvConfig fields)")
    for f in dataclasses.fields(EnvConfig):
        kind = hints[f.name]
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
    from dataeng_gym.io import write_json
    from dataeng_gym.policies import POLICIES, make_policy

    if args.domain is not None and args.domain not in DOMAINS:
        raise DataEngError(f"unknown domain {args.domain!r}; choose one of: {', '.join(DOMAINS)}")
    if args.policy not in POLICIES:
        raise DataEngError(f"unknown policy {args.policy!r}; choose one of: {', '.join(POLICIES)}")
    base = FAST if args.fast else EnvConfig()
    changes: dict[str, Any] = {
        k.removeprefix("cfg_"): v
        for k, v in vars(args).items()
        if k.startswith("cfg_") and v is not None
    }
    if args.domain:
        changes["domain"] = args.domain
    config = base.replace(**changes)
    env_id = "dataeng_gym/DataEngFast-v0" if args.fast else "dataeng_gym/DataEng-v0"
    env = gym.make(env_id, config=config, max_episode_steps=config.max_steps)
    policy = make_policy(args.policy, config, seed=args.seed)
    out = args.out
    if out:
        write_json(
            f"{out}/config.json",
            {
                "env": env_id,
                "policy": args.policy,
                "seed": args.seed,
                "config": dataclasses.asdict(config),
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
    if out:
        write_json(f"{out}/summary.json", summary)
    print(_table(summary))
    if out:
        print(f"\nwrote {out}/episode.jsonl and {out}/summary.json")
    return 0


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
    p.add_argument("--policy", default="weakest-skill", help="random | uniform | weakest-skill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for episode.jsonl and summary.json")
    p.add_argument("--fast", action="store_true", help="use the small, deterministic fast twin")
    _config_options(p)
    p.set_defaults(func=cmd_run)
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
