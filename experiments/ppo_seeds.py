"""Pool `train_ppo.py` runs that differ only in their training seed, against weakest-skill.

    .venv/bin/python experiments/ppo_seeds.py \\
        --run plain=runs/ppo6_s0_science,runs/ppo6_s1_science,runs/ppo6_s2_science \\
        --run noise=runs/ppo6n4_s0_science,runs/ppo6n4_s1_science --out runs/seeds.md

One PPO training run is one draw: on the real student, training seeds 0 and 1 from the same
behaviour-cloned start ended 2 points apart on code (docs/results.md). A configuration is
judged by several. For each ``--run NAME=DIR,DIR,...`` (one run directory per training seed,
each with weakest-skill's episodes on the same evaluation seeds) and domain, this prints the
policy's private gain minus weakest-skill's, paired by evaluation seed, for each run and for
the mean of the runs (per evaluation seed, the mean over the training seeds; the interval is
over the evaluation seeds, so it does not measure the spread between training runs), on the
real and the simulated student, and how many real episodes ended with TRAINs left unused.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.io import read_jsonl, write_text
from dataeng_gym.report import gains_by_seed, paired_ci95, pooled_paired_ci95

BASELINE = "weakest-skill"
STUDENTS = ("tiny", "simulated")


@dataclass(frozen=True)
class Run:
    """One train_ppo.py run directory, read once."""

    name: str
    gains: dict[tuple, dict[int, float]]
    """(domain, policy, student) -> evaluation seed -> private gain in points."""
    trains: dict[tuple[str, str], list[int]]
    """(domain, policy) -> TRAIN runs of each real episode."""
    train_budget: int
    """The run's TRAIN budget (its ``env_overrides``, else the default config's)."""


def load_run(path: Path) -> Run:
    log = path / "episodes.jsonl"
    if not log.exists():
        raise SystemExit(f"{path}: no episodes.jsonl (is it a train_ppo.py --out directory?)")
    records = list(read_jsonl(log))
    trains: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in records:
        if r["student"] == "tiny":
            trains[r["domain"], r["policy"]].append(r["train_runs"])
    args = path / "args.json"
    overrides = json.loads(args.read_text()).get("env_overrides", {}) if args.exists() else {}
    budget = int(overrides.get("train_budget", EnvConfig().train_budget))
    return Run(path.name, gains_by_seed(records), trains, budget)


def _cell(mean: float, half: float, n: int) -> str:
    return f"{mean:+.1f} ± {half:.1f} (n {n})"


def table(configs: dict[str, list[Path]], policy: str) -> str:
    """The markdown table described in the module docstring."""
    lines = [
        f"| config | domain | training run | real: {policy} minus {BASELINE} | real episodes "
        f"short of their TRAINs | simulated: minus {BASELINE} |",
        "|---|---|---|---|---|---|",
    ]
    left_out: list[str] = []
    for name, paths in configs.items():
        loaded = [load_run(path) for path in paths]
        domains = sorted({d for run in loaded for (d, p, _) in run.gains if p == policy})
        for domain in domains:
            # .get: indexing the defaultdict would add this domain to every run, and a run of
            # another domain would then be listed as left out of this one
            runs = [run for run in loaded if run.gains.get((domain, policy, "tiny"))]
            left_out += [
                f"{name} {domain} {run.name}"
                for run in loaded
                if run not in runs and any(d == domain for (d, _, _) in run.gains)
            ]
            for run in runs:
                cells = [
                    _cell(
                        *paired_ci95(run.gains[domain, policy, s], run.gains[domain, BASELINE, s])
                    )
                    for s in STUDENTS
                ]
                counts = run.trains[domain, policy]
                short = f"{sum(c < run.train_budget for c in counts)} of {len(counts)}"
                lines.append(
                    f"| {name} | {domain} | {run.name} | {cells[0]} | {short} | {cells[1]} |"
                )
            if len(runs) > 1:
                cells = [  # weakest-skill's episodes are the same in every run (deterministic env)
                    _cell(
                        *pooled_paired_ci95(
                            [run.gains[domain, policy, s] for run in runs],
                            runs[-1].gains[domain, BASELINE, s],
                        )
                    )
                    for s in STUDENTS
                ]
                mean_of = f"**mean of {len(runs)}**"
                lines.append(f"| {name} | {domain} | {mean_of} | {cells[0]} | | {cells[1]} |")
    if left_out:  # a run still evaluating, or one made with --real-episodes 0
        lines += ["", f"Left out, no real-student {policy} episodes: {', '.join(left_out)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=DIR[,DIR...]",
        help="a configuration and its train_ppo.py run directories, one per training seed "
        "(repeat a NAME to add runs of other domains)",
    )
    parser.add_argument("--policy", default="ppo", help="the learned policy to judge (ppo, bc)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    configs: dict[str, list[Path]] = {}
    for spec in args.run:
        name, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            parser.error(f"--run wants NAME=DIR[,DIR...], got {spec!r}")
        configs.setdefault(name, []).extend(Path(d) for d in dirs.split(","))
    text = table(configs, args.policy)
    if args.out:
        write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
