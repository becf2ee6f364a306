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
from pathlib import Path

from dataeng_gym.envs.config import EnvConfig
from dataeng_gym.io import read_jsonl
from dataeng_gym.report import paired_ci95, pooled_paired_ci95

BASELINE = "weakest-skill"

Gains = dict[tuple[str, str, str], dict[int, float]]
"""(domain, policy, student) -> evaluation seed -> private gain in points."""


def load_run(run: Path) -> tuple[Gains, dict[str, list[int]]]:
    """A run's gains and, per domain, the policy's real episodes' TRAIN counts."""
    gains: Gains = defaultdict(dict)
    trains: dict[str, list[int]] = defaultdict(list)
    log = run / "episodes.jsonl"
    if not log.exists():
        raise SystemExit(f"{run}: no episodes.jsonl (is it a train_ppo.py --out directory?)")
    for r in read_jsonl(log):
        gains[r["domain"], r["policy"], r["student"]][r["seed"]] = 100 * r["gain_abs"]
        if r["student"] == "tiny":
            trains[f"{r['domain']}/{r['policy']}"].append(r["train_runs"])
    return gains, trains


def train_budget(run: Path) -> int:
    """The run's TRAIN budget (its ``env_overrides``, else the default config's)."""
    args = run / "args.json"
    overrides = json.loads(args.read_text()).get("env_overrides", {}) if args.exists() else {}
    return int(overrides.get("train_budget", EnvConfig().train_budget))


def _cell(mean: float, half: float, n: int) -> str:
    return f"{mean:+.1f} ± {half:.1f} (n {n})"


def table(configs: dict[str, list[Path]], policy: str) -> str:
    """The markdown table described in the module docstring."""
    lines = [
        f"| config | domain | training run | real: {policy} minus {BASELINE} | real episodes "
        f"short of their TRAINs | simulated: minus {BASELINE} |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in configs.items():
        loaded = [(run, *load_run(run)) for run in runs]
        domains = sorted({d for _, g, _ in loaded for (d, p, _) in g if p == policy})
        for domain in domains:
            pooled: dict[str, list[dict[int, float]]] = defaultdict(list)
            base: dict[str, dict[int, float]] = {}
            runs_here = [x for x in loaded if x[1][domain, policy, "tiny"]]
            for run, gains, trains in runs_here:
                cells = []
                for student in ("tiny", "simulated"):
                    mine, theirs = gains[domain, policy, student], gains[domain, BASELINE, student]
                    cells.append(_cell(*paired_ci95(mine, theirs)))
                    pooled[student].append(mine)
                    base[student] = theirs
                budget = train_budget(run)
                counts = trains[f"{domain}/{policy}"]
                short = f"{sum(c < budget for c in counts)} of {len(counts)}"
                lines.append(
                    f"| {name} | {domain} | {run.name} | {cells[0]} | {short} | {cells[1]} |"
                )
            if len(runs_here) > 1:
                cells = [
                    _cell(*pooled_paired_ci95(pooled[student], base[student]))
                    for student in ("tiny", "simulated")
                ]
                mean_of = f"**mean of {len(runs_here)}**"
                lines.append(f"| {name} | {domain} | {mean_of} | {cells[0]} | | {cells[1]} |")
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
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
