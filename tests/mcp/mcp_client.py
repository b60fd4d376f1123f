"""agentvm-server as an MCP server, driven by the official Python SDK's client (PyPI `mcp`,
pinned in scripts/setup-python.sh): over /mcp (streamable HTTP, with tokens) and over
`agentvm-server mcp --stdio`, with the mock LLM, the llama.cpp test model and Docker.

Run by scripts/test-mcp.sh with the venv's python: AGENTVM_SERVER_BIN names the server binary.
Each check prints `ok <name>`; a failure raises (exit 1). AGENTVM_SKIP_DOCKER=1 and
AGENTVM_SKIP_LLAMACPP=1 skip their checks, saying so; nothing else is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

BIN = os.environ["AGENTVM_SERVER_BIN"]
ROOT = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("AGENTVM_SKIP_DOCKER") != "1"
LLAMA = os.environ.get("AGENTVM_SKIP_LLAMACPP") != "1"
EXPECTED_TOOLS = {
    "container_create", "image_create", "image_list", "session_create", "session_list",
    "session_messages", "agent_ask", "sandbox_create", "sandbox_exec", "sandbox_file_read",
    "sandbox_file_write", "sandbox_delete",
}
passed: list[str] = []


class Server:
    """`agentvm-server serve` on a free loopback port."""

    def __init__(self, data_dir: str, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [BIN, "serve", "--port", "0", "--data-dir", data_dir, *args],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "AGENTVM_LOG": "warn", **env},
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.http = m.group(1)
                return
        raise RuntimeError(f"agentvm-server exited ({self.proc.wait()}) before listening")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def token(data_dir: str, containers: list[str] | None = None) -> str:
    scope = ["--containers", ",".join(containers)] if containers else ["--all"]
    out = subprocess.run([BIN, "token", "create", "--data-dir", data_dir, *scope],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


@asynccontextmanager
async def over_http(url: str, bearer: str | None) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            yield client


@asynccontextmanager
async def over_stdio(args: list[str], env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=BIN, args=["mcp", "--stdio", *args],
                                   env={"AGENTVM_LOG": "warn", **(env or {})})
    async with Client(params) as client:
        yield client


async def ok(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    r = await client.call_tool(name, args)
    assert not r.is_error, f"{name}: {r}"
    assert isinstance(r.structured_content, dict), r
    return r.structured_content


async def failed(client: Client, name: str, args: dict[str, Any]) -> str:
    r = await client.call_tool(name, args)
    assert r.is_error, f"{name} should fail: {r}"
    kind = r.structured_content["kind"]
    assert r.content[0].text.startswith(f"{kind}: "), r.content
    return kind


async def lists_tools(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    assert EXPECTED_TOOLS <= names, EXPECTED_TOOLS - names
    exec_tool = next(t for t in tools if t.name == "sandbox_exec")
    assert exec_tool.input_schema["type"] == "object"
    assert "sandboxId" in exec_tool.input_schema["properties"]


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, and their causes."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e] + (leaves(e.__cause__) if e.__cause__ else [])


def check(name: str) -> None:
    passed.append(name)
    print(f"ok {name}", flush=True)


def skipped(name: str, why: str) -> None:
    print(f"SKIPPED {name} ({why})", flush=True)


async def main() -> None:
    data = tempfile.mkdtemp(prefix="agentvm-mcp-py-")
    args = ["--require-auth"] + (["--docker", "unix:///var/run/docker.sock"] if DOCKER else [])
    server = Server(data, args, {"LLM_PROVIDER": "mock"})
    try:
        operator = token(data)
        team_a = token(data, ["team-a"])

        async with over_http(server.http, team_a) as client, over_http(server.http, operator) as admin:
            await lists_tools(client)
            b = await ok(admin, "image_create", {"containerId": "team-b", "config": {}})
            a = await ok(client, "image_create", {"containerId": "team-a", "config": {}})
            asked = await client.call_tool("agent_ask", {"imageId": a["record"]["imageId"],
                                                         "content": "hello", "timeoutMs": 30000})
            assert not asked.is_error and asked.content[0].text == "Hello from mock!", asked
            check("/mcp: tools listed, an image created and asked (mock LLM)")

            assert await failed(client, "container_create", {"containerId": "team-b"}) == "unauthorized"
            assert await failed(client, "agent_ask", {"imageId": b["record"]["imageId"],
                                                      "content": "hi"}) == "not_found"
            assert (await ok(client, "image_get", {"imageId": b["record"]["imageId"]}))["record"] is None
            listed = await ok(client, "image_list", {})
            assert [i["containerId"] for i in listed["records"]] == ["team-a"], listed
            history = await ok(admin, "session_messages", {"sessionId": b["record"]["sessionId"]})
            assert history["messages"] == [], history
            check("/mcp: a token for team-a cannot reach team-b")

            broken = await ok(client, "image_create", {"containerId": "team-a",
                                                       "config": {"model": "mock:error"}})
            kind = await failed(client, "agent_ask", {"imageId": broken["record"]["imageId"],
                                                      "content": "hi"})
            assert kind != "internal", kind
            check("/mcp: a failed turn is a tool error with its kind")

        try:
            async with over_http(server.http, None) as anonymous:
                await anonymous.list_tools()
            raise AssertionError("/mcp without a token was served")
        except AssertionError:
            raise
        except Exception as e:  # the SDK's error for a 401, possibly inside exception groups
            # The SDK reports the refused POST as an error response, without its status.
            causes = leaves(e)
            assert any(isinstance(c, MCPError) or "401" in repr(c) for c in causes), causes
        async with httpx2.AsyncClient() as raw:
            r = await raw.post(f"{server.http}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                               headers={"accept": "application/json, text/event-stream"})
            assert r.status_code == 401 and r.json()["kind"] == "unauthorized", r.text
        check("/mcp: no token, no service")

        if DOCKER:
            await busybox_template(server.http, operator)
            async with over_http(server.http, team_a) as client:
                sandbox = (await ok(client, "sandbox_create", {"templateId": "busybox",
                                                               "owner": "team-a"}))["sandbox"]
                assert sandbox["status"] == "running", sandbox
                execution = (await ok(client, "sandbox_exec", {
                    "sandboxId": sandbox["id"], "command": ["sh", "-c", "echo hi; echo err >&2"],
                }))["execution"]
                assert execution["exitCode"] == 0 and execution["stdout"] == "hi\n", execution
                await ok(client, "sandbox_file_write", {"sandboxId": sandbox["id"],
                                                        "path": "/workspace/n.txt", "content": "kept"})
                read = await ok(client, "sandbox_file_read", {"sandboxId": sandbox["id"],
                                                              "path": "/workspace/n.txt"})
                assert read["content"] == "kept", read
                async with over_http(server.http, token(data, ["team-b"])) as other:
                    assert await failed(other, "sandbox_exec", {"sandboxId": sandbox["id"],
                                                                "command": ["true"]}) == "not_found"
                await ok(client, "sandbox_delete", {"sandboxId": sandbox["id"]})
            check("/mcp: a sandbox on Docker runs a command and keeps a file, for its team only")
        else:
            skipped("/mcp: sandbox on Docker", "AGENTVM_SKIP_DOCKER=1")

        async with over_stdio(["--url", server.http, "--token", team_a]) as remote:
            await lists_tools(remote)
            a = await ok(remote, "image_create", {"containerId": "team-a", "config": {}})
            asked = await ok(remote, "agent_ask", {"imageId": a["record"]["imageId"], "content": "hi"})
            assert asked["reply"] == "Hello from mock!", asked
            assert await failed(remote, "container_create", {"containerId": "team-b"}) == "unauthorized"
        check("mcp --stdio --url: the running server, in the token's scope")
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)

    own = tempfile.mkdtemp(prefix="agentvm-mcp-py-")
    try:
        async with over_stdio(["--data-dir", own], {"LLM_PROVIDER": "mock"}) as embedded:
            await lists_tools(embedded)
            img = await ok(embedded, "image_create", {"containerId": "desk", "config": {}})
            asked = await ok(embedded, "agent_ask", {"imageId": img["record"]["imageId"], "content": "hi"})
            assert asked["reply"] == "Hello from mock!", asked
        check("mcp --stdio: embedded on a data dir")
    finally:
        shutil.rmtree(own, ignore_errors=True)

    if LLAMA:
        await with_llama()
    else:
        skipped("agent_ask with the llama.cpp test model", "AGENTVM_SKIP_LLAMACPP=1")


async def busybox_template(http: str, operator: str) -> None:
    async with httpx2.AsyncClient() as c:
        r = await c.post(f"{http}/v1/templates", headers={"authorization": f"Bearer {operator}"}, json={
            "templateId": "busybox", "name": "BusyBox", "image": "agentvm-test/busybox:latest",
            "defaultCpuCores": 0.5, "defaultMemoryMb": 128, "defaultTimeoutS": 300,
            "workdir": "/workspace",
        })
        assert r.status_code in (200, 201), r.text


async def with_llama() -> None:
    """One ask of the real model per SDK keeps the suite short: this one over `mcp --stdio`
    (embedded), the Node client's over /mcp."""
    llama = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "llama-server.py"), "--exit-with-stdin"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    data = tempfile.mkdtemp(prefix="agentvm-mcp-py-")
    try:
        assert llama.stdout is not None
        url = json.loads(llama.stdout.readline())["url"]
        llm = {"LLM_PROVIDER": "openai", "LLM_PROVIDER_URL": url, "LLM_PROVIDER_KEY": "none"}
        async with over_stdio(["--data-dir", data], llm) as embedded:
            img = await ok(embedded, "image_create", {"containerId": "c", "config": {}})
            asked = await ok(embedded, "agent_ask", {"imageId": img["record"]["imageId"],
                                                     "content": "Say hello in one short sentence.",
                                                     "timeoutMs": 180000})
            assert asked["reply"].strip(), asked
            history = await ok(embedded, "image_messages", {"imageId": img["record"]["imageId"]})
            assert history["messages"][-1]["content"] == asked["reply"], history
        check("mcp --stdio: agent_ask answered by the llama.cpp test model")
    finally:
        llama.kill()
        llama.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
    print(f"python MCP client: {len(passed)} checks passed", flush=True)
