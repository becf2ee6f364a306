"""Tiny-student TRAIN throughput: eager against ``StudentConfig.compile``, side by side.

    .venv/bin/python experiments/bench_tiny_compile.py [--domain finance] [--rounds 5]
        [--threads 1 2] [--items 1500] [--out runs/bench_tiny_compile]

One process holds two students on the same cached base, one eager and one compiled. Each round
draws a clean pool with every skill equally often (the base mix's generator, a fresh seed per
round) and, for each torch thread count, fine-tunes both on it with the same seed (alternating
which goes first) and scores both on ``public``. One warm-up TRAIN per thread count (the
compiled student's first one compiles) is reported apart and left out of the rates. Writes
``rounds.jsonl`` (as measured) and ``results.md``: median trained (non-pad) tokens/s and
TRAIN + evaluation seconds, the compiled/eager ratio per round, and how far the compiled
student's public score and weights land from eager's. Run it on an otherwise idle machine:
the two students share it. A rerun starts over, since timings compare only within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import base_examples, base_key, evaluate
from dataeng_gym.envs.domains import Domain, make_domain
from dataeng_gym.envs.student import TinyStudent
from dataeng_gym.io import append_jsonl, write_text


def measure(
    student: TinyStudent, domain: Domain, examples: list[tuple[str, str]], seed: int
) -> dict:
    """One TRAIN: fine-tune on examples, then score on public; times for both."""
    start = time.perf_counter()
    result = student.fine_tune(examples, seed=seed)
    train_s = time.perf_counter() - start
    score = evaluate(domain, student, domain.public, result.state).score
    return {
        "train_s": train_s,
        "total_s": time.perf_counter() - start,
        "tokens_per_s": result.tokens / train_s,
        "public": 100 * score,
        "final_loss": result.losses[-1],
        "state": result.state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="finance")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--items", type=int, default=1500, help="examples per pool")
    parser.add_argument("--out", default="runs/bench_tiny_compile")
    parser.add_argument("--as-test", action="store_true", help="fast twin's student, 1 round")
    args = parser.parse_args()
    base = FAST if args.as_test else EnvConfig()
    base = base.replace(domain=args.domain)
    rounds, threads = (1, [1]) if args.as_test else (args.rounds, args.threads)
    items = 200 if args.as_test else args.items
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rounds.jsonl").unlink(missing_ok=True)

    domain = make_domain(args.domain, seed=base.domain_seed)
    students = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        config = dataclasses.replace(base.student, compile=compiled)
        student = TinyStudent(config, seed=base.student_seed, cache_dir=base.cache_dir)
        student.load_base(base_key(domain, base), lambda: base_examples(domain, base))
        students[name] = student
    uniform = (1.0,) * len(domain.skills)

    pools = [
        base_examples(
            domain, base.replace(base_skill_mix=uniform, base_items=items, student_seed=1000 + r)
        )
        for r in range(rounds)
    ]
    rows: list[dict[str, Any]] = []
    first: dict[int, float] = {}
    for n in threads:
        torch.set_num_threads(n)
        # Warm-up, left out of the rates: the first compiled TRAIN compiles, and in trial runs
        # the first compiled TRAIN at a new thread count ran about half as fast as the rest.
        first[n] = measure(students["compiled"], domain, pools[0], seed=0)["train_s"]
        measure(students["eager"], domain, pools[0], seed=0)
        for r, examples in enumerate(pools):
            order = ("eager", "compiled") if r % 2 else ("compiled", "eager")
            got = {name: measure(students[name], domain, examples, seed=r) for name in order}
            eager, comp = got["eager"], got["compiled"]
            diff = max(
                float((eager["state"][k] - comp["state"][k]).abs().max()) for k in eager["state"]
            )
            row = {
                "round": r,
                "threads": n,
                **{
                    f"{name}_{k}": v for name in order for k, v in got[name].items() if k != "state"
                },
                "max_weight_diff": diff,
            }
            rows.append(row)
            append_jsonl(out / "rounds.jsonl", row)
            print(
                f"round {r} threads {n}: eager {eager['tokens_per_s']:,.0f} tok/s "
                f"{eager['total_s']:.2f} s public {eager['public']:.1f} | compiled "
                f"{comp['tokens_per_s']:,.0f} tok/s {comp['total_s']:.2f} s public "
                f"{comp['public']:.1f} | max |dw| {diff:.2e}",
                flush=True,
            )
    text = report(rows, first, args.domain, items)
    write_text(out / "results.md", text)
    print(text)


def report(rows: list[dict[str, Any]], first: dict[int, float], domain: str, items: int) -> str:
    """Medians per thread count; ratios are per round (side by side) before the median."""
    warmups = ", ".join(f"{s:.1f} s at {n} thread(s)" for n, s in first.items())
    lines = [
        f"Domain {domain}, clean uniform pools of {items} examples, {len(rows)} paired TRAINs "
        f"after one warm-up TRAIN per thread count. The compiled student's warm-up fine-tunes "
        f"took {warmups} (the first one compiles).",
        "",
        "| threads | eager tok/s | compiled tok/s | ratio | eager TRAIN+eval s | "
        "compiled TRAIN+eval s | ratio | public diff (pts) | max weight diff |",
        "|---" * 9 + "|",
    ]
    for n in sorted({row["threads"] for row in rows}):
        sel = [row for row in rows if row["threads"] == n]

        def med(key: str, sel: list[dict[str, Any]] = sel) -> float:
            return statistics.median(row[key] for row in sel)

        tok = statistics.median(r["compiled_tokens_per_s"] / r["eager_tokens_per_s"] for r in sel)
        tot = statistics.median(r["eager_total_s"] / r["compiled_total_s"] for r in sel)
        public = [r["compiled_public"] - r["eager_public"] for r in sel]
        lines.append(
            f"| {n} | {med('eager_tokens_per_s'):,.0f} | {med('compiled_tokens_per_s'):,.0f} | "
            f"{tok:.2f}x | {med('eager_total_s'):.2f} | {med('compiled_total_s'):.2f} | "
            f"{tot:.2f}x | {min(public):+.1f} to {max(public):+.1f} | "
            f"{max(r['max_weight_diff'] for r in sel):.1e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
