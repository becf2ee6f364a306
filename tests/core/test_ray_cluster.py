"""`--ray-address`: the same compare command on a real, separately started Ray cluster.

The head is a real ``ray start --head`` process (one node, 2 CPUs, one logical GPU so that
fractional-GPU tasks can be scheduled), with token authentication on as Ray >= 2.59 clusters
have it by default; the driver is the ``dataeng-gym`` console script in a subprocess.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    port = _free_port()
    temp = Path(f"/tmp/dg_ray_{port}")  # short: Ray's unix sockets live under it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--num-gpus=1", f"--temp-dir={temp}", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline and head.poll() is None:
        line = head.stdout.readline()
        lines.append(line)
        if "block forever" in line:
            break
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("ray head did not start:\n" + "".join(lines[-20:]))
    yield f"127.0.0.1:{port}", env
    os.killpg(head.pid, signal.SIGTERM)  # --block stops the processes it started
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def test_compare_runs_on_an_existing_cluster_with_fractional_gpus(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "run"
    argv = [str(BIN / "dataeng-gym"), "compare", "--fast", "--backend", "ray"]
    argv += ["--ray-address", address, "--policies", "uniform", "--domains", "code"]
    argv += ["--seeds", "2", "--workers", "2", "--gpus-per-episode", "0.5", "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Connected to Ray cluster" in done.stderr  # joined it; did not start its own
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["status"] == "ok" for r in records)
