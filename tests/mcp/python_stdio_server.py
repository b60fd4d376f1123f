"""A stdio MCP server written with the Python MCP SDK (PyPI `mcp`), for tests/tests/e2e/mcp_servers.rs.

Tools: `echo` (returns its text), `whoami` (uid, hostname and working directory of the
process), `crash` (the process exits in the middle of the call), `hang` (never answers).
"""

import os
import socket
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("py-fixture")


@server.tool()
def echo(text: str) -> str:
    """Returns the text."""
    return f"echo: {text}"


@server.tool()
def whoami() -> str:
    """Where this server runs."""
    return f"uid={os.getuid()} host={socket.gethostname()} cwd={os.getcwd()}"


@server.tool()
def crash() -> str:
    """Exits the process without answering."""
    os._exit(3)


@server.tool()
def hang() -> str:
    """Never answers."""
    time.sleep(3600)
    return "late"


if __name__ == "__main__":
    server.run()
