"""Docker for the scheduler tests: the check (fail loudly, skip only with
AGENTVM_SKIP_DOCKER=1), the local daemon as a node and the busybox template."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

ENDPOINT = "unix:///var/run/docker.sock"
TEST_IMAGE = "agentvm-test/busybox:latest"
HOW = (
    "run `sudo bash scripts/setup-docker.sh` (starts dockerd, builds agentvm-test/busybox:latest "
    "offline), or set AGENTVM_SKIP_DOCKER=1 to skip the Docker tests on purpose"
)

NODE: dict[str, Any] = {
    "node_id": "local",
    "api_endpoint": ENDPOINT,
    "total_cpu_cores": 4.0,
    "total_memory_mb": 8192,
    "max_containers": 50,
}

BUSYBOX: dict[str, Any] = {
    "name": "busybox",
    "image": TEST_IMAGE,
    "defaultCpuCores": 0.5,
    "defaultMemoryMb": 128,
    "defaultTimeoutS": 600,
    "workdir": "/workspace",
    "security": {"pidsLimit": 64},
}

#: Scheduler options (the core's SchedulerOptions) with quick health checks and sweeps.
FAST: dict[str, Any] = {
    "heartbeatIntervalMs": 200,
    "offlineAfterMs": 1000,
    "sweepIntervalMs": 500,
    "dockerTimeoutMs": 60_000,
}


def require_docker() -> None:
    """Skips with AGENTVM_SKIP_DOCKER=1; otherwise fails saying what to do when Docker or the
    test image is missing."""
    if os.environ.get("AGENTVM_SKIP_DOCKER") == "1":
        pytest.skip("AGENTVM_SKIP_DOCKER=1")
    if not os.path.exists("/var/run/docker.sock") or shutil.which("docker") is None:
        pytest.fail(f"Docker is not available: {HOW}")
    r = subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"the test image {TEST_IMAGE} is missing: {HOW}")
