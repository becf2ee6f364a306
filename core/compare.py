"""``dataeng-gym compare``: run policies x domains x seeds, store results, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from dataeng_gym.errors import DataEngError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``compare`` (the env's own options are added by the CLI)."""
    p.add_argument("--policies", required=True, help="comma-separated, e.g. random,weakest-skill")
    p.add_argument("--domains", default="science", help="comma-separated, e.g. science,code")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per policy and domain")
    p.add_argument("--workers", type=int, default=1, help="episodes in flight (Ray)")
    p.add_argument(
        "--backend",
        choices=("serial", "ray"),
        default=None,
        help="default: ray when --workers > 1 or --ray-address is given, else serial",
    )
    p.add_argument(
        "--cpus-per-episode",
        type=float,
        default=1.0,
        help="Ray num_cpus and torch threads per episode",
    )
    p.add_argument(
        "--gpus-per-episode", type=float, default=0.0, help="Ray num_gpus per task (0.25: 4/GPU)"
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster address; default: local")
    p.add_argument(
        "--max-retries", type=int, default=2, help="reruns of an episode whose worker died"
    )
    p.add_argument("--max-failures", type=int, default=5, help="stop once more episodes failed")
    p.add_argument("--fast", action="store_true", help="use the small, deterministic fast twin")
    p.add_argument("--out", default="runs/compare", help="run directory (a rerun resumes it)")
    p.add_argument("--experiment", default=None, help="experiment name (default: --out's name)")
    p.add_argument(
        "--dataset",
        action="store_true",
        help="save each best pool as a HF dataset (datasets extra)",
    )
    p.add_argument(
        "--wandb",
        action="store_true",
        help="log to W&B (wandb extra); WANDB_MODE defaults to offline",
    )


def run_compare(args: argparse.Namespace, config_changes: dict[str, Any]) -> int:
    """Run the grid with progress lines, then print and write the report."""
    from dataeng_gym.envs.config import FAST, EnvConfig
    from dataeng_gym.report import summarize, table, write_report
    from dataeng_gym.results import EpisodeKey, read_results
    from dataeng_gym.runner import (
        FailureBudgetExceeded,
        RunnerConfig,
        make_specs,
        pin_run,
        run_episodes,
    )

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    if args.seeds < 1 or not policies or not domains:
        raise DataEngError("compare needs at least one policy, one domain and --seeds >= 1")
    out = Path(args.out)
    experiment = args.experiment or out.resolve().name
    config = (FAST if args.fast else EnvConfig()).replace(**config_changes)
    specs = make_specs(experiment, policies, domains, range(args.seeds), config, args.fast)
    backend = args.backend or ("ray" if args.workers > 1 or args.ray_address else "serial")
    runner = RunnerConfig(
        backend=backend,
        workers=args.workers,
        cpus_per_episode=args.cpus_per_episode,
        gpus_per_episode=args.gpus_per_episode,
        ray_address=args.ray_address,
        max_retries=args.max_retries,
        max_failures=args.max_failures,
        export_dataset=args.dataset,
    )
    pin_run(out.resolve(), specs)  # a refused rerun must not start a W&B run first
    logger = None
    if args.wandb:
        from dataeng_gym.wandb_log import WandbLogger

        whole = {
            "experiment": experiment,
            "policies": policies,
            "domains": domains,
            "seeds": args.seeds,
            "env_id": specs[0].env_id,
            "env": dataclasses.asdict(config),
            "runner": dataclasses.asdict(runner),
        }
        logger = WandbLogger(out, experiment, whole)
    print(
        f"compare: {len(specs)} episodes ({len(policies)} policies x {len(domains)} domains x "
        f"{args.seeds} seeds) on {specs[0].env_id}, backend={backend}, workers={args.workers}, "
        f"out={out}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    progress = _Progress(start)

    def on_result(record: dict[str, Any], finished: int, total: int) -> None:
        progress(record, finished, total)
        if logger is not None:
            logger.log_episode(record, out / record["episode_dir"])

    try:
        try:
            run_episodes(specs, out, runner, on_result=on_result)
        except FailureBudgetExceeded:
            if (out / "results.jsonl").exists():
                write_report(out)
            raise
        paths = write_report(out)
        keys = {s.key for s in specs}
        mine = [r for r in read_results(out) if EpisodeKey.of(r) in keys]
        rows = summarize(mine)
        if logger is not None:
            logger.log_report(rows, paths)
    finally:  # whatever stopped the run, its W&B run is closed
        if logger is not None:
            logger.finish()
    print(table(rows))
    print(
        f"\n{len(mine)} episodes in {time.perf_counter() - start:.0f} s; wrote {out}/results.jsonl,"
    )
    print("  " + ", ".join(str(p) for p in paths.values()))
    return 0 if all(r["status"] == "ok" for r in mine) else 1


class _Progress:
    """One line per finished episode: a bar over all episodes, outcome, gain, and time left.

    A new line per episode rather than a bar redrawn in place, so the progress reads the same
    in a terminal, a CI log and a file.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.first: int | None = None

    def __call__(self, record: dict[str, Any], finished: int, total: int) -> None:
        if self.first is None:
            self.first = finished - 1  # episodes already done before this call (resumed)
        elapsed = time.perf_counter() - self.start
        ran = finished - self.first
        eta = elapsed / ran * (total - finished) if ran else 0.0
        s = record["summary"] or {}
        what = (
            f"gain={100 * s['gain_abs']:+5.1f} pts ({s['gain_rel']:+6.1f}%) "
            f"wall={s['wall_seconds']:5.1f}s"
            if record["status"] == "ok"
            else f"{record['error']}"
        )
        retried = f" attempts={record['attempts']}" if record["attempts"] > 1 else ""
        filled = round(20 * finished / total)
        bar = "#" * filled + "." * (20 - filled)
        print(
            f"{bar} [{finished:>4}/{total} {100 * finished / total:3.0f}%] {record['status']:<6} "
            f"{record['policy']:<14} {record['domain']:<8} seed={record['seed']:<3} {what}"
            f"{retried}  elapsed {elapsed:5.0f}s eta {eta:5.0f}s",
            file=sys.stderr,
            flush=True,
        )
