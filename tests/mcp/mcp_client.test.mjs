// agentvm-server as an MCP server, driven by the official TypeScript SDK's client
// (@modelcontextprotocol/sdk, pinned in package.json): over /mcp (streamable HTTP, with tokens)
// and over `agentvm-server mcp --stdio`, with the mock LLM, the llama.cpp test model and Docker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
  BIN, DOCKER, DOCKER_ENDPOINT, LLAMA, busyboxTemplate, cleanup, llama, serve, tempDir, token,
} from './harness.mjs';

const EXPECTED_TOOLS = [
  'container_create', 'container_list', 'image_create', 'image_list', 'session_create',
  'session_list', 'session_messages', 'agent_ask', 'sandbox_create', 'sandbox_exec',
  'sandbox_file_read', 'sandbox_file_write', 'sandbox_delete',
];

const REQUEST_TIMEOUT_MS = 5000;
let dir;
let server;
let operator;
let teamA;

before(async () => {
  dir = tempDir();
  // A short request timeout, so the exec test shows an exec is bounded by its own timeout only.
  const config = join(dir, 'agentvm.toml');
  writeFileSync(config, `request_timeout_ms = ${REQUEST_TIMEOUT_MS}\n`);
  const args = ['--require-auth', '--config', config];
  if (DOCKER) args.push('--docker', DOCKER_ENDPOINT);
  server = await serve(dir, args);
  operator = token(dir);
  teamA = token(dir, ['team-a']);
  if (DOCKER) await busyboxTemplate(server.http, operator);
});

after(async () => {
  await server?.stop();
  cleanup(dir);
});

async function httpClient(bearer) {
  const client = new Client({ name: 'agentvm-node-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${server.http}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${bearer}` } },
  });
  await client.connect(transport);
  return client;
}

async function stdioClient(args, env = {}) {
  const client = new Client({ name: 'agentvm-node-test', version: '1.0.0' });
  const transport = new StdioClientTransport({
    command: BIN,
    args: ['mcp', '--stdio', ...args],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, AGENTVM_LOG: 'warn', ...env },
    stderr: 'inherit',
  });
  await client.connect(transport);
  return client;
}

/** A successful call's structured content. */
async function ok(client, name, args) {
  const r = await client.callTool({ name, arguments: args });
  assert.equal(r.isError, false, `${name}: ${JSON.stringify(r)}`);
  return r.structuredContent;
}

/** A failed call's error kind (the text says it too). */
async function failed(client, name, args) {
  const r = await client.callTool({ name, arguments: args });
  assert.equal(r.isError, true, `${name} should fail: ${JSON.stringify(r)}`);
  assert.match(r.content[0].text, new RegExp(`^${r.structuredContent.kind}: `));
  return r.structuredContent.kind;
}

async function listsTools(client) {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const n of EXPECTED_TOOLS) assert.ok(names.includes(n), `${n} in ${names}`);
  const exec = tools.find((t) => t.name === 'sandbox_exec');
  assert.equal(exec.inputSchema.type, 'object');
  assert.ok(exec.inputSchema.properties.sandboxId);
}

test('over /mcp: tools, an image asked with the mock LLM, and a token for team-a cannot reach team-b', async () => {
  const admin = await httpClient(operator);
  const client = await httpClient(teamA);
  try {
    await listsTools(client);
    const b = await ok(admin, 'image_create', { containerId: 'team-b', config: {} });
    const a = await ok(client, 'image_create', { containerId: 'team-a', config: { name: 'helper' } });
    const asked = await client.callTool({
      name: 'agent_ask', arguments: { imageId: a.record.imageId, content: 'hello', timeoutMs: 30000 },
    });
    assert.equal(asked.isError, false, JSON.stringify(asked));
    assert.equal(asked.content[0].text, 'Hello from mock!');
    const history = await ok(client, 'session_messages', { sessionId: a.record.sessionId });
    assert.deepEqual(history.messages.map((m) => m.role), ['user', 'assistant']);

    assert.equal(await failed(client, 'container_create', { containerId: 'team-b' }), 'unauthorized');
    assert.equal(await failed(client, 'agent_ask', { imageId: b.record.imageId, content: 'hi' }), 'not_found');
    const got = await ok(client, 'image_get', { imageId: b.record.imageId });
    assert.equal(got.record, null);
    const listed = await ok(client, 'image_list', {});
    assert.deepEqual(listed.records.map((i) => i.containerId), ['team-a']);
    // A failed turn is a tool error, not an empty reply.
    const broken = await ok(client, 'image_create', { containerId: 'team-a', config: { model: 'mock:error' } });
    const kind = await failed(client, 'agent_ask', { imageId: broken.record.imageId, content: 'hi' });
    assert.notEqual(kind, 'internal');
  } finally {
    await client.close();
    await admin.close();
  }
});

test('without a token /mcp refuses the connection', async () => {
  const client = new Client({ name: 'agentvm-node-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${server.http}/mcp`));
  await assert.rejects(client.connect(transport), /401|unauthorized|authentication/i);
});

test('over /mcp: a sandbox on Docker runs a command and keeps a file', { skip: !DOCKER && 'AGENTVM_SKIP_DOCKER=1' }, async () => {
  const client = await httpClient(teamA);
  try {
    const { sandbox } = await ok(client, 'sandbox_create', { templateId: 'busybox', owner: 'team-a' });
    assert.equal(sandbox.status, 'running');
    const { execution } = await ok(client, 'sandbox_exec', {
      sandboxId: sandbox.id, command: ['sh', '-c', 'echo hi from $(hostname | cut -c1-3)'],
    });
    assert.equal(execution.exitCode, 0, JSON.stringify(execution));
    assert.match(execution.stdout, /^hi from /);
    await ok(client, 'sandbox_file_write', { sandboxId: sandbox.id, path: '/workspace/note.txt', content: 'kept' });
    const read = await ok(client, 'sandbox_file_read', { sandboxId: sandbox.id, path: '/workspace/note.txt' });
    assert.equal(read.content, 'kept');
    // Longer than the server's request timeout: an exec has its own.
    const slow = await ok(client, 'sandbox_exec', {
      sandboxId: sandbox.id, command: ['sh', '-c', `sleep ${REQUEST_TIMEOUT_MS / 1000 + 1}; echo done`],
    });
    assert.equal(slow.execution.stdout, 'done\n', JSON.stringify(slow));
    // Another team's token cannot see it.
    const other = await httpClient(token(dir, ['team-b']));
    try {
      assert.equal(await failed(other, 'sandbox_exec', { sandboxId: sandbox.id, command: ['true'] }), 'not_found');
    } finally {
      await other.close();
    }
    await ok(client, 'sandbox_delete', { sandboxId: sandbox.id });
  } finally {
    await client.close();
  }
});

test('over mcp --stdio: against the running server with a scoped token, and embedded on a data dir', async () => {
  const remote = await stdioClient(['--url', server.http, '--token', teamA]);
  try {
    await listsTools(remote);
    const a = await ok(remote, 'image_create', { containerId: 'team-a', config: {} });
    const asked = await ok(remote, 'agent_ask', { imageId: a.record.imageId, content: 'hi' });
    assert.equal(asked.reply, 'Hello from mock!');
    assert.equal(await failed(remote, 'container_create', { containerId: 'team-b' }), 'unauthorized');
  } finally {
    await remote.close();
  }
  const own = tempDir();
  const embedded = await stdioClient(['--data-dir', own], { LLM_PROVIDER: 'mock' });
  try {
    await listsTools(embedded);
    const img = await ok(embedded, 'image_create', { containerId: 'desk', config: {} });
    const asked = await ok(embedded, 'agent_ask', { imageId: img.record.imageId, content: 'hi' });
    assert.equal(asked.reply, 'Hello from mock!');
  } finally {
    await embedded.close();
    cleanup(own);
  }
});

// One ask of the real model per SDK keeps the suite short: this one over /mcp, the Python
// client's over `mcp --stdio` (tests/mcp/mcp_client.py).
test('agent_ask answers from the llama.cpp test model over /mcp', { skip: !LLAMA && 'AGENTVM_SKIP_LLAMACPP=1' }, async () => {
  const model = await llama();
  const own = tempDir();
  const llm = { LLM_PROVIDER: 'openai', LLM_PROVIDER_URL: model.url, LLM_PROVIDER_KEY: 'none' };
  const local = await serve(own, [], llm);
  try {
    const client = new Client({ name: 'agentvm-node-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${local.http}/mcp`)));
    const img = await ok(client, 'image_create', { containerId: 'c', config: { systemPrompt: 'You are a helpful assistant.' } });
    const asked = await ok(client, 'agent_ask', {
      imageId: img.record.imageId, content: 'Say hello in one short sentence.', timeoutMs: 180000,
    });
    assert.ok(asked.reply.trim().length > 0, JSON.stringify(asked));
    const history = await ok(client, 'image_messages', { imageId: img.record.imageId });
    assert.equal(history.messages.at(-1).content, asked.reply);
    await client.close();
  } finally {
    await local.stop();
    model.stop();
    cleanup(own);
  }
});
