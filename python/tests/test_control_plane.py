"""The example control plane (python/examples/control_plane.py) through FastAPI's TestClient,
against real Docker."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from docker_env import BUSYBOX, FAST, NODE, require_docker

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "control_plane.py")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("control_plane", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["control_plane"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    require_docker()
    app = load_example().create_app(str(tmp_path / "cp"), scheduler={**FAST, "nodes": []})
    with TestClient(app) as c:
        yield c


def test_register_heartbeat_template_session_execute(client: TestClient) -> None:
    node = {k: v for k, v in NODE.items()}
    r = client.post("/api/v1/nodes/register", json=node)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "online"
    r = client.post("/api/v1/nodes/heartbeat", json={"node_id": "local"})
    assert r.status_code == 200 and r.json()["node_id"] == "local"

    spec = {k: v for k, v in BUSYBOX.items() if k != "name"}
    r = client.post("/api/v1/templates", json={"template_id": "busybox", **spec})
    assert r.status_code == 201, r.text

    r = client.post("/api/v1/sessions", json={"template_id": "busybox", "owner": "user-1"})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    assert r.json()["sandbox"]["status"] == "running"

    r = client.post(f"/api/v1/sessions/{sid}/execute", json={"command": "echo hello; pwd"})
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == "hello\n/workspace\n" and r.json()["exitCode"] == 0
    r = client.post(f"/api/v1/sessions/{sid}/execute", json={"command": ["sh", "-c", "exit 7"]})
    assert r.json()["exitCode"] == 7 and r.json()["status"] == "failed"

    assert client.get(f"/api/v1/sessions/{sid}").json()["status"] == "running"
    r = client.delete(f"/api/v1/sessions/{sid}")
    assert r.status_code == 200 and r.json()["status"] != "running"
    r = client.post(f"/api/v1/sessions/{sid}/execute", json={"command": "true"})
    assert r.status_code == 409 and r.json()["kind"] == "conflict"


def test_errors_map_to_http_statuses(client: TestClient) -> None:
    r = client.post("/api/v1/sessions", json={"template_id": "nope"})
    assert r.status_code == 404 and r.json()["kind"] == "not_found"
    assert client.get("/api/v1/sessions/sbx_nope").status_code == 404
    assert client.post("/api/v1/nodes/register", json={"node_id": "x"}).status_code == 400
    assert client.post("/api/v1/nodes/heartbeat", json={"node_id": "ghost"}).status_code == 404
    assert client.post("/api/v1/sessions", json={}).status_code == 422
