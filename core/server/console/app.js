// The console's entry: signs in (a token, or none on a server with auth off), opens the
// Channel, and switches between the views by the URL's hash (#/chat, #/sandboxes, #/operators).

import { Channel, http } from './channel.js';
import { h, fill, field, showError } from './dom.js';
import * as chat from './chat.js';
import * as sandboxes from './sandboxes.js';
import * as operators from './operators.js';

const VIEWS = { chat, sandboxes, operators };
const TOKEN_KEY = 'agentvm.token';
const RECENT_EVENTS = 200;
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const status = document.getElementById('status');
const signout = document.getElementById('signout');

let ctx = null; // {channel, token, http}
let unmount = null;

async function boot() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  try {
    // A cheap call that needs whatever the server needs: 401 means "sign in".
    await http(token, '/v1/containers');
  } catch (e) {
    if (e.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      return showSignIn(token ? 'That token was refused: ' + e.message : null);
    }
    return showSignIn(e.message);
  }
  await start(token);
}

function showSignIn(message, allowAnonymous = false) {
  nav.hidden = true;
  signout.hidden = true;
  status.textContent = '';
  const input = h('input', {
    type: 'password',
    name: 'token',
    autocomplete: 'off',
    required: true,
    placeholder: 'avm_…',
    spellcheck: 'false',
  });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h(
    'form',
    { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', {}, 'This server wants an access token. Its scope decides what you see: a token for some containers shows only those.'),
    field('Access token', input),
    error,
    h('div', { class: 'row' },
      h('button', { type: 'submit' }, 'Sign in'),
      allowAnonymous ? h('button', { type: 'button', class: 'quiet', onclick: () => start(null) }, 'Continue without a token') : null),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    try {
      await http(token, '/v1/containers');
    } catch (e) {
      showError(error, e.status === 401 ? 'That token was refused: ' + e.message : e);
      input.select(); // back to the field, to correct it
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    await start(token);
  });
  fill(main, form);
  showError(error, message);
  input.focus();
}

async function start(token) {
  ctx?.channel.close();
  const channel = new Channel(token);
  channel.onStatus((s, e) => {
    status.textContent = s === 'open' ? (token ? 'Connected (token)' : 'Connected') : s === 'connecting' ? 'Connecting…' : `Disconnected${e?.reason ? ': ' + e.reason : ''}`;
    status.dataset.state = s;
  });
  try {
    await channel.connect();
  } catch (e) {
    return showSignIn(e.message);
  }
  // The last events this connection received, for the live events of the operators view.
  const recent = [];
  channel.listen((event) => {
    if (event.type?.endsWith('_response')) return;
    recent.unshift(event);
    if (recent.length > RECENT_EVENTS) recent.pop();
  });
  ctx = { channel, token, recent, http: (path, options) => http(token, path, options) };
  nav.hidden = false;
  signout.hidden = false;
  signout.textContent = token ? 'Sign out' : 'Sign in with a token';
  route();
}

function route() {
  if (!ctx) return;
  const [name, ...rest] = (location.hash.replace(/^#\/?/, '') || 'chat').split('/');
  const view = VIEWS[name] ? name : 'chat';
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (unmount && unmount.view === view) {
    unmount.update?.(rest.map(decodeURIComponent));
    return;
  }
  unmount?.();
  main.replaceChildren();
  const mounted = VIEWS[view].mount(main, ctx, rest.map(decodeURIComponent));
  unmount = mounted.unmount;
  unmount.view = view;
  unmount.update = mounted.update;
  document.title = `${view[0].toUpperCase()}${view.slice(1)} · agentvm console`;
}

signout.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  unmount?.();
  unmount = null;
  ctx?.channel.close();
  ctx = null;
  showSignIn(null, true);
});
window.addEventListener('hashchange', route);
boot();
