"""Benchmark the episode runner: episodes per hour against workers, serial vs Ray.

Run (a few minutes on 2 CPU cores):

    .venv/bin/python experiments/bench_parallel.py --out runs/bench_parallel

It runs the same episodes (fast twin, one policy and domain, seeds 0..N-1) with the ``serial``
backend and with the ``ray`` backend at each worker count, each in a fresh run directory, and
writes ``bench_parallel.md`` and ``bench_parallel.csv`` under --out. It also checks that every
configuration produced the same episode summaries (timings aside). Ray's start-up and a
warm-up round that starts its workers are timed apart. What to expect: fast-twin episodes
last about half a second, so Ray's per-task overhead is a visible share of them: Ray with one
worker is slower than serial, and W workers approach W times the serial rate only for
episodes much longer than that overhead (full-size episodes last 7-15 s).
Timings are wall-clock and depend on what else the machine runs: the load average at the
start and end is recorded next to them.

``--as-test`` runs 2 episodes per configuration, as CI does.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataeng_gym.envs.config import FAST
from dataeng_gym.errors import MissingExtraError
from dataeng_gym.io import write_csv, write_text
from dataeng_gym.runner import RunnerConfig, make_specs, run_episodes

TIMING = ("wall_seconds", "student_seconds")


@dataclass
class Args:
    out: str = "runs/bench_parallel"
    """Directory for bench_parallel.md, bench_parallel.csv and the run directories."""
    episodes: int = 32
    """Episodes per configuration (seeds 0..episodes-1)."""
    workers: list[int] = field(default_factory=lambda: [1, 2])
    """Ray worker counts to measure (serial is always measured once)."""
    policy: str = "uniform"
    """Policy of every episode."""
    domain: str = "code"
    """Domain of every episode."""
    as_test: bool = False
    """2 episodes per configuration: checks the script end to end."""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=Args.out)
    p.add_argument("--episodes", type=int, default=Args.episodes)  # ~0.5 s each on 1 idle core
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--policy", default=Args.policy)
    p.add_argument("--domain", default=Args.domain)
    p.add_argument("--as-test", action="store_true")
    return Args(**vars(p.parse_args()))


def measure(args: Args, name: str, runner: RunnerConfig) -> tuple[float, list[dict]]:
    """Run the episodes in a fresh run directory; return the wall time and the summaries."""
    run_dir = Path(args.out) / name
    shutil.rmtree(run_dir, ignore_errors=True)
    specs = make_specs("bench", [args.policy], [args.domain], range(args.episodes), FAST, True)
    start = time.perf_counter()
    records = run_episodes(specs, run_dir, runner)
    wall = time.perf_counter() - start
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{name}: {len(failed)} episodes failed: {failed[0]['error']}")
    return wall, [{k: v for k, v in r["summary"].items() if k not in TIMING} for r in records]


def main() -> int:
    args = parse_args()
    if args.as_test:
        args.episodes = 2
    try:  # before any timing: a missing extra must not cost the serial rows
        import ray
    except ImportError as exc:
        raise MissingExtraError("ray", "rl") from exc
    Path(args.out).mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()

    # warm-up: train and cache the fast twin's base student outside the timings
    measure(Args(out=args.out, episodes=1, policy=args.policy, domain=args.domain), "warmup",
            RunnerConfig())  # fmt: skip

    rows = []
    wall, reference = measure(args, "serial", RunnerConfig())
    rows.append({"backend": "serial", "workers": 1, "wall_s": wall, "warmup_s": 0.0})

    start = time.perf_counter()
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    identical = True
    try:
        for w in args.workers:
            runner = RunnerConfig(backend="ray", workers=w)
            # warm-up: W episodes start W workers (each imports torch and the package)
            cold = Args(out=args.out, episodes=w, policy=args.policy, domain=args.domain)
            cold_wall, _ = measure(cold, f"ray-{w}-warmup", runner)
            wall, summaries = measure(args, f"ray-{w}", runner)
            identical &= summaries == reference
            rows.append({"backend": "ray", "workers": w, "wall_s": wall, "warmup_s": cold_wall})
    finally:
        ray.shutdown()
    load_end = os.getloadavg()

    serial_rate = 3600 * args.episodes / rows[0]["wall_s"]
    for r in rows:
        r["episodes"] = args.episodes
        r["episodes_per_hour"] = 3600 * args.episodes / r["wall_s"]
        r["speedup_vs_serial"] = r["episodes_per_hour"] / serial_rate
        r["scaling_efficiency"] = r["speedup_vs_serial"] / r["workers"]

    columns = ["backend", "workers", "episodes", "wall_s", "warmup_s", "episodes_per_hour"]
    columns += ["speedup_vs_serial", "scaling_efficiency"]
    cells = (
        {k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in columns} for r in rows
    )
    write_csv(Path(args.out) / "bench_parallel.csv", cells, columns)
    lines = [
        f"Fast twin, policy {args.policy}, domain {args.domain}, {args.episodes} episodes per "
        f"row; {os.cpu_count()} CPUs ({platform.machine()}), load average "
        f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end; Ray start-up "
        f"{ray_start:.1f} s and a warm-up round of W episodes that starts the W workers "
        f"(its wall time in the warm-up column) are not in the timings. Same summaries in "
        f"every row: "
        f"{'yes' if identical else 'NO'}.",
        "",
        "| backend | workers | wall (s) | warm-up (s) | episodes / hour | speed-up vs serial "
        "| efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['wall_s']:.1f} | {r['warmup_s']:.1f} | "
            f"{r['episodes_per_hour']:,.0f} | {r['speedup_vs_serial']:.2f}x | "
            f"{r['scaling_efficiency']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    write_text(Path(args.out) / "bench_parallel.md", text)
    print(text)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
