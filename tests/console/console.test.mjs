// Browser tests of the web console: Debian's chromium driven by playwright-core, against the
// real agentvm-server binary (mock LLM, fresh data dirs, free loopback ports), and for the
// sandbox views the real Docker daemon. They write the screenshots in docs/console/.
//
// AGENTVM_SERVER_BIN (the built server) and AGENTVM_CHROMIUM are set by scripts/test-console.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(here, '..', '..', 'docs', 'console');
const BIN = process.env.AGENTVM_SERVER_BIN || join(here, '..', '..', 'target', 'debug', 'agentvm-server');
const CHROMIUM = process.env.AGENTVM_CHROMIUM || '/usr/bin/chromium';
const DOCKER = process.env.AGENTVM_SKIP_DOCKER !== '1';
const TEST_IMAGE = 'agentvm-test/busybox:latest';

const servers = [];
const dirs = [];
let browser;

/** Starts agentvm-server on a free loopback port; resolves with its base URL once it listens. */
function startServer(args = [], dataDir = tempDir()) {
  const child = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, ...args], {
    env: { ...process.env, LLM_PROVIDER: 'mock', AGENTVM_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  servers.push(child);
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) resolve({ base: m[1], dataDir, child });
    });
    child.on('exit', (code) => reject(new Error(`agentvm-server exited (${code}): ${stderr}`)));
    setTimeout(() => reject(new Error(`agentvm-server did not start in 30 s: ${stderr}`)), 30_000);
  });
}

function tempDir() {
  const d = mkdtempSync(join(tmpdir(), 'agentvm-console-'));
  // Searchable by the unprivileged user local tools run as when the tests run as root.
  chmodSync(d, 0o755);
  dirs.push(d);
  return d;
}

/** A token made with the server's CLI in a data dir no server has open yet. */
function cliToken(dataDir, ...scope) {
  return execFileSync(BIN, ['token', 'create', '--data-dir', dataDir, ...scope], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US', timezoneId: 'UTC', ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('dialog', (d) => d.accept());
  page.problems = problems;
  return page;
}

async function shot(page, name, options = {}) {
  mkdirSync(SHOTS, { recursive: true });
  // The header is sticky: a full-page shot taken scrolled down would draw it mid-page.
  if (options.fullPage) await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, `${name}.png`), ...options });
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.kill('SIGTERM');
  await Promise.all(servers.map((s) => (s.exitCode === null ? new Promise((r) => s.once('exit', r)) : null)));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('the console is served at / and /console/ with its content types, CSP and cache headers', async () => {
  const { base } = await startServer();
  for (const path of ['/', '/console/']) {
    const r = await fetch(base + path);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    assert.match(await r.text(), /\/console\/app\.js/);
  }
  const js = await fetch(`${base}/console/chat.js`);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const again = await fetch(`${base}/console/chat.js`, { headers: { 'If-None-Match': js.headers.get('etag') } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(`${base}/console/nope.js`)).status, 404);
});

test('chat: create an image, stream a reply with a tool card, interrupt, history after reload, two sessions', async () => {
  // --local-tools for the container `demo`: the with-tool scenario's `bash` call runs in the
  // image's workdir here (as `nobody` when the tests run as root).
  const { base } = await startServer(['--local-tools', '--local-tools-container', 'demo']);
  const page = await newPage();
  await page.goto(base + '/');
  // A loopback server with auth off needs no sign-in.
  await page.getByRole('link', { name: 'Chat' }).waitFor();
  await page.getByLabel('New container').fill('demo');
  await page.getByRole('button', { name: 'Add' }).click();
  await page.waitForURL(/#\/chat\/demo$/);

  // An image on the with-tool scenario: a tool call, its result, then the final text.
  await page.getByRole('button', { name: 'New image' }).click();
  await page.getByLabel('Name').fill('Tool user');
  await page.getByLabel('System prompt').fill('You run commands.');
  await page.getByLabel('Model').fill('with-tool');
  await page.getByLabel('Tools').fill('bash');
  await page.getByRole('button', { name: 'Create image' }).click();
  await page.waitForURL(/#\/chat\/demo\/img_[^/]+\/sess_/);
  await page.getByLabel('Message').fill('run something');
  await page.getByLabel('Message').press('Enter');
  const card = page.locator('.log .tool');
  await card.locator('.result').waitFor();
  assert.match(await card.textContent(), /bash/);
  assert.match(await card.locator('.input').textContent(), /echo hello from the sandbox/);
  assert.match(await card.locator('.result').textContent(), /^Result\s*hello from the sandbox/);
  await page.locator('.log .msg.assistant', { hasText: 'The tool said' }).waitFor();
  await page.waitForFunction(() => document.querySelector('.composer .danger').disabled, null, { timeout: 20_000 });
  const toolUrl = page.url();

  // A slow stream, seen streaming, interrupted.
  await page.getByRole('button', { name: 'New image' }).click();
  await page.getByLabel('Name').fill('Slow talker');
  await page.getByLabel('Model').fill('slow-stream');
  await page.getByRole('button', { name: 'Create image' }).click();
  await page.waitForURL((u) => u.href !== toolUrl && /sess_/.test(u.href));
  await page.getByLabel('Message').fill('talk slowly');
  await page.getByRole('button', { name: 'Send' }).click();
  const streaming = page.locator('.log .msg.assistant.streaming');
  await streaming.filter({ hasText: 'slow1 ' }).waitFor();
  await page.getByRole('button', { name: 'Interrupt' }).click();
  await page.locator('.turn-state', { hasText: 'Turn interrupted.' }).waitFor();
  await page.locator('.log .note', { hasText: 'Interrupted.' }).waitFor();
  const partial = await page.locator('.log .msg.assistant').last().textContent();
  assert.match(partial, /slow0 slow1 /);
  assert.doesNotMatch(partial, /slow49/, 'the stream was interrupted before its end');
  const slowUrl = page.url();

  // A reload shows the same conversation, from the stored history.
  await page.reload();
  await page.locator('.log .msg.user', { hasText: 'talk slowly' }).waitFor();
  assert.match(await page.locator('.log .msg.assistant').last().textContent(), /slow0/);
  await page.goto(toolUrl);
  await page.locator('.log .msg.user', { hasText: 'run something' }).waitFor();
  await page.locator('.log .tool .result').waitFor();
  await page.locator('.log .msg.assistant', { hasText: 'The tool said' }).waitFor();

  // A second session on the same image: its own conversation.
  await page.getByRole('button', { name: 'New session' }).click();
  await page.waitForURL((u) => u.href !== toolUrl);
  await page.waitForFunction(() => document.querySelectorAll('.log .msg, .log .tool').length === 0);
  assert.equal(await page.getByRole('list', { name: 'Sessions' }).getByRole('listitem').count(), 2);
  await page.getByLabel('Message').fill('again');
  await page.getByLabel('Message').press('Enter');
  await page.locator('.log .tool .result').waitFor();
  await page.locator('.log .msg.assistant', { hasText: 'The tool said' }).waitFor();

  await page.goto(toolUrl);
  await page.locator('.log .msg.assistant', { hasText: 'The tool said' }).waitFor();
  await shot(page, 'chat-light');
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot(page, 'chat-dark');
  assert.equal(slowUrl.includes('sess_'), true);

  // Phone width: one column, nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.locator('.log .msg.assistant', { hasText: 'The tool said' }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await shot(page, 'chat-phone');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('sign in with a token; a token for one container sees only that container', async () => {
  const dataDir = tempDir();
  const admin = cliToken(dataDir, '--all');
  const tenant = cliToken(dataDir, '--containers', 'alpha');
  const { base } = await startServer(['--require-auth'], dataDir);
  const page = await newPage();
  await page.goto(base + '/');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('Access token').fill('avm_not_a_token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();

  // The keyboard is enough: the token field has the focus, Enter signs in.
  await page.keyboard.press('Control+A');
  await page.keyboard.type(admin);
  await page.keyboard.press('Enter');
  for (const c of ['alpha', 'beta']) {
    await page.getByLabel('New container').fill(c);
    await page.getByRole('button', { name: 'Add' }).click();
    await page.waitForURL(new RegExp(`#/chat/${c}$`));
  }
  const containers = page.getByRole('list', { name: 'Containers' });
  await containers.getByRole('button', { name: 'beta' }).waitFor();
  assert.equal(await containers.getByRole('listitem').count(), 2);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Access token').fill(tenant);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.goto(base + '/#/chat');
  await containers.getByRole('button', { name: 'alpha' }).waitFor();
  assert.equal(await containers.getByRole('listitem').count(), 1, 'the tenant sees only alpha');
  assert.equal(await containers.getByRole('button', { name: 'beta' }).count(), 0);
  // Operator views refuse a tenant's token.
  await page.getByRole('link', { name: 'Operators' }).click();
  await page.getByRole('alert').filter({ hasText: /token for all containers|Unauthorized|operator/i }).first().waitFor();
  await page.context().close();
});

test('sandboxes: template create, edit and delete, node drain, a sandbox on the Docker node, echo hi, a file uploaded and listed', { skip: !DOCKER && 'AGENTVM_SKIP_DOCKER=1' }, async () => {
  const { base } = await startServer(['--docker', 'unix:///var/run/docker.sock']);
  const page = await newPage();
  try {
    await page.goto(base + '/#/sandboxes');
    const nodes = page.getByRole('region', { name: 'Nodes' });
    await nodes.getByText('docker-1').waitFor();
    await nodes.locator('.badge.online').waitFor();

    await page.getByLabel('Id', { exact: true }).fill('busybox');
    await page.getByLabel('Name', { exact: true }).fill('BusyBox');
    await page.getByLabel('Image', { exact: true }).fill(TEST_IMAGE);
    await page.getByLabel('CPU cores').fill('0.5');
    await page.getByLabel('Memory (MiB)').fill('128');
    await page.getByLabel('Workdir').fill('/workspace');
    await page.getByRole('button', { name: 'Create template' }).click();
    const templates = page.getByRole('region', { name: 'Templates' });
    await templates.getByRole('cell', { name: 'BusyBox', exact: true }).waitFor();
    // Edit it: the form comes back filled, the id fixed.
    await templates.getByRole('button', { name: 'Edit template busybox' }).click();
    assert.equal(await page.getByLabel('Image', { exact: true }).inputValue(), TEST_IMAGE);
    await page.getByLabel('Name', { exact: true }).fill('BusyBox small');
    await page.getByRole('button', { name: 'Save busybox' }).click();
    await templates.getByRole('cell', { name: 'BusyBox small', exact: true }).waitFor();

    // Drain the node and bring it back.
    await nodes.getByRole('button', { name: 'Drain' }).click();
    await nodes.locator('.badge', { hasText: 'draining' }).waitFor();
    await nodes.getByRole('button', { name: 'Undrain' }).click();
    await nodes.getByRole('button', { name: 'Drain' }).waitFor();

    await page.getByRole('button', { name: 'Create sandbox' }).click();
    await page.waitForURL(/#\/sandboxes\/sbx_|#\/sandboxes\/.+/, { timeout: 60_000 });
    const detail = page.locator('.sandbox-detail');
    await detail.locator('.badge.running').waitFor({ timeout: 60_000 });

    await page.getByLabel('Command (sh -c)').fill('echo hi');
    await page.getByRole('button', { name: 'Run' }).click();
    await detail.locator('.output', { hasText: 'hi' }).waitFor();
    assert.equal((await detail.locator('.output').textContent()).trim(), 'hi');
    await detail.getByRole('status').filter({ hasText: 'completed, exit 0' }).waitFor();
    // The output streams: the first line is there while the command still runs.
    await page.getByLabel('Command (sh -c)').fill('echo first; sleep 2; echo second');
    await page.getByRole('button', { name: 'Run' }).click();
    await detail.locator('.output', { hasText: 'first' }).waitFor();
    assert.equal(await detail.getByRole('status').filter({ hasText: 'Running…' }).count(), 1, 'still running');
    assert.doesNotMatch(await detail.locator('.output').textContent(), /second/);
    await detail.locator('.output', { hasText: 'second' }).waitFor();

    // Live usage from sandbox_usage_request: memory in use, processes, and a cpu figure once
    // a second sample came.
    await detail.locator('dl.usage[data-memory-bytes]').waitFor();
    assert.ok(Number(await detail.locator('dl.usage').getAttribute('data-memory-bytes')) > 0, 'memory in use > 0');
    assert.match(await detail.locator('[data-usage="memory"]').textContent(), /of 128(\.0)? MiB/);
    assert.ok(Number(await detail.locator('[data-usage="processes"]').textContent()) >= 1);
    await detail.locator('[data-usage="cpu"]', { hasText: '% of a core' }).waitFor({ timeout: 10_000 });
    // Pause, then resume; the badge follows.
    await detail.getByRole('button', { name: 'Pause' }).click();
    await detail.locator('.badge.paused').waitFor();
    await detail.getByRole('button', { name: 'Resume' }).click();
    await detail.locator('.badge.running').waitFor();

    await page.getByLabel('Upload to this directory').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('uploaded from the console\n') });
    await detail.getByRole('cell', { name: 'notes.txt', exact: true }).waitFor();
    await page.getByLabel('Command (sh -c)').fill('cat /workspace/notes.txt');
    await page.getByRole('button', { name: 'Run' }).click();
    await detail.locator('.output', { hasText: 'uploaded from the console' }).waitFor();

    // The download gives back the bytes.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download notes.txt' }).click()]);
    const chunks = [];
    for await (const c of await download.createReadStream()) chunks.push(c);
    assert.equal(Buffer.concat(chunks).toString(), 'uploaded from the console\n');

    await page.getByRole('region', { name: 'Sandboxes' }).locator('.badge.running').waitFor();
    await shot(page, 'sandboxes', { fullPage: true });
    // Deleting the template leaves its sandbox running.
    await templates.getByRole('button', { name: 'Delete template busybox' }).click();
    await templates.getByText('No template yet').waitFor();
    await page.getByRole('region', { name: 'Sandboxes' }).locator('.badge.running').waitFor();
    assert.deepEqual(page.problems, []);
  } finally {
    // Leave no container behind on the shared daemon.
    const list = await (await fetch(`${base}/v1/sandboxes`)).json();
    for (const s of Array.isArray(list) ? list : list.sandboxes || []) await fetch(`${base}/v1/sandboxes/${s.id}`, { method: 'DELETE' });
    await page.context().close();
  }
});

test('terminal: a shell in a sandbox, signed in with a token (so ?token= on the socket): keys, Ctrl-C, paste, resize, exit code', { skip: !DOCKER && 'AGENTVM_SKIP_DOCKER=1' }, async () => {
  const dataDir = tempDir();
  const admin = cliToken(dataDir, '--all');
  const { base } = await startServer(['--require-auth', '--docker', 'unix:///var/run/docker.sock'], dataDir);
  const auth = { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' };
  const page = await newPage();
  try {
    let r = await fetch(`${base}/v1/templates`, { method: 'POST', headers: auth, body: JSON.stringify({ templateId: 'term', name: 'Terminal', image: TEST_IMAGE, defaultCpuCores: 0.5, defaultMemoryMb: 128, workdir: '/workspace' }) });
    assert.ok(r.ok, await r.text());
    r = await fetch(`${base}/v1/sandboxes`, { method: 'POST', headers: auth, body: JSON.stringify({ templateId: 'term' }) });
    const body = await r.text();
    assert.ok(r.ok, body);
    const sandbox = JSON.parse(body);

    // Signed in with the token: the page's WebSocket cannot send a header, so the terminal
    // is only opened if the route takes ?token= (the server refuses a call without one).
    await page.goto(base + '/');
    await page.getByLabel('Access token').fill(admin);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Sandboxes' }).waitFor();
    page.problems.length = 0; // the 401 that asked for the token
    await page.goto(`${base}/#/sandboxes/${encodeURIComponent(sandbox.id)}`);
    const detail = page.locator('.sandbox-detail');
    await detail.locator('.badge.running').waitFor({ timeout: 60_000 });

    const panel = detail.locator('.terminal-panel');
    const screen = panel.getByRole('log', { name: 'Terminal output' });
    const state = panel.getByRole('status');
    const text = () => screen.textContent();
    /** Waits until the screen's text matches `re`; returns the match. */
    const until = async (re) => {
      await page.waitForFunction(([src, flags]) => new RegExp(src, flags).test(document.querySelector('.terminal-screen').textContent), [re.source, re.flags]);
      return (await text()).match(re);
    };
    const lastSize = async () => [...(await text()).matchAll(/^(\d+) (\d+)\s*$/gm)].map((m) => `${m[2]} × ${m[1]}`);

    // The keyboard alone: Enter on the button opens it, and the keys field has the focus.
    await panel.getByRole('button', { name: 'Open terminal' }).focus();
    await page.keyboard.press('Enter');
    await state.filter({ hasText: /^Open: \d+ × \d+\.$/ }).waitFor();
    await page.waitForFunction(() => document.activeElement?.classList.contains('terminal-keys'));
    await until(/[#$]\s*$/);
    await page.keyboard.type('echo $((6*7))');
    await page.keyboard.press('Enter');
    await until(/^42\s*$/m);

    // Backspace edits the line; Ctrl-C interrupts a command; a paste is typed as it is.
    await page.keyboard.type('echo abx');
    await page.keyboard.press('Backspace');
    await page.keyboard.type('c');
    await page.keyboard.press('Enter');
    await until(/^abc\s*$/m);
    await page.keyboard.type('sleep 30');
    await page.keyboard.press('Enter');
    await page.waitForTimeout(300);
    await page.keyboard.press('Control+C');
    await until(/\^C\s*\n[^\n]*[#$]\s*$/); // back at a prompt, not 30 s later
    await page.keyboard.insertText('echo pas""ted\n');
    await until(/^pasted\s*$/m);

    // The shell sees the panel's size in character cells, and a new one when the window
    // changes (a phone's width here).
    const opened = (await state.textContent()).match(/(\d+ × \d+)/)[1];
    await page.keyboard.type('stty size');
    await page.keyboard.press('Enter');
    await until(/^\d+ \d+\s*$/m);
    assert.deepEqual(await lastSize(), [opened], 'stty size is the size the console sent on open');
    mkdirSync(SHOTS, { recursive: true });
    await panel.scrollIntoViewIfNeeded();
    const b = await panel.boundingBox();
    await page.screenshot({ path: join(SHOTS, 'terminal.png'), clip: { x: b.x - 12, y: b.y - 12, width: b.width + 24, height: b.height + 24 } });
    await page.setViewportSize({ width: 390, height: 700 });
    await state.filter({ hasText: new RegExp(`^Open: (?!${opened}\\.)`) }).waitFor();
    const resized = (await state.textContent()).match(/(\d+ × \d+)/)[1];
    await page.keyboard.type('stty size');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('.terminal-screen').textContent.match(/^\d+ \d+\s*$/gm)?.length === 2);
    const sizes = await lastSize();
    assert.equal(sizes.at(-1), resized, `stty size after the resize: ${sizes}`);
    assert.notEqual(resized, opened);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);

    // The shell's end shows its exit code, and the panel can open a new one.
    await page.keyboard.type('exit 3');
    await page.keyboard.press('Enter');
    await state.filter({ hasText: 'The shell ended with exit code 3.' }).waitFor();
    assert.equal(await state.getAttribute('data-exit-code'), '3');
    await panel.getByRole('button', { name: 'Open terminal' }).waitFor();
    assert.equal(await panel.getByLabel('Keys to the terminal').isVisible(), false);
    assert.deepEqual(page.problems, []);
  } finally {
    const list = await (await fetch(`${base}/v1/sandboxes`, { headers: auth })).json();
    for (const s of Array.isArray(list) ? list : list.sandboxes || []) await fetch(`${base}/v1/sandboxes/${s.id}`, { method: 'DELETE', headers: auth });
    await page.context().close();
  }
});

test('operators: create a token (secret shown once), revoke it, metrics and version', async () => {
  const { base } = await startServer();
  const page = await newPage();
  await page.goto(base + '/#/operators');
  await page.getByRole('button', { name: 'Create token' }).waitFor();
  const version = (await (await fetch(`${base}/health`)).json()).version;
  await page.getByRole('region', { name: 'Server' }).getByText(version, { exact: true }).waitFor();
  await page.locator('.metrics dt', { hasText: 'Connections' }).waitFor();

  await page.getByRole('checkbox', { name: 'All containers (operator)' }).uncheck();
  await page.getByLabel('Containers', { exact: true }).fill('user-alice');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = await page.locator('.token-secret').textContent();
  assert.match(secret, /^avm_/);
  const tokens = page.getByRole('region', { name: 'Access tokens' });
  const row = tokens.getByRole('row', { name: /user-alice/ });
  await row.getByText('active').waitFor();
  // The secret works (auth is off, but a presented token is still checked and narrows scope).
  assert.equal((await fetch(`${base}/v1/containers`, { headers: { Authorization: `Bearer ${secret}` } })).status, 200);
  await page.getByRole('button', { name: 'Done' }).click();
  assert.equal(await page.locator('.token-secret').count(), 0, 'the secret is gone once dismissed');

  await row.getByRole('button', { name: /Revoke/ }).click();
  await row.getByText(/^revoked/).waitFor();
  assert.equal((await fetch(`${base}/v1/containers`, { headers: { Authorization: `Bearer ${secret}` } })).status, 401);
  // Live events: a container created elsewhere shows up on the global topic.
  const r = await fetch(`${base}/v1/containers`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ containerId: 'user-bob' }) });
  assert.ok(r.ok, await r.text());
  const events = page.getByRole('list', { name: 'Live events' });
  await events.getByText('container_created').waitFor();
  await page.getByLabel('Topic').fill('global');
  await events.getByText('user-bob').waitFor();
  await page.getByLabel('Topic').fill('sess_none');
  await events.getByText('No event yet.').waitFor();
  await page.getByLabel('Topic').fill('');
  await events.getByText('container_created').waitFor();
  const eventsPerSecond = page.locator('.metrics div', { hasText: 'Events/s' }).locator('dd');
  await eventsPerSecond.filter({ hasText: /^\d+\.\d$/ }).waitFor();
  await shot(page, 'operators');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
