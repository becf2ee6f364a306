"""Episodes on fractional GPUs: Ray packs N tasks per GPU; students use the GPU share or the CPU.

This machine may have no GPU: Ray is started with one *logical* GPU (``num_gpus=1``), which Ray
schedules and assigns (CUDA_VISIBLE_DEVICES) exactly as a real one; torch then sees no CUDA and
the students fall back to the CPU, which the records say.
"""

import asyncio
import dataclasses
import json
import os
import time

import pytest
import torch

from dataeng_gym.envs.calibrate import config_key
from dataeng_gym.envs.config import FAST
from dataeng_gym.envs.student import in_ray_worker_without_gpu
from dataeng_gym.runner import RunnerConfig, episode_device, make_specs, run_episodes

TIMING = ("wall_seconds", "student_seconds")


@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_auto_device_follows_the_gpu_share_and_explicit_devices_are_kept():
    assert episode_device("auto", 0.0) == "cpu"  # no share: never a GPU, even if CUDA exists
    assert episode_device("auto", 0.25) == "auto"  # the GPU Ray assigned, or the CPU
    assert episode_device("cpu", 1.0) == "cpu"
    assert episode_device("cuda", 0.0) == "cuda"


@pytest.mark.ray
def test_fractional_gpu_tasks_run_n_per_gpu(ray_gpu):
    ray = ray_gpu

    @ray.remote(num_cpus=0)
    class Gate:
        """Counts tasks inside; holds them until released."""

        def __init__(self):
            self.inside = self.most = 0
            self.open = asyncio.Event()

        async def enter(self):
            self.inside += 1
            self.most = max(self.most, self.inside)
            await self.open.wait()

        def leave(self):
            self.inside -= 1

        def release(self):
            self.open.set()

        def counts(self):
            return self.inside, self.most

    @ray.remote(num_cpus=0, num_gpus=0.25)
    def quarter(gate):
        ray.get(gate.enter.remote())
        ids = ray.get_runtime_context().get_accelerator_ids()["GPU"]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ray.get(gate.leave.remote())  # before the task ends and its GPU share is freed
        return ids, visible

    gate = Gate.remote()
    refs = [quarter.remote(gate) for _ in range(6)]
    for _ in range(1200):  # until four are inside (at most 2 minutes: worker start-up)
        if ray.get(gate.counts.remote())[0] == 4:
            break
        time.sleep(0.1)
    assert ray.get(gate.counts.remote()) == (4, 4)
    assert ray.available_resources().get("GPU", 0) == 0  # so the other two must wait
    ray.get(gate.release.remote())
    results = ray.get(refs, timeout=120)
    assert ray.get(gate.counts.remote()) == (0, 4)  # never more than 4 on the one GPU
    assert all(ids == ["0"] and visible == "0" for ids, visible in results)


@pytest.mark.ray
def test_auto_students_in_ray_workers_without_a_gpu_share_stay_off_the_gpu(ray_gpu):
    def probe():
        return in_ray_worker_without_gpu()

    none = ray_gpu.remote(probe).options(num_cpus=0, num_gpus=0)
    share = ray_gpu.remote(probe).options(num_cpus=0, num_gpus=0.5)
    assert ray_gpu.get([none.remote(), share.remote()]) == [True, False]
    assert not in_ray_worker_without_gpu()  # the driver: its own choice


@pytest.mark.ray
def test_episode_on_a_gpu_share_records_its_device_and_matches_cpu(ray_gpu, tmp_path):
    auto = FAST.replace(student=dataclasses.replace(FAST.student, device="auto"))
    specs = make_specs("gpu-share", ["weakest-skill"], ["code"], [4], auto)
    serial = run_episodes(specs, tmp_path / "serial", RunnerConfig())
    shared = run_episodes(
        specs, tmp_path / "ray", RunnerConfig(backend="ray", workers=1, gpus_per_episode=0.5)
    )
    assert [r["status"] for r in serial + shared] == ["ok", "ok"]
    cpu, gpu = serial[0]["summary"], shared[0]["summary"]
    assert cpu["student_device"] == "cpu" and "gpu_ids" not in cpu
    assert gpu["gpu_ids"] == ["0"]  # Ray assigned the logical GPU ...
    if not torch.cuda.is_available():  # ... which torch cannot use here: the CPU, same results
        assert gpu["student_device"] == "cpu"
        assert cpu["config"]["student"]["device"] == "cpu"  # "auto" without a share
        same = {k for k in cpu if k not in (*TIMING, "config", "gpu_ids")}
        assert {k: cpu[k] for k in same} == {k: gpu[k] for k in same}
    else:
        assert gpu["student_device"].startswith("cuda")


def test_the_student_device_is_not_part_of_a_runs_identity(tmp_path):
    on_gpu = FAST.replace(student=dataclasses.replace(FAST.student, device="auto"))
    assert config_key(on_gpu) == config_key(FAST)  # calibration records stay reusable
    first = run_episodes(make_specs("dev", ["uniform"], ["code"], [0]), tmp_path, RunnerConfig())
    pinned = json.loads((tmp_path / "run.json").read_text())["experiments"]["dev"]
    assert "device" not in pinned["config"]["student"]  # as in run dirs from before it existed
    again = run_episodes(make_specs("dev", ["uniform"], ["code"], [0], on_gpu), tmp_path)
    assert again == first  # the same run: resumed, nothing rerun
