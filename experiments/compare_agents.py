"""Compare agents on the paper's Table 1 and Figure 3: baselines and LLM endpoints.

Run against your own OpenAI-compatible endpoints (vLLM, ``transformers serve``, a hosted API):

    .venv/bin/python experiments/compare_agents.py --out runs/compare_agents \\
        --agents weakest-skill random llm:openai:MODEL@http://127.0.0.1:8000/v1 \\
        --domains science code finance --protocols one-shot iterative --seeds 2

Every (agent, protocol, domain, seed) runs once; its result is appended to
``OUT/results.jsonl`` as it is produced, so a rerun skips what is done (and retries failed runs).
It writes ``table.md`` / ``table.csv`` (per-domain relative private gain, mean over seeds, the
domain average and, for LLM agents, MATS) and ``curves_DOMAIN.png`` (best-so-far public and its
private per iteration). ``dataeng-gym agents`` runs the same code
(:mod:`dataeng_gym.policies.compare_agents`). What to expect: with a capable model the iterative
protocol beats one-shot and both beat ``random``; MATS near 1 means almost every plan was valid.
On the default env one LLM run of 30 iterations trains the student up to 30 times (minutes each
on 2 CPU cores), so size ``--seeds`` and ``--max-iterations`` to your machine.

``--as-test`` is the fast twin with tiny budgets and a *random-plan model*: a small
OpenAI-compatible server on 127.0.0.1, started by this script, that answers each request with a
random plan (or, one time in four, with prose). No real LLM can run in CI, so its numbers show
the pipeline (resumable results, failures, table, curves), not agent quality. About two minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dataeng_gym.policies.compare_agents import CompareConfig, run_compare


@dataclass
class Args:
    out: str = "runs/compare_agents"
    """Directory for results.jsonl, table.md, table.csv, curves_DOMAIN.png and the run logs."""
    agents: list[str] = field(default_factory=lambda: ["weakest-skill", "random"])
    """Agent specs: random, uniform, weakest-skill or llm:BACKEND:MODEL[@BASE_URL]."""
    domains: list[str] = field(default_factory=lambda: ["science", "code", "finance"])
    """Domains, in table order."""
    protocols: list[str] = field(default_factory=lambda: ["one-shot", "iterative"])
    """LLM protocols (baselines run one plain episode)."""
    seeds: int = 2
    """Seeds 0..seeds-1 per cell (the paper reports the mean of 2 runs)."""
    fast: bool = False
    """Use the fast twin instead of the default env."""
    max_attempts: int = 8
    """One-Shot attempts (paper: 8)."""
    max_iterations: int = 30
    """Iterative model calls (paper: 30)."""
    max_retries: int = 3
    """Transport retries per LLM request."""
    seed: int = 0
    """Seed of the --as-test random-plan model (the runs' own seeds are 0..seeds-1)."""
    as_test: bool = False
    """Fast twin, tiny budgets, a random-plan model on loopback: checks the script end to end."""


class RandomPlanServer:
    """A stand-in for an LLM endpoint (no real model runs in CI): random plans over loopback.

    It reads the skill names from the prompt's "## Skills" section and answers with a random plan
    of GENERATE steps plus one cleaning step, or (probability ``prose``) with prose that does not
    parse, so that MATS and the Debug stage are exercised.
    """

    def __init__(self, seed: int, prose: float = 0.25) -> None:
        rng, lock = random.Random(seed), threading.Lock()

        def reply(body: dict[str, Any]) -> str:
            prompt = body["messages"][-1]["content"]
            section = prompt.split("## Skills", 1)[1].split("\n## ", 1)[0]
            skills = re.findall(r"^- ([\w-]+) \(", section, re.MULTILINE)
            with lock:
                if rng.random() < prose:
                    return "I would ask the teacher for a balanced mix of every skill."
                plan: list[dict[str, Any]] = [
                    {"op": "generate", "skill": s, "difficulty": rng.randint(1, 3), "amount": 50}
                    for s in rng.sample(skills, rng.randint(1, len(skills)))
                ]
                plan += rng.sample([{"op": "dedup"}, {"op": "filter", "threshold": 0.3}], 1)
            return json.dumps(plan)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                text = reply(body)
                data = json.dumps(
                    {
                        "id": "random-plan",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Args()
    p.add_argument("--out", default=d.out)
    p.add_argument("--agents", nargs="+", default=d.agents, help="see dataeng-gym agents -h")
    p.add_argument("--domains", nargs="+", default=d.domains)
    p.add_argument("--protocols", nargs="+", default=d.protocols)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--max-attempts", type=int, default=d.max_attempts)
    p.add_argument("--max-iterations", type=int, default=d.max_iterations)
    p.add_argument("--max-retries", type=int, default=d.max_retries)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--as-test", action="store_true")
    return Args(**vars(p.parse_args()))


def main() -> None:
    args = parse_args()
    server = None
    if args.as_test:
        server = RandomPlanServer(args.seed)
        # the model name carries --seed: a rerun with another seed is refused, not resumed
        random_plans = f"random-plans=llm:openai:random-seed{args.seed}@{server.base_url}"
        args.agents = ["weakest-skill", "random", random_plans]
        args.domains, args.seeds, args.fast = ["code", "finance"], 1, True
        args.max_attempts, args.max_iterations, args.max_retries = 4, 4, 0
    config = CompareConfig(
        agents=tuple(args.agents),
        domains=tuple(args.domains),
        protocols=tuple(args.protocols),
        seeds=args.seeds,
        fast=args.fast,
        max_attempts=args.max_attempts,
        max_iterations=args.max_iterations,
        max_retries=args.max_retries,
    )
    try:
        run_compare(config, args.out)
    finally:
        if server is not None:
            server.close()
    print((Path(args.out) / "table.md").read_text())
    print(f"wrote {args.out}/results.jsonl, table.md, table.csv and curves_DOMAIN.png")


if __name__ == "__main__":
    main()
