"""Benchmark many tiny students sharing one GPU through Ray fractional GPUs.

Run on a GPU machine (one H100 with 16 CPU cores: an estimated 4 minutes for the TRAIN steps and
6 for the episodes; not yet run on a GPU), in one go or in two parts:

    python experiments/bench_tiny_gpu.py --out runs/bench_tiny_gpu
    python experiments/bench_tiny_gpu.py --episode-procs --out runs/bench_tiny_gpu_steps
    python experiments/bench_tiny_gpu.py --procs --out runs/bench_tiny_gpu_episodes

Two measurements, each for several numbers N of concurrent Ray tasks that each hold
``num_gpus = 1/N`` of the GPU (Ray sets CUDA_VISIBLE_DEVICES for them, and a tiny student whose
device is "auto" trains there):

* **TRAIN steps**: N tasks fine-tune tiny students (the default architecture, batch
  ``batch_size``) back to back for ``seconds`` after a common start (a barrier, once every task
  has built its student, loaded the cached base and run one untimed fine-tune). Aggregate
  optimizer steps/s = all tasks' steps / the longest task's time; per-process steps/s too.
* **Whole episodes** (``dataeng_gym.runner`` with ``--gpus-per-episode 1/N``): episodes per hour
  of ``episode_policy`` on the real env (``DataEng-v0``, default configuration), and the same
  with ``gpus_per_episode 0`` (students on the CPU cores) for comparison.

During each timed window the GPU's utilisation is sampled (pynvml where installed, else
``nvidia-smi``): the share of time at least one kernel was running, as nvidia-smi reports it
(not SM occupancy); "n/a" where there is no NVIDIA GPU. What to expect on one H100 (the issue's
measurement with the same architecture): one process about 96 steps/s, 16 processes together
about 1,400 steps/s; the target is at least 1,000. A process's step is bound by launching
~100 small kernels from Python, so the aggregate grows with processes until the CPU cores or
the GPU's time-slicing between processes saturate.

It writes ``bench_tiny_gpu.json`` (after every row, so a cut-off run keeps what it measured)
and ``bench_tiny_gpu.md`` under --out, atomically. ``--as-test`` runs the same code on CPU
with a logical GPU (``ray.init(num_gpus=1)`` declares one; the students fall back to the CPU and
the output says so), a micro student and a few seconds per row: it checks the script, its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import platform
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dataeng_gym.envs.config import FAST, EnvConfig
from dataeng_gym.envs.data_env import base_examples
from dataeng_gym.envs.domains import make_domain
from dataeng_gym.envs.student import StudentConfig, TinyStudent
from dataeng_gym.io import keep_earlier, write_json, write_text
from dataeng_gym.runner import RunnerConfig, make_specs, run_episodes


@dataclass
class Args:
    out: str = "runs/bench_tiny_gpu"
    """Directory for bench_tiny_gpu.json and bench_tiny_gpu.md."""
    scratch: str = ""
    """Directory for the episodes' run directories and the base-student cache ("": OUT/work)."""
    procs: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    """Numbers of concurrent fine-tuning tasks, each with num_gpus = 1/N."""
    seconds: float = 15.0
    """Timed seconds of back-to-back fine-tunes per task (the last one started is finished)."""
    batch_size: int = 128
    """Examples per optimizer step (the issue measured batch 128; the env's default is 32)."""
    examples: int = 2000
    """Training examples per fine-tune (code domain, as a TRAIN sees them; the env's most)."""
    episode_procs: list[int] = field(default_factory=lambda: [4, 16])
    """Numbers of concurrent whole episodes, each with num_gpus = 1/N (empty: skip episodes)."""
    episodes: int = 32
    """Timed episodes per episode row (after a warm-up round of N that starts the workers)."""
    episode_cpu_row: bool = True
    """Also run the largest episode N with gpus_per_episode 0: the students on CPU cores."""
    episode_policy: str = "weakest-skill"
    """Policy of every episode."""
    domain: str = "code"
    """Domain of the fine-tuning data and of every episode."""
    cpus: int = 0
    """CPUs Ray may use (0: all of this machine's); each task takes one."""
    threads: int = 1
    """Torch threads per task (one is fastest for tiny students on shared cores)."""
    gpu_index: int = 0
    """The GPU whose utilisation is sampled."""
    sample_every: float = 0.2
    """Seconds between GPU utilisation samples."""
    logical_gpu: bool = False
    """Declare one logical GPU to Ray instead of detecting real ones: on a CPU machine the
    tasks are scheduled as on a GPU and the students fall back to the CPU (a dry run)."""
    as_test: bool = False
    """CPU, a logical GPU, a micro student, a few seconds per row: checks the script."""


def parse_args() -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(Args(), f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            p.add_argument(flag, nargs="*", type=int, default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)
    args = Args(**vars(p.parse_args()))
    if args.as_test:
        args.procs, args.seconds, args.examples = [1, 2], 2.0, 200
        args.episode_procs, args.episodes = [2], 2
    if not args.procs + args.episode_procs or min(args.procs + args.episode_procs) < 1:
        p.error("--procs and --episode-procs take counts >= 1 (one of them may be empty)")
    if args.seconds <= 0 or args.batch_size < 1 or args.examples < 1 or args.episodes < 1:
        p.error("--seconds, --batch-size, --examples and --episodes must be positive")
    return args


def gpu_share(n: int) -> float:
    """1/n rounded down to Ray's resource precision (0.0001), so that n shares fit in one GPU."""
    return math.floor(10_000 / n) / 10_000


# ---------------------------------------------------------------------------- GPU sampling


class GpuSampler:
    """Samples one GPU's utilisation and memory in a thread, with wall-clock timestamps."""

    def __init__(self, index: int, every: float) -> None:
        self.index, self.every = index, every
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self.source = "n/a"
        self._read = self._probe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _probe(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)

            def read_nvml() -> tuple[float, float]:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                return float(util.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

            read_nvml()
            self.source = "pynvml"
            return read_nvml
        except Exception:  # no pynvml, no driver, no GPU: try nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        query = [
            "nvidia-smi",
            f"--id={self.index}",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]

        def read_smi() -> tuple[float, float]:
            text = subprocess.run(query, capture_output=True, text=True, check=True, timeout=10)
            util, mem = text.stdout.strip().splitlines()[0].split(",")
            return float(util), float(mem)

        try:
            read_smi()
        except Exception:
            return None
        self.source = "nvidia-smi"
        return read_smi

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                util, mem = self._read()
            except Exception:  # a failed sample is a gap, not a failed benchmark
                continue
            self.samples.append((time.time(), util, mem))

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Mean and max utilisation and max memory over samples taken in [start, end]."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {"gpu_util_source": self.source, "gpu_util_mean": "n/a", "gpu_util_max": "n/a",
                    "gpu_mem_max_mib": "n/a", "gpu_samples": 0}  # fmt: skip
        return {
            "gpu_util_source": self.source,
            "gpu_util_mean": round(sum(s[1] for s in window) / len(window), 1),
            "gpu_util_max": max(s[1] for s in window),
            "gpu_mem_max_mib": round(max(s[2] for s in window)),
            "gpu_samples": len(window),
        }


# ---------------------------------------------------------------------------- TRAIN steps


def fine_tune_loop(
    config: StudentConfig,
    cache_dir: str,
    examples: list[tuple[str, str]],
    seconds: float,
    threads: int,
    barrier: Any,
) -> dict[str, Any]:
    """Fine-tune back to back for ``seconds`` after the barrier; the body of one Ray task."""
    import ray

    torch.set_num_threads(threads)
    student = TinyStudent(config, seed=0, cache_dir=cache_dir)
    student.load_base("bench-tiny-gpu", lambda: examples)
    student.fine_tune(examples, seed=0)  # untimed: CUDA context, kernels, allocator
    start = ray.get(barrier.wait.remote()) if barrier is not None else time.time()
    t0 = time.perf_counter()
    steps = runs = 0
    while time.perf_counter() - t0 < seconds:
        result = student.fine_tune(examples, seed=runs + 1)  # returns CPU weights: synced
        steps += result.steps
        runs += 1
    elapsed = time.perf_counter() - t0
    return {
        "device": str(student.device),
        "device_name": torch.cuda.get_device_name(student.device)
        if student.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "gpu_ids": [str(i) for i in ray.get_runtime_context().get_accelerator_ids()["GPU"]],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "steps": steps,
        "fine_tunes": runs,
        "seconds": elapsed,
        "start": start,
        "end": start + elapsed,
    }


def make_barrier(ray: Any, n: int) -> Any:
    """An actor whose wait() returns (the release time) once n callers are waiting."""

    @ray.remote(num_cpus=0)
    class Barrier:
        def __init__(self) -> None:
            self.count = 0
            self.event = asyncio.Event()
            self.released = 0.0

        async def wait(self) -> float:
            self.count += 1
            if self.count >= n:
                self.released = time.time()
                self.event.set()
            await self.event.wait()
            return self.released

    return Barrier.remote()


def measure_steps(ray: Any, args: Args, config: StudentConfig, cache: str, data: Any,
                  n: int, sampler: GpuSampler) -> dict[str, Any]:  # fmt: skip
    """N concurrent fine-tuning tasks with num_gpus = 1/N; one row of the table."""
    barrier = make_barrier(ray, n)
    task = ray.remote(fine_tune_loop).options(num_cpus=1, num_gpus=gpu_share(n), max_retries=0)
    refs = [task.remote(config, cache, data, args.seconds, args.threads, barrier) for _ in range(n)]
    # every task must run at once for the barrier to open; the resources were checked up front
    results = ray.get(refs, timeout=600 + 4 * args.seconds)
    ray.kill(barrier)
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    steps = sum(r["steps"] for r in results)
    per_process = [r["steps"] / r["seconds"] for r in results]
    return {
        "kind": "train-steps",
        "procs": n,
        "gpus_per_task": gpu_share(n),
        "devices": sorted({r["device"] for r in results}),
        "device_name": results[0]["device_name"],
        "gpu_ids": sorted({i for r in results for i in r["gpu_ids"]}),
        "steps": steps,
        "fine_tunes": sum(r["fine_tunes"] for r in results),
        "seconds": max(r["seconds"] for r in results),
        "steps_per_s": steps / max(r["seconds"] for r in results),
        "per_process_steps_per_s_mean": sum(per_process) / n,
        "per_process_steps_per_s_min": min(per_process),
        **sampler.summary(start, end),
    }


# ---------------------------------------------------------------------------- episodes


def measure_episodes(args: Args, env: EnvConfig, fast: bool, n: int, gpus: float,
                     sampler: GpuSampler) -> dict[str, Any]:  # fmt: skip
    """Episodes per hour with n episodes in flight, each with ``gpus`` of the GPU."""
    runner = RunnerConfig(backend="ray", workers=n, gpus_per_episode=gpus, cpus_per_episode=1)
    name = f"episodes-{n}-gpus{gpus:g}"

    def run(
        tag: str, seeds: range, runner: RunnerConfig = runner
    ) -> tuple[float, float, list[dict[str, Any]]]:
        run_dir = Path(args.scratch or Path(args.out) / "work") / "runs" / f"{name}-{tag}"
        shutil.rmtree(run_dir, ignore_errors=True)
        specs = make_specs(name, [args.episode_policy], [args.domain], seeds, env, fast)
        start = time.time()
        records = run_episodes(specs, run_dir, runner)
        failed = [r for r in records if r["status"] != "ok"]
        if failed:
            raise SystemExit(f"{name}: {len(failed)} episodes failed: {failed[0]['error']}")
        return start, time.time(), records

    # trains and caches the base student on this device type (8 threads where there are 8 CPUs)
    base = dataclasses.replace(runner, workers=1, cpus_per_episode=8.0 if args.cpus >= 8 else 1.0)
    run("base", range(1), base)
    warm_start, warm_end, _ = run("warmup", range(n))  # starts the n workers
    start, end, records = run("timed", range(args.episodes))
    return {
        "kind": "episodes",
        "procs": n,
        "gpus_per_task": gpus,
        "devices": sorted({str(r["summary"].get("student_device")) for r in records}),
        "episodes": len(records),
        "seconds": end - start,
        "warmup_seconds": warm_end - warm_start,
        "episodes_per_hour": 3600 * len(records) / (end - start),
        "student_seconds_mean": sum(r["summary"]["student_seconds"] for r in records)
        / len(records),
        **sampler.summary(start, end),
    }


# ---------------------------------------------------------------------------- report


def report(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    steps = [r for r in rows if r["kind"] == "train-steps"]
    episodes = [r for r in rows if r["kind"] == "episodes"]
    on_gpu = [r for r in steps if any(d.startswith("cuda") for d in r["devices"])]
    lines = [
        f"Tiny students ({meta['student_params']:,} parameters, batch {meta['batch_size']}, "
        f"{meta['examples']} {meta['domain']} examples per fine-tune, {meta['steps_per_tune']} "
        f"steps each) on {meta['device']}; torch {meta['torch']}, ray {meta['ray']}; "
        f"{meta['cpus']} CPUs for Ray; load average {meta['load_start']:.1f} at start, "
        f"{meta.get('load_end', float('nan')):.1f} at end. GPU utilisation: "
        f"{meta['gpu_util_source']} (share of time a kernel ran, not SM occupancy).",
        "",
    ]
    if not on_gpu and "(cuda" not in meta["device"]:
        lines += [
            "**The students ran on the CPU** (torch sees no CUDA GPU here; Ray's GPU was "
            "logical), so these are CPU numbers and the 1,000 steps/s GPU target is not "
            "measured.",
            "",
        ]
    elif on_gpu:
        best = max(on_gpu, key=lambda r: r["steps_per_s"])
        verdict = "met" if best["steps_per_s"] >= 1000 else "NOT met"
        lines += [
            f"**Target at least 1,000 TRAIN steps/s aggregate on one GPU: {verdict}** "
            f"({best['steps_per_s']:,.0f} steps/s with {best['procs']} processes, GPU "
            f"utilisation {best['gpu_util_mean']} % mean, {best['gpu_util_max']} % max).",
            "",
        ]
    if steps:
        lines += [
            "| processes | GPU per task | device | steps/s (aggregate) | steps/s per process "
            "(mean, min) | fine-tunes | GPU util % (mean, max) | GPU memory (MiB, max) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in steps:
            lines.append(
                f"| {r['procs']} | {r['gpus_per_task']:g} | {', '.join(r['devices'])} | "
                f"{r['steps_per_s']:,.0f} | {r['per_process_steps_per_s_mean']:,.1f}, "
                f"{r['per_process_steps_per_s_min']:,.1f} | {r['fine_tunes']} | "
                f"{r['gpu_util_mean']}, {r['gpu_util_max']} | {r['gpu_mem_max_mib']} |"
            )
    if episodes:
        lines += [
            "",
            f"Whole episodes (`{meta['episode_policy']}`, {meta['domain']}, "
            f"{meta['episode_env']}), N in flight through `dataeng_gym.runner`:",
            "",
            "| episodes in flight | GPU per episode | student device | episodes | wall (s) | "
            "episodes / hour | student s / episode | GPU util % (mean, max) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in episodes:
            lines.append(
                f"| {r['procs']} | {r['gpus_per_task']:g} | {', '.join(r['devices'])} | "
                f"{r['episodes']} | {r['seconds']:.1f} | {r['episodes_per_hour']:,.0f} | "
                f"{r['student_seconds_mean']:.1f} | {r['gpu_util_mean']}, {r['gpu_util_max']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch or out / "work")
    cache = str((scratch / "cache").resolve())
    os.environ["DATAENG_GYM_CACHE"] = cache  # the episodes' base students, too
    torch.set_num_threads(args.threads)

    if args.as_test:
        config = dataclasses.replace(FAST.student, batch_size=16, device="auto")
        env, fast = FAST.replace(cache_dir=cache, student=config), True
    else:
        config = StudentConfig(batch_size=args.batch_size)
        env, fast = EnvConfig(domain=args.domain, cache_dir=cache), False
    domain = make_domain(args.domain, 0)
    data = base_examples(domain, EnvConfig(domain=args.domain, base_items=args.examples))
    steps_per_tune = min(config.max_train_steps,
                         config.epochs * math.ceil(len(data) / config.batch_size))  # fmt: skip

    cpus = args.cpus = args.cpus or os.cpu_count() or 1
    need = max(args.procs + args.episode_procs)
    if need > cpus:
        raise SystemExit(
            f"{need} concurrent tasks need {need} CPUs but Ray gets {cpus}: lower --procs / "
            "--episode-procs or raise --cpus (each task takes one CPU, and all must run at once)"
        )
    gpus = 1 if args.as_test or args.logical_gpu else None  # else Ray detects the real ones
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    if not ray.cluster_resources().get("GPU"):
        ray.shutdown()
        raise SystemExit(
            "Ray found no GPU: run on a GPU machine, or use --logical-gpu (or --as-test) on CPU"
        )
    sampler = GpuSampler(args.gpu_index, args.sample_every)
    meta: dict[str, Any] = {
        "device": "GPU",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "cpus": cpus,
        "student_params": TinyStudent(dataclasses.replace(config, device="cpu")).num_parameters(),
        "batch_size": config.batch_size,
        "examples": len(data),
        "steps_per_tune": steps_per_tune,
        "domain": args.domain,
        "episode_policy": args.episode_policy,
        "episode_env": "DataEngFast-v0" if fast else "DataEng-v0 (default config)",
        "gpu_util_source": sampler.source,
        "load_start": os.getloadavg()[0],
        "args": dataclasses.asdict(args),
    }
    rows: list[dict[str, Any]] = []
    for moved in keep_earlier(out / f"bench_tiny_gpu.{x}" for x in ("json", "md")):
        print(f"kept the earlier run's file as {moved.name}", flush=True)

    def save() -> None:
        write_json(out / "bench_tiny_gpu.json", {"meta": meta, "rows": rows})
        write_text(out / "bench_tiny_gpu.md", report(meta, rows))

    try:
        with sampler:
            data_ref = ray.put(data)
            # trains and caches the base on the workers' device type, outside the timings
            warm = ray.remote(fine_tune_loop).options(num_cpus=1, num_gpus=gpu_share(1))
            first = ray.get(warm.remote(config, cache, data_ref, 0.0, args.threads, None))
            meta["device"] = f"{first['device_name']} ({first['device']})"
            if not first["device"].startswith("cuda"):
                meta["device"] += ", students on the CPU: torch sees no CUDA GPU"
            print(f"students train on {meta['device']}", flush=True)
            save()
            for n in args.procs:
                rows.append(measure_steps(ray, args, config, cache, data_ref, n, sampler))
                print(f"{n} processes: {rows[-1]['steps_per_s']:,.0f} steps/s", flush=True)
                save()
            for n in args.episode_procs:
                rows.append(measure_episodes(args, env, fast, n, gpu_share(n), sampler))
                print(f"{n} episodes: {rows[-1]['episodes_per_hour']:,.0f}/h", flush=True)
                save()
            if args.episode_procs and args.episode_cpu_row:
                n = max(args.episode_procs)
                rows.append(measure_episodes(args, env, fast, n, 0.0, sampler))
                print(f"{n} CPU episodes: {rows[-1]['episodes_per_hour']:,.0f}/h", flush=True)
    finally:
        ray.shutdown()
        meta["load_end"] = os.getloadavg()[0]
        save()
    print((out / "bench_tiny_gpu.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
