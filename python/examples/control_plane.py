"""A sandbox control plane in ~100 lines: FastAPI embedding agentvm's scheduler.

    POST /api/v1/sessions              {"template_id": "python", "owner"?: "user-1"} -> a sandbox
    GET  /api/v1/sessions/{id}         the sandbox
    POST /api/v1/sessions/{id}/execute {"command": "ls" | [...], "timeout"?: 30} -> the run
    DELETE /api/v1/sessions/{id}       terminate it
    POST /api/v1/templates             {"template_id", "image", ...template fields}
    POST /api/v1/nodes/register        a runtime node registers itself (snake_case body)
    POST /api/v1/nodes/heartbeat       and heartbeats

Run: AGENTVM_NODES=unix:///var/run/docker.sock uvicorn control_plane:app

The scheduler is embedded in the runtime (``agentvm.open(scheduler={...})``) and driven
through ``vm.scheduler``; its options are the core's (``nodes``, ``heartbeatIntervalMs``, ...).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import agentvm

STATUS = {
    "not_found": 404,
    "invalid_input": 400,
    "already_exists": 409,
    "conflict": 409,
    "unauthorized": 401,
    "unavailable": 503,
}


class SessionIn(BaseModel):
    template_id: str
    owner: Optional[str] = None
    timeout_s: Optional[int] = None


class ExecuteIn(BaseModel):
    command: Union[str, list[str]]
    timeout: Optional[float] = None
    env: Optional[dict[str, str]] = None


class TemplateIn(BaseModel, extra="allow"):
    template_id: str
    image: str
    name: Optional[str] = None


def create_app(data_dir: Optional[str] = None, scheduler: Optional[dict[str, Any]] = None) -> FastAPI:
    """The app. ``scheduler``: the scheduler's options; without ``nodes`` in them, the nodes
    of $AGENTVM_NODES (comma-separated Docker endpoints) are registered at start."""
    options = dict(scheduler or {})
    if "nodes" not in options:
        endpoints = [e for e in os.environ.get("AGENTVM_NODES", "").split(",") if e]
        options["nodes"] = [{"nodeId": f"node-{i}", "apiEndpoint": e} for i, e in enumerate(endpoints)]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vm = await agentvm.open(data_dir, scheduler=options)
        app.state.scheduler = vm.scheduler
        yield
        await vm.close()

    app = FastAPI(title="agentvm control plane", lifespan=lifespan)

    def sched(request: Request) -> agentvm.Scheduler:
        return request.app.state.scheduler  # type: ignore[no-any-return]

    @app.exception_handler(agentvm.AgentVmError)
    async def agentvm_error(_: Request, e: agentvm.AgentVmError) -> JSONResponse:
        return JSONResponse({"error": str(e), "kind": e.kind}, status_code=STATUS.get(e.kind, 500))

    @app.post("/api/v1/sessions", status_code=201)
    async def create_session(body: SessionIn, request: Request) -> dict[str, Any]:
        extra = {"owner": body.owner, "timeoutS": body.timeout_s}
        sb = await sched(request).create_sandbox(body.template_id, **{k: v for k, v in extra.items() if v})
        return {"session_id": sb["id"], "sandbox": sb}

    @app.get("/api/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> dict[str, Any]:
        sb = await sched(request).get_sandbox(session_id)
        if sb is None:
            raise agentvm.NotFoundError(f"Session not found: {session_id}")
        return sb

    @app.post("/api/v1/sessions/{session_id}/execute")
    async def execute(session_id: str, body: ExecuteIn, request: Request) -> dict[str, Any]:
        run = await sched(request).run(session_id, body.command, timeout=body.timeout, env=body.env)
        return {k: run.get(k) for k in ("id", "status", "exitCode", "stdout", "stderr", "durationMs")}

    @app.delete("/api/v1/sessions/{session_id}")
    async def delete_session(session_id: str, request: Request) -> dict[str, Any]:
        return await sched(request).terminate_sandbox(session_id)

    @app.post("/api/v1/templates", status_code=201)
    async def create_template(body: TemplateIn, request: Request) -> dict[str, Any]:
        spec = {**(body.model_extra or {}), "name": body.name or body.template_id, "image": body.image}
        return await sched(request).create_template(body.template_id, spec)

    @app.post("/api/v1/nodes/register")
    async def register_node(body: dict[str, Any], request: Request) -> dict[str, Any]:
        node_id, endpoint = body.pop("node_id", None), body.pop("api_endpoint", None)
        if not node_id or not endpoint:
            raise agentvm.InvalidInputError("node_id and api_endpoint are required")
        return await sched(request).register_node(node_id, endpoint, **body)

    @app.post("/api/v1/nodes/heartbeat")
    async def heartbeat(body: dict[str, Any], request: Request) -> dict[str, Any]:
        node_id = body.pop("node_id", None)
        if not node_id:
            raise agentvm.InvalidInputError("node_id is required")
        return await sched(request).heartbeat(node_id, **body)

    return app


app = create_app(os.environ.get("AGENTVM_DATA_DIR") or None)
