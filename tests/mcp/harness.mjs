// What the MCP client tests share: starting agentvm-server (and the llama.cpp test model), tokens,
// the busybox template. The server binary is AGENTVM_SERVER_BIN (scripts/test-mcp.sh builds it).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = process.env.AGENTVM_SERVER_BIN;
if (!BIN) throw new Error('AGENTVM_SERVER_BIN is not set: run scripts/test-mcp.sh');
export const DOCKER = process.env.AGENTVM_SKIP_DOCKER !== '1';
export const LLAMA = process.env.AGENTVM_SKIP_LLAMACPP !== '1';
export const DOCKER_ENDPOINT = 'unix:///var/run/docker.sock';
export const TEST_IMAGE = 'agentvm-test/busybox:latest';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'agentvm-mcp-'));
}

/** Reads lines of `stream` until one matches `re`; resolves the match. */
function waitLine(stream, re, what, child) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stream });
    const seen = [];
    lines.on('line', (line) => {
      const m = line.match(re);
      if (m) resolve(m);
      else seen.push(line);
    });
    child.on('exit', (code) => reject(new Error(`${what} exited (${code}) before it was ready: ${seen.join('\n')}`)));
  });
}

/** `agentvm-server serve` on a free loopback port; `env` adds to the environment. */
export async function serve(dataDir, args = [], env = { LLM_PROVIDER: 'mock' }) {
  const child = spawn(BIN, ['serve', '--port', '0', '--data-dir', dataDir, ...args], {
    env: { ...process.env, AGENTVM_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const m = await waitLine(child.stdout, /listening on http:\/\/(\S+)/, 'agentvm-server', child);
  return {
    child,
    http: `http://${m[1]}`,
    async stop() {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
    },
  };
}

/** `token create` (all containers when `containers` is empty). */
export function token(dataDir, containers = []) {
  const scope = containers.length ? ['--containers', containers.join(',')] : ['--all'];
  return execFileSync(BIN, ['token', 'create', '--data-dir', dataDir, ...scope], { encoding: 'utf8' }).trim();
}

/** The busybox template on the server, made over REST with an operator token. */
export async function busyboxTemplate(http, operatorToken) {
  const r = await fetch(`${http}/v1/templates`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${operatorToken}` },
    body: JSON.stringify({
      templateId: 'busybox', name: 'BusyBox', image: TEST_IMAGE,
      defaultCpuCores: 0.5, defaultMemoryMb: 128, defaultTimeoutS: 300, workdir: '/workspace',
    }),
  });
  if (r.status !== 201 && r.status !== 200) throw new Error(`template: ${r.status} ${await r.text()}`);
}

/** scripts/llama-server.py (SmolLM2 on llama.cpp) on a free port: `{url, stop}`. */
export async function llama() {
  const python = process.env.AGENTVM_TEST_PYTHON;
  if (!python) {
    throw new Error('AGENTVM_TEST_PYTHON is not set: export AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)", or AGENTVM_SKIP_LLAMACPP=1 to skip on purpose');
  }
  const child = spawn(python, [join(ROOT, 'scripts', 'llama-server.py'), '--exit-with-stdin'], {
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const m = await waitLine(child.stdout, /"url":\s*"([^"]+)"/, 'llama-server.py', child);
  return {
    url: m[1],
    stop() {
      child.kill('SIGKILL');
    },
  };
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}
